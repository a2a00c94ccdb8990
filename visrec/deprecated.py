"""Names moved by the restructure of release 0.x keep working for one more release, with a
``DeprecationWarning`` that names the new home. Each old module is a module-level ``__getattr__``
(PEP 562) built here: nothing is imported until an old name is used."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old_module: str, new_homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old_module`` whose names live on in ``new_homes`` (name ->
    new module); using one warns once per call site and returns the object from its new home."""

    def __getattr__(name: str) -> Any:
        if name not in new_homes:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new = new_homes[name]
        warnings.warn(
            f"{old_module}.{name} moved to {new}.{name} (also in visrec.api where public); "
            "the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)

    return __getattr__


def homes(new_module: str, *names: str) -> dict[str, str]:
    """``{name: new_module}`` for each of ``names``."""
    return dict.fromkeys(names, new_module)
