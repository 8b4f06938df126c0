"""'Did you mean ...?' for names a user mistyped: config keys, env ids, methods, presets."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to `name` (difflib's ratio >= 0.6), or None when none is near."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for a message about `name`, or '' when nothing is near."""
    return _hint(closest(name, choices))


def _hint(near: str | None) -> str:
    return f" (did you mean {near!r}?)" if near else ""


class UnknownNameError(ValueError):
    """Names that are not among `choices`; `suggestions` maps each to its nearest choice (or None).

    A ValueError, so every caller that reports bad values reports these the same way.
    """

    def __init__(self, what: str, names: Iterable[str], choices: Iterable[str], hint: str = ""):
        choices = list(choices)
        self.suggestions = {name: closest(name, choices) for name in names}
        named = ", ".join(f"{name!r}{_hint(near)}" for name, near in self.suggestions.items())
        super().__init__(f"unknown {what} {named}{hint}")
