"""Business rules applied to a ranked list, shared by scoring and by the evaluation of published lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cap_per_category(ranked: np.ndarray, categories: Sequence[str], k: int, cap: int | None) -> list[int]:
    """Positions in ``ranked`` (item indices, best first, -1 padding) of the first ``k`` items that
    keep at most ``cap`` items of one category (no cap: the first ``k`` items)."""
    chosen: list[int] = []
    per_category: dict[str, int] = {}
    for position, item in enumerate(ranked):
        if item < 0 or len(chosen) == k:
            break
        category = categories[item]
        if cap is not None and per_category.get(category, 0) >= cap:
            continue
        per_category[category] = per_category.get(category, 0) + 1
        chosen.append(position)
    return chosen
