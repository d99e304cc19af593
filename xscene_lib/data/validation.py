"""One way to validate arguments: each check raises a DataError that names the argument and the fix.

Every public function and estimator of the library checks its inputs through these helpers, so a value of
the wrong type, range or kind fails early with our message rather than deep inside numpy or torch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class DataError(ValueError):
    """Bad or inconsistent input data, or a bad parameter; the message says what to do."""


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str, hint: str = "") -> None:
    """A DataError unless `frame` is a DataFrame with these columns; `hint` says what to do."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        advice = f"; {hint}" if hint else ""
        raise DataError(f"{what} lacks column(s) {missing} (found: {list(frame.columns)}){advice}")


def check_positive_int(owner: str, name: str, value: object) -> None:
    """A clear error unless `value` is an integer >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{owner}({name}=...) must be a positive integer, got {value!r}")


def check_number(owner: str, name: str, value: object, *, positive: bool) -> None:
    """A clear error unless `value` is a finite number, > 0 if `positive` else >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not np.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise DataError(f"{owner}({name}=...) must be a finite number {bound}, got {value!r}")


def check_flag(owner: str, name: str, value: object) -> None:
    """A clear error unless `value` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"{owner}({name}=...) must be True or False, got {value!r}")
