"""Seed spread and paired bootstrap intervals, on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import DataError
from xscene_lib.evaluation import (format_interval, over_seeds, paired_bootstrap, seed_paired_difference, seed_spread,
                                   seed_summary, verdict)


def _per_row(difference: float, n_users: int = 400, noise: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Two models on the same users in two scenarios; B beats A by `difference` on average."""
    rng = np.random.default_rng(seed)
    users = np.arange(n_users)
    base = rng.uniform(0.2, 0.6, n_users)
    frame = pd.DataFrame({"user_id": users, "scenario": np.where(users % 2 == 0, "mobile", "desktop")})
    a = frame.assign(model="A", ndcg=base)
    b = frame.assign(model="B", ndcg=base + difference + rng.normal(0, noise, n_users))
    return pd.concat([a, b], ignore_index=True)


def test_a_clear_improvement_has_an_interval_above_zero() -> None:
    table = paired_bootstrap(_per_row(0.05), "ndcg", "A", "B").set_index("scenario")
    assert sorted(table.index[:-1]) == ["desktop", "mobile"] and table.index[-1] == "all"
    overall = table.loc["all"]
    assert overall["n_units"] == 400
    assert overall["difference"] == pytest.approx(0.05, abs=0.015)
    assert 0 < overall["ci_low"] < overall["difference"] < overall["ci_high"]
    assert overall["p_value"] < 0.01
    assert table.loc["mobile", "n_units"] == 200


def test_no_difference_has_an_interval_around_zero() -> None:
    overall = paired_bootstrap(_per_row(0.0), "ndcg", "A", "B").set_index("scenario").loc["all"]
    assert overall["ci_low"] < 0 < overall["ci_high"]
    assert overall["p_value"] > 0.05


def test_interval_width_matches_the_standard_error() -> None:
    overall = paired_bootstrap(_per_row(0.0, n_users=2000, noise=0.1), "ndcg", "A", "B",
                               n_resamples=4000).set_index("scenario").loc["all"]
    expected_half_width = 1.96 * 0.1 / np.sqrt(2000)
    assert (overall["ci_high"] - overall["ci_low"]) / 2 == pytest.approx(expected_half_width, rel=0.1)


def test_seeds_are_averaged_per_user_before_resampling() -> None:
    rows = pd.concat([_per_row(0.05).assign(seed=seed) for seed in range(3)], ignore_index=True)
    with_seeds = paired_bootstrap(rows, "ndcg", "A", "B", by=()).iloc[0]
    assert with_seeds["n_units"] == 400
    one_seed = paired_bootstrap(_per_row(0.05), "ndcg", "A", "B", by=()).iloc[0]
    assert with_seeds["difference"] == pytest.approx(one_seed["difference"])


def test_same_seed_same_interval() -> None:
    first = paired_bootstrap(_per_row(0.02), "ndcg", "A", "B", seed=3)
    assert first.equals(paired_bootstrap(_per_row(0.02), "ndcg", "A", "B", seed=3))


def test_over_seeds_mean_and_std() -> None:
    results = pd.DataFrame({"model": ["A"] * 3 + ["B"], "scenario": ["s"] * 4, "seed": [0, 1, 2, 0],
                            "ndcg@10": [0.1, 0.2, 0.3, 0.5]})
    table = over_seeds(results, "ndcg@10").set_index("model")
    assert table.loc["A", "mean"] == pytest.approx(0.2) and table.loc["A", "std"] == pytest.approx(0.1)
    assert table.loc["B", "std"] == 0.0 and table.loc["B", "seeds"] == 1


@pytest.mark.parametrize("call, message", [
    (lambda rows: paired_bootstrap(rows, "ndcg", "A", "C"), "not in per_row"),
    (lambda rows: paired_bootstrap(rows.drop(columns="user_id"), "ndcg", "A", "B"), "lacks column"),
    (lambda rows: paired_bootstrap(rows.iloc[:0], "ndcg", "A", "B"), "no rows"),
    (lambda rows: paired_bootstrap(rows, "ndcg", "A", "B", n_resamples=10), "n_resamples"),
    (lambda rows: paired_bootstrap(rows, "ndcg", "A", "B", confidence=95), "confidence"),
    (lambda rows: paired_bootstrap(rows[(rows.model == "A") | (rows.user_id > 0)], "ndcg", "A", "B"), "only one"),
])
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(DataError, match=message):
        call(_per_row(0.01))


def test_verdict_reads_the_side_of_zero_the_interval_lies_on():
    assert verdict(0.01, 0.03) == "above zero" and verdict(-0.03, -0.01) == "below zero"
    assert verdict(-0.01, 0.02) == "no difference can be told" and verdict(0.0, 0.02) == "no difference can be told"
    assert verdict(0.1, 0.2, above="helps", below="hurts") == "helps"
    with pytest.raises(DataError, match="low <= high"):
        verdict(0.2, 0.1)
    with pytest.raises(DataError, match="finite"):
        verdict(float("nan"), 0.1)


