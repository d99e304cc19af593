"""One way to validate arguments: each check raises a DataError that names the argument and the fix.

Every public function and estimator of the library checks its inputs through these helpers, so a value of
the wrong type, range or kind fails early with our message rather than deep inside numpy or torch.
`owner` is the class or function the argument belongs to: the message then reads "JointModel(dim=...) must be
a positive integer, got 0"; with owner None it reads "dim must be a positive integer, got 0".
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NoReturn

import numpy as np
import pandas as pd

SHOWN_CHARACTERS = 120  # a longer repr of a bad value is cut short in the message


class DataError(ValueError):
    """Bad or inconsistent input data, or a bad parameter; the message says what to do."""


class DataTypeError(DataError, TypeError):
    """Input of the wrong type (e.g. one string where a list of them is expected); `except TypeError` catches it too."""


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str, hint: str = "") -> None:
    """A DataError unless `frame` is a DataFrame with these columns; `hint` says what to do."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        advice = f"; {hint}" if hint else ""
        raise DataError(f"{what} lacks column(s) {missing} (found: {list(frame.columns)}){advice}")


def check_int(owner: str | None, name: str, value: object, *, minimum: int | None = None,
              maximum: int | None = None, hint: str = "") -> None:
    """A DataError unless `value` is an integer (not a bool) from `minimum` to `maximum` (None: unbounded)."""
    if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            wanted = f"an integer from {minimum} to {maximum}"
        else:
            wanted = " ".join(["an integer", *_bounds(minimum=minimum, maximum=maximum)])
        _fail(owner, name, value, wanted, hint)


def check_positive_int(owner: str | None, name: str, value: object, *, hint: str = "") -> None:
    """A DataError unless `value` is an integer >= 1."""
    if not _is_int(value) or value < 1:
        _fail(owner, name, value, "a positive integer", hint)


def check_number(owner: str | None, name: str, value: object, *, positive: bool | None = None,
                 minimum: float | None = None, maximum: float | None = None, above: float | None = None,
                 below: float | None = None, hint: str = "") -> None:
    """A DataError unless `value` is a finite real number (not a bool) within the bounds given.

    minimum and maximum are inclusive, above and below exclusive; positive=True is above=0, positive=False
    is minimum=0.
    """
    if positive is not None:
        above, minimum = (0, minimum) if positive else (above, 0)
    number = isinstance(value, numbers.Real) and not _is_flag(value) and _finite(value)
    if not number or (minimum is not None and value < minimum) or (maximum is not None and value > maximum) \
            or (above is not None and value <= above) or (below is not None and value >= below):
        if minimum is not None and maximum is not None and above is None and below is None:
            wanted = f"a number between {_shown_bound(minimum)} and {_shown_bound(maximum)}"
        else:
            wanted = " ".join(["a finite number", " and ".join(_bounds(minimum, maximum, above, below))]).rstrip()
        _fail(owner, name, value, wanted, hint)


def check_flag(owner: str | None, name: str, value: object, *, hint: str = "") -> None:
    """A DataError unless `value` is True or False."""
    if not _is_flag(value):
        _fail(owner, name, value, "True or False", hint)


def check_choice(owner: str | None, name: str, value: object, choices: Sequence[object], *, hint: str = "") -> None:
    """A DataError unless `value` is one of `choices` (True and False never stand for 1 and 0)."""
    if not (np.ndim(value) == 0 and any(value == choice and _is_flag(value) == _is_flag(choice) for choice in choices)):
        shown = f"{owner}({name}={_shown(value)})" if owner else f"{name}={_shown(value)}"
        advice = f"; {hint}" if hint else ""
        raise DataError(f"{shown} is unknown; {name} must be one of {', '.join(map(repr, choices))}{advice}")


def checked_ids(owner: str | None, name: str, values: object, *, hint: str = "") -> np.ndarray:
    """`values` as int64 ids (one integer is one id); a DataError naming the first value that is not an integer.

    Whole floats (an int column with a gap reads as float) pass; strings, bools, NaN and nesting do not.
    shape: (n,).
    """
    label = f"{owner}({name}=...)" if owner else name
    if isinstance(values, (str, bytes, dict)) or values is None:
        _fail(owner, name, values, "a list of integer ids", hint or ("" if values is None or isinstance(values, dict)
                                                                     else "convert ids to integers: [int(id)]"))
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        _fail(owner, name, values, "a flat list of integer ids", hint)
    if array.ndim > 1:
        _fail(owner, name, values, f"a flat list of integer ids, not an array of shape {array.shape}", hint)
    flat = array.reshape(-1)
    in_range = flat.dtype.kind in "iuf" and bool((np.abs(flat.astype(np.float64)) < 2.0**63).all())
    if flat.dtype.kind in "iu" and in_range or flat.dtype.kind == "f" and in_range and (flat == np.round(flat)).all():
        return flat.astype(np.int64)  # the common case, without a look at each value
    for position, value in enumerate(np.asarray(values, dtype=object).reshape(-1).tolist()):  # as given, not cast
        whole = isinstance(value, numbers.Real) and not _is_flag(value) and _finite(value) \
            and float(value).is_integer()
        if not (_is_int(value) or whole) or not -2**63 <= int(value) < 2**63:
            what = "an integer outside the int64 range" if _is_int(value) else "not an integer id"
            advice = f"; {hint}" if hint else "; pass integer ids (e.g. drop missing ones, then astype('int64'))"
            raise DataError(f"{label} holds {_shown(value)} at position {position}, {what}{advice}")
    return flat.astype(np.int64)


def _is_flag(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _finite(value: numbers.Real) -> bool:
    """Whether a real number is finite; integers too large for a float (10**400) count as not finite."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not _is_flag(value)


def _bounds(minimum: float | None = None, maximum: float | None = None, above: float | None = None,
            below: float | None = None) -> list[str]:
    """The bounds given, in words such as ">= 0" and "< 1"."""
    pairs = ((">=", minimum), (">", above), ("<=", maximum), ("<", below))
    return [f"{sign} {_shown_bound(bound)}" for sign, bound in pairs if bound is not None]


def _shown_bound(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _shown(value: object) -> str:
    """The value's repr, cut short when long (a whole table passed by mistake)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}..."


def _fail(owner: str | None, name: str, value: object, wanted: str, hint: str) -> NoReturn:
    """Raise the DataError: whose argument, what it must be, what it was, and the hint."""
    label = f"{owner}({name}=...)" if owner else name
    advice = f"; {hint}" if hint else ""
    raise DataError(f"{label} must be {wanted}, got {_shown(value)}{advice}")
