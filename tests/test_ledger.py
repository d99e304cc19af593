"""The claims ledger: verdicts read off intervals, rows picked from compare() tables, cost ranges over seeds."""

from __future__ import annotations

import pandas as pd
import pytest

from xscene_lib.data import DataError
from xscene_lib.experiments import Claim, pick, seed_range, verdict
from xscene_lib.experiments.ledger import (BOOTSTRAP_INTERVAL, LEDGER_COLUMNS, NO_CONCLUSION, NOT_SUPPORTED, SUPPORTED,
                                          ledger)


@pytest.mark.parametrize(("low", "high", "sign", "expected"), [
    (0.01, 0.03, 1, SUPPORTED), (-0.03, -0.01, 1, NOT_SUPPORTED), (-0.01, 0.02, 1, NO_CONCLUSION),
    (-0.03, -0.01, -1, SUPPORTED), (0.01, 0.03, -1, NOT_SUPPORTED), (0.0, 0.02, 1, NO_CONCLUSION),
    (-0.02, 0.0, -1, NO_CONCLUSION),
])
def test_verdict_follows_the_interval(low: float, high: float, sign: int, expected: str) -> None:
    assert verdict(low, high, sign) == expected


@pytest.mark.parametrize(("low", "high", "sign"), [(0.2, 0.1, 1), (float("nan"), 0.1, 1), (0.0, 0.1, 0)])
def test_verdict_refuses_bad_input(low: float, high: float, sign: int) -> None:
    with pytest.raises(DataError):
        verdict(low, high, sign)


def _compared() -> pd.DataFrame:
    return pd.DataFrame({
        "scenario": ["all", "a", "all"], "slice": ["all", "all", "cold items"],
        "baseline_model": ["bpr", "bpr", "bpr"], "candidate_model": ["joint"] * 3,
        "difference": [0.01, 0.02, -0.005], "ci_low": [0.002, -0.01, -0.02], "ci_high": [0.02, 0.05, 0.01],
    })


def test_pick_finds_the_one_row_and_names_its_interval() -> None:
    row = pick(_compared(), "bpr", "joint", slice_name="cold items")
    assert row["difference"] == -0.005 and row["interval"] == BOOTSTRAP_INTERVAL
    assert pick(_compared(), "bpr", "joint", scenario="a")["ci_low"] == -0.01


def test_pick_says_which_pairs_exist_when_absent() -> None:
    with pytest.raises(DataError, match="joint.*bpr"):
        pick(_compared(), "popularity", "joint")


def test_seed_range_pairs_runs_by_seed() -> None:
    table = pd.DataFrame({"model": ["bpr", "bpr", "joint", "joint", "joint", "bpr"],
                          "seed": [0, 1, 0, 1, 0, 0], "scenario": ["all", "all", "all", "all", "a", "a"],
                          "fit_seconds": [2.0, 4.0, 10.0, 7.0, 99.0, 99.0]})
    measured = seed_range(table, "fit_seconds", "bpr", "joint")
    assert measured["difference"] == pytest.approx(5.5)  # (8 + 3) / 2, the "a" rows are not runs
    assert (measured["ci_low"], measured["ci_high"]) == (3.0, 8.0)
    assert measured["interval"] == "range over 2 seed(s)"


def test_seed_range_refuses_a_model_without_runs() -> None:
    table = pd.DataFrame({"model": ["bpr"], "seed": [0], "scenario": ["all"], "fit_seconds": [1.0]})
    with pytest.raises(DataError, match="joint"):
        seed_range(table, "fit_seconds", "bpr", "joint")


def test_ledger_rows_carry_the_computed_verdict() -> None:
    text = Claim("text helps", "3.3", "NDCG@10 joint - bpr", "toy", chapter="joint_training")
    overfit = Claim("large models overfit", "8.3", "NDCG@10 joint - bpr, cold items", "toy", predicted_sign=-1)
    table = ledger([(text, pick(_compared(), "bpr", "joint")),
                    (overfit, pick(_compared(), "bpr", "joint", slice_name="cold items")),
                    (text, {"difference": -0.5, "ci_low": -0.9, "ci_high": -0.1, "interval": "range over 3 seed(s)"})])
    assert list(table.columns) == list(LEDGER_COLUMNS)
    assert table["verdict"].tolist() == [SUPPORTED, NO_CONCLUSION, NOT_SUPPORTED]
    assert table["interval"].tolist() == [BOOTSTRAP_INTERVAL, BOOTSTRAP_INTERVAL, "range over 3 seed(s)"]
    assert table.loc[0, "chapter"] == "joint_training"


def test_ledger_refuses_a_measurement_without_an_interval() -> None:
    with pytest.raises(DataError, match="ci_low"):
        ledger([(Claim("c", "3.3", "m", "toy"), {"difference": 0.1})])
    with pytest.raises(DataError, match="predicted_sign"):
        Claim("c", "3.3", "m", "toy", predicted_sign=0)
