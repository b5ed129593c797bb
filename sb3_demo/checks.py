"""Checks of integer settings, shared by every layer (this module imports nothing of sb3_demo).

An integer setting accepts Python and numpy integers (``np.arange`` loops, Optuna) and refuses ``bool``
(``True`` is not a count) and floats; the error names the setting and its allowed range.
"""

from __future__ import annotations

import numbers
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy) and not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int, high: int | None = None, allow_none: bool = False) -> Any:
    """``value`` as a Python ``int`` (or None where allowed), after checking ``low <= value <= high``.

    :param name: the setting's name, as the user writes it (the error message starts with it)
    :param value: the value to check
    :param low: smallest allowed value
    :param high: largest allowed value (None: no upper bound)
    :param allow_none: None is allowed (and returned)
    :raises ValueError: ``value`` is not such an integer
    """
    if allow_none and value is None:
        return None
    if not is_int(value) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}{allowed}, got {value!r}")
    return int(value)
