"""The argument checks every module goes through: what each accepts, what it refuses, and what it says."""
from fractions import Fraction

import numpy as np
import pytest

from xscene_lib.data import (DataError, DataTypeError, check_choice, check_flag, check_int, check_number,
                             check_positive_int)
from xscene_lib.data.validation import SHOWN_CHARACTERS

INTEGERS = [0, 1, 7, np.int64(3), np.int32(-2), np.uint8(5)]
NOT_INTEGERS = [True, False, np.bool_(True), 1.0, 2.5, "3", None, [1], np.float64(4.0)]
NOT_NUMBERS = [True, np.bool_(False), "0.5", None, [0.5], float("nan"), float("inf"), -float("inf"),
               np.float32("nan"), complex(1, 0)]


def test_check_int_accepts_integers_of_python_and_numpy_within_the_bounds():
    for value in INTEGERS:
        check_int("f", "n", value)
        check_int("f", "n", value, minimum=-2, maximum=7)
    check_int(None, "n", 100, minimum=100)
    check_int(None, "n", -5, maximum=-5)


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_check_int_refuses_bools_floats_and_other_types(value):
    with pytest.raises(DataError, match=r"^fit_it\(count=\.\.\.\) must be an integer, got "):
        check_int("fit_it", "count", value)


@pytest.mark.parametrize("value, bounds, wanted", [
    (-1, {"minimum": 0}, "an integer >= 0"),
    (4, {"maximum": 3}, "an integer <= 3"),
    (0, {"minimum": 1, "maximum": 3}, "an integer from 1 to 3"),
    (4, {"minimum": 1, "maximum": 3}, "an integer from 1 to 3"),
])
def test_check_int_refuses_values_out_of_range_and_says_the_range(value, bounds, wanted):
    with pytest.raises(DataError, match=rf"^dim must be {wanted}, got {value}$"):
        check_int(None, "dim", value, **bounds)


def test_check_positive_int_keeps_its_wording():
    for value in (1, np.int64(2), 10**12):
        check_positive_int("JointModel", "dim", value)
    for value in (0, -1, True, 2.0, "1", None):
        with pytest.raises(DataError, match=r"^JointModel\(dim=\.\.\.\) must be a positive integer, got "):
            check_positive_int("JointModel", "dim", value)
    with pytest.raises(DataError, match=r"^k must be a positive integer, got 0$"):
        check_positive_int(None, "k", 0)


def test_check_number_accepts_finite_reals_within_the_bounds():
    for value in (0, 0.5, 1, np.float32(0.25), np.int64(1), Fraction(1, 3)):
        check_number("f", "x", value, minimum=0, maximum=1)
    check_number("f", "x", -1e300)
    check_number("f", "x", 1e-12, positive=True)
    check_number("f", "x", 0.0, positive=False)
    check_number("f", "x", 0.95, above=0.5, below=1.0)


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_check_number_refuses_bools_non_numbers_nan_and_infinity(value):
    with pytest.raises(DataError, match=r"^ItemKNN\(shrink=\.\.\.\) must be a finite number, got "):
        check_number("ItemKNN", "shrink", value)


@pytest.mark.parametrize("value, bounds, wanted", [
    (0, {"positive": True}, "a finite number > 0"),
    (-0.5, {"positive": False}, "a finite number >= 0"),
    (1.5, {"minimum": 0, "maximum": 1}, "a number between 0 and 1"),
    (-0.1, {"minimum": 0.0, "maximum": 1.0}, "a number between 0 and 1"),
    (0.5, {"above": 0.5, "below": 1.0}, "a finite number > 0.5 and < 1"),
    (1.0, {"above": 0.5, "below": 1.0}, "a finite number > 0.5 and < 1"),
    (7, {"maximum": 6}, "a finite number <= 6"),
    (-2.0, {"positive": False, "maximum": 3}, "a number between 0 and 3"),
])
def test_check_number_refuses_values_out_of_range_and_says_the_range(value, bounds, wanted):
    with pytest.raises(DataError, match=rf"^rate must be {wanted}, got {value}$"):
        check_number(None, "rate", value, **bounds)


def test_check_flag_accepts_only_true_and_false():
    for value in (True, False, np.bool_(True)):
        check_flag("Popularity", "per_scenario", value)
    for value in (1, 0, "yes", None, np.int64(1)):
        with pytest.raises(DataError, match=r"^Popularity\(per_scenario=\.\.\.\) must be True or False, got "):
            check_flag("Popularity", "per_scenario", value)


def test_check_choice_accepts_the_choices_and_names_them_when_refusing():
    check_choice("TextEncoder", "pooling", "cls", ("mean", "cls"))
    check_choice(None, "sign", np.int64(-1), (1, -1))
    check_choice(None, "flag", False, (True, False))
    with pytest.raises(DataError, match=r"^TextEncoder\(pooling='max'\) is unknown; pooling must be one of "
                                        r"'mean', 'cls'$"):
        check_choice("TextEncoder", "pooling", "max", ("mean", "cls"))
    for value in (True, 0, "1", [1], None, np.array([1, -1])):  # True is not the choice 1
        with pytest.raises(DataError, match=r"^sign=.* is unknown; sign must be one of 1, -1$"):
            check_choice(None, "sign", value, (1, -1))


def test_the_hint_follows_the_message():
    with pytest.raises(DataError, match=r"must be an integer >= 0, got -1; seeds number the runs$"):
        check_int("sweep", "seed", -1, minimum=0, hint="seeds number the runs")
    with pytest.raises(DataError, match=r"must be one of 'a', 'b'; see the docs$"):
        check_choice("f", "kind", "c", ("a", "b"), hint="see the docs")
    with pytest.raises(DataError, match=r"must be True or False, got 'on'; pass a bool$"):
        check_flag("f", "use", "on", hint="pass a bool")


def test_a_long_value_is_cut_short_in_the_message():
    with pytest.raises(DataError) as failure:
        check_positive_int("f", "n", "x" * 1000)
    shown = str(failure.value).split("got ", 1)[1]
    assert shown.endswith("...") and len(shown) == SHOWN_CHARACTERS + 3


def test_errors_are_value_errors_and_type_errors_are_also_type_errors():
    assert issubclass(DataError, ValueError)
    assert issubclass(DataTypeError, DataError) and issubclass(DataTypeError, TypeError)
    with pytest.raises(ValueError):
        check_int("f", "n", -1, minimum=0)
