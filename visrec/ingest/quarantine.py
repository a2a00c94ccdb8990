"""The error budget: rejected input is quarantined with a reason; too much of it stops the run."""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.errors import VisrecError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    pass


class ErrorBudgetExceeded(VisrecError):
    """Too much of a day's input was rejected to trust the rest."""


def _reasons(quarantine: pa.Table) -> dict[str, int]:
    return dict(sorted(Counter(quarantine.column("reason").to_pylist()).items()))


def _check_budget(what: str, rejected: int, total: int, budget: float, reasons: dict[str, int]) -> None:
    share = rejected / total if total else 0.0
    if share > budget:
        raise ErrorBudgetExceeded(
            f"{what}: {rejected} of {total} rejected ({share:.1%}) exceeds the error budget of "
            f"{budget:.1%} (VISREC_ERROR_BUDGET); reasons: {reasons}. Fix the input or raise the budget."
        )
    if rejected:
        log.warning(
            "%s: %d of %d rejected (%.2f%%, budget %.1f%%): %s",
            what,
            rejected,
            total,
            100 * share,
            100 * budget,
            reasons,
        )