def test_seed_summary_shows_mean_and_std_per_model_and_scenario():
    results = pd.DataFrame({"model": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "scenario": ["all"] * 4,
                            "ndcg@10": [0.1, 0.3, 0.2, 0.2]})
    table = seed_summary(results, ["ndcg@10"])
    assert table.loc["a", ("ndcg@10", "all")] == "0.2000\u00a0±\u00a00.1414"  # non-breaking: one line
    assert table.loc["b", ("ndcg@10", "all")] == "0.2000\u00a0±\u00a00.0000"


def test_seed_summary_keeps_the_scenarios_in_the_order_the_results_list_them():
    scenarios = ["<25", "25-34", ">=35", "all"]  # string order would be 25-34, <25, >=35, all
    results = pd.DataFrame({"model": "a", "seed": 0, "scenario": scenarios, "ndcg@10": [0.1, 0.2, 0.3, 0.2]})
    table = seed_summary(results, ["ndcg@10"])
    assert list(table.columns.get_level_values("scenario")) == scenarios


def test_format_interval_signs_both_ends_with_the_digits_asked():
    assert format_interval(0.0012, 0.0034) == "[+0.0012, +0.0034]"
    assert format_interval(-0.01234, 0.5, digits=2) == "[-0.01, +0.50]"
    assert format_interval(np.float32(-1), 0) == "[-1.0000, +0.0000]"
    for low, high, digits, message in [(0.2, 0.1, 4, "low .* is above high"), (float("nan"), 0.1, 4, "low=.*finite"),
                                       (0.0, "0.1", 4, "high=.*finite"), (0.0, 0.1, -1, "digits=.*integer >= 0")]:
        with pytest.raises(DataError, match=message):
            format_interval(low, high, digits)


def test_seed_paired_difference_is_the_t_interval_of_the_seeds_differences() -> None:
    rows = [("a", s, "x", 0.80 + 0.01 * s) for s in range(3)] + [("b", s, "x", 0.81 + 0.01 * s + d)
                                                                   for s, d in zip(range(3), (0.0, 0.002, -0.002))]
    results = pd.DataFrame(rows, columns=["model", "seed", "scenario", "auc"])
    table = seed_paired_difference(results, "auc", "a", "b")
    half = 4.302652729911275 * 0.002 / np.sqrt(3)  # t(0.975, 2 d.f.) * sd of (0.010, 0.012, 0.008) / sqrt(3)
    assert table.loc[0, "difference"] == pytest.approx(0.01)
    assert (table.loc[0, "ci_low"], table.loc[0, "ci_high"]) == pytest.approx((0.01 - half, 0.01 + half))
    assert table.loc[0, "seeds"] == 3
    one_seed = seed_paired_difference(results[results["seed"] == 0], "auc", "a", "b")
    assert one_seed.loc[0, "seeds"] == 1 and np.isnan(one_seed.loc[0, "ci_low"])  # no interval from one seed
    with pytest.raises(DataError, match="lack model 'c'"):
        seed_paired_difference(results, "auc", "a", "c")


def _seed_rows(model: str, by_seed: dict[int, list[float]]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"model": model, "seed": seed, "user_id": range(len(values)), "item_id": 7,
                                    "ndcg@10": values}) for seed, values in by_seed.items()])


def test_seed_spread_of_a_known_case() -> None:
    rows = pd.concat([_seed_rows("equal", {0: [1, 0, 1, 0], 1: [0, 1, 1, 0]}),  # same mean, different rows hit
                      _seed_rows("apart", {0: [1, 1, 0, 0], 1: [0, 0, 0, 0]})])
    table = seed_spread(rows, "ndcg@10").set_index("model")
    assert table.loc["equal", "std"] == 0.0
    assert table.loc["equal", "row_noise"] == pytest.approx(np.sqrt((0.5 + 0.5 + 0 + 0) / 4 / 4))
    apart = table.loc["apart"]
    assert apart["mean"] == 0.25 and apart["std"] == pytest.approx(np.sqrt(0.125))
    # two seeds: one degree of freedom, chi-square quantiles 5.023886 (97.5%) and 0.0009820691 (2.5%)
    assert apart["std_low"] == pytest.approx(np.sqrt(0.125 / 5.023886), rel=1e-5)
    assert apart["std_high"] == pytest.approx(np.sqrt(0.125 / 0.0009820691), rel=1e-5)
    assert apart["seeds"] == 2 and apart["rows"] == 4


def test_seed_spread_of_one_seed_is_unknown_and_unpaired_rows_are_refused() -> None:
    one = seed_spread(_seed_rows("m", {0: [1, 0]}), "ndcg@10").iloc[0]
    assert one["seeds"] == 1 and np.isnan(one["std"]) and np.isnan(one["std_low"]) and np.isnan(one["row_noise"])
    uneven = pd.concat([_seed_rows("m", {0: [1, 0, 1]}), _seed_rows("m", {1: [1, 0]})])
    with pytest.raises(DataError, match="different test rows"):
        seed_spread(uneven, "ndcg@10")
    with pytest.raises(DataError, match="seed"):
        seed_spread(uneven.drop(columns="seed"), "ndcg@10")
