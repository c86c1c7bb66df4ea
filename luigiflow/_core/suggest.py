"""'Did you mean' for names a user typed: tasks, parameters, metrics, experiments."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names close to `name` (case-insensitive), closest first."""
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[m] for m in matches]


def did_you_mean(name: str, known: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """'; did you mean 'x'?' when a known name is close to `name`, else ''."""
    close = close_names(name, known)
    if not close:
        return ""
    return "; did you mean " + " or ".join(show(c) for c in close) + "?"


def listing(known: Iterable[str], show: Callable[[str], str] = str, limit: int = 12) -> str:
    """Known names for an error message, cut after `limit`."""
    names = sorted(known)
    if not names:
        return "none"
    shown = ", ".join(show(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
