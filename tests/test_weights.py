"""Scenario weights: blended ranks against a hand count, the simplex grid, and tuning."""

import numpy as np
import pandas as pd
import pytest

from xscene_lib.models import Popularity
from xscene_lib.data import DataError
from xscene_lib.evaluation import ranking_metrics
from xscene_lib.data.synthetic import synthetic
from xscene_lib.models import blended_ranks, simplex_grid, tune_scenario_weights


def interactions(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "scenario"])


def seen_pairs(train: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(train["user_id"], train["item_id"]))


def raises(match: str):
    return pytest.raises(DataError, match=match)


# --- blended_ranks ----------------------------------------------------------------------------------------

# Popularity: a counts 10 -> 3, 11 -> 2, 13 -> 1, 12 -> 0; b counts 12 -> 3, 11 -> 1, 10 -> 0, 13 -> 0.
TRAIN = interactions([(1, 10, "a"), (1, 11, "a"), (2, 10, "a"), (2, 12, "b"), (3, 12, "b"), (3, 11, "b"),
                      (3, 10, "a"), (4, 12, "b"), (4, 13, "a"), (4, 11, "a")])


def test_blended_ranks_count_the_items_above_the_target_leaving_out_seen_ones():
    model = Popularity().fit(TRAIN)
    # weight only on a: user 2 has seen 10 and 12, so 11 (2) beats 13 (1): 13 ranks 2nd of 2 candidates
    ranked = blended_ranks(model, interactions([(2, 13, "a")]), [TRAIN], {"a": 1.0})
    assert ranked[["rank", "n_candidates", "known"]].iloc[0].tolist() == [2.0, 2, True]
    # without the seen items every item competes: 13 is third of four, after 10 and 11
    assert blended_ranks(model, interactions([(2, 13, "a")]), [], {"a": 1.0})["rank"].iloc[0] == 3.0
    # weight only on b: 12 leads, then 11; 10 and 13 tie at the bottom (3.5 = 3 + one tie / 2)
    assert blended_ranks(model, interactions([(2, 10, "a")]), [], {"b": 1.0})["rank"].iloc[0] == 3.5


def test_blended_ranks_agree_with_the_positions_in_recommend():
    dataset, _ = synthetic(n_users=40, n_items=60, n_scenarios=2, seed=3)
    split = dataset.split()
    model = Popularity().fit(split.train)
    lists = model.recommend(split.test["user_id"].unique(), 60, "uniform")
    ranked = blended_ranks(model, split.test, [split.train], "uniform").merge(lists, on=["user_id", "item_id"],
                                                                               suffixes=("", "_list"))
    untied = ranked["rank"] == ranked["rank"].round()
    assert untied.sum() > 10
    np.testing.assert_array_equal(ranked.loc[untied, "rank"], ranked.loc[untied, "rank_list"])


def test_blended_ranks_mark_unknown_items_and_reject_bad_input():
    model = Popularity().fit(TRAIN)
    ranked = blended_ranks(model, interactions([(1, 99, "a")]), [TRAIN])
    assert not ranked["known"].iloc[0] and ranked["rank"].iloc[0] == 4.0
    with raises("targets has no rows"):
        blended_ranks(model, interactions([]), [TRAIN])
    with raises(r"targets lacks column\(s\) \['item_id'\]"):
        blended_ranks(model, interactions([(1, 10, "a")]).drop(columns="item_id"))
    with raises("unknown scenario"):
        blended_ranks(model, interactions([(1, 10, "a")]), [], {"c": 1.0})


# --- the simplex grid -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_scenarios", "expected"), [(1, 1), (2, 5), (3, 15), (4, 35), (6, 126)])
def test_simplex_grid_holds_every_quarter_step_vector_summing_to_one(n_scenarios, expected):
    vectors = simplex_grid(n_scenarios)
    assert vectors.shape == (expected, n_scenarios)
    np.testing.assert_allclose(vectors.sum(axis=1), 1.0)
    assert len(np.unique(vectors, axis=0)) == expected and np.isin(vectors, [0, .25, .5, .75, 1]).all()


def test_simplex_grid_with_uneven_values_filters_the_product():
    vectors = simplex_grid(2, (0.0, 0.3, 0.7, 1.0))
    assert sorted(map(tuple, vectors.tolist())) == [(0.0, 1.0), (0.3, 0.7), (0.7, 0.3), (1.0, 0.0)]


# --- tune_scenario_weights -----------------------------------------------------------------------------------

# Popularity in a: 10 (10 users) just above 11 (9 users); in b: 10 never, 11/12/13 once each. Users 1 and 2 want
# 10, which leads only when b has no weight: from (0.75, 0.25) on, b's dislike of 10 puts 11 first.
TUNING_TRAIN = interactions([(100 + u, 10, "a") for u in range(10)] + [(200 + u, 11, "a") for u in range(9)]
                            + [(1, 13, "b"), (2, 12, "b"), (300, 11, "b")])
TUNING_VALID = interactions([(1, 10, "a"), (2, 10, "b")])


def test_tuning_picks_the_scenario_that_is_clearly_right():
    model = Popularity().fit(TUNING_TRAIN)
    assert tune_scenario_weights(model, TUNING_TRAIN, TUNING_VALID, k=10) == {"a": 1.0, "b": 0.0}


def validation_ndcg(model, valid: pd.DataFrame, weights: dict[str, float], k: int) -> float:
    lists = model.recommend(np.unique(valid["user_id"]), k=k, scenario_weights=weights)
    position = {(u, i): r for u, i, r in zip(lists["user_id"], lists["item_id"], lists["rank"])}
    gains = [1 / np.log2(position[pair] + 1) if pair in position else 0.0 for pair in seen_pairs(valid)]
    return float(np.mean(gains))


def test_tuned_weights_lie_on_the_simplex_and_beat_the_alternatives():
    dataset, _ = synthetic(n_users=120, n_items=150, n_scenarios=3, seed=1)
    split = dataset.split()  # one validation item per user, never in their training history
    model = Popularity().fit(split.train)
    weights = tune_scenario_weights(model, split.train, split.valid, grid=(0.0, 0.5, 1.0), k=10)
    assert list(weights) == model.scenarios_
    assert all(w in (0.0, 0.5, 1.0) for w in weights.values()) and sum(weights.values()) == pytest.approx(1.0)
    alternatives = [dict(zip(model.scenarios_, w)) for w in
                    [(1, 0, 0), (0, 1, 0), (0, 0, 1), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)]]
    best = validation_ndcg(model, split.valid, weights, k=10)
    assert all(best >= validation_ndcg(model, split.valid, w, k=10) for w in alternatives)
    assert best > min(validation_ndcg(model, split.valid, w, k=10) for w in alternatives)


def test_tuning_rejects_bad_grids_and_data():
    model = Popularity().fit(TUNING_TRAIN)
    with raises("no combination of grid values"):
        tune_scenario_weights(model, TUNING_TRAIN, TUNING_VALID, grid=(0.3,))
    with raises("grid must hold weights between 0 and 1"):
        tune_scenario_weights(model, TUNING_TRAIN, TUNING_VALID, grid=(0.0, 2.0))
    with raises(r"^tune_scenario_weights\(k=\.\.\.\) must be a positive integer, got 0$"):
        tune_scenario_weights(model, TUNING_TRAIN, TUNING_VALID, k=0)
    with raises(r"^tune_scenario_weights\(seed=\.\.\.\) must be an integer >= 0, got -1$"):
        tune_scenario_weights(model, TUNING_TRAIN, TUNING_VALID, seed=-1)
    with raises(r"valid lacks column\(s\) \['scenario'\]"):
        tune_scenario_weights(model, TUNING_TRAIN, TUNING_VALID.drop(columns="scenario"))
    with raises("already in its user's training history"):
        tune_scenario_weights(model, TUNING_TRAIN, interactions([(1, 13, "b")]))


def test_tuning_four_scenarios_searches_the_grid_and_beats_each_single_scenario():
    dataset, _ = synthetic(n_users=80, n_items=60, n_scenarios=4, interactions_per_user=12, seed=2)
    split = dataset.split()
    model = Popularity().fit(split.train)
    weights = tune_scenario_weights(model, split.train, split.valid, grid=(0.0, 0.5, 1.0))
    assert sum(weights.values()) == pytest.approx(1.0) and set(weights.values()) <= {0.0, 0.5, 1.0}

    def ndcg(w):
        targets = split.valid[~split.valid.set_index(["user_id", "item_id"]).index.isin(
            split.train.set_index(["user_id", "item_id"]).index)]
        return ranking_metrics(blended_ranks(model, targets, [split.train], w), ks=(10,))["ndcg@10"].mean()

    singles = [ndcg({s: 1.0}) for s in model.scenarios_]
    assert ndcg(weights) >= max(singles)


def test_tuning_samples_the_grid_when_it_is_large_and_keeps_the_anchors():
    dataset, _ = synthetic(n_users=30, n_items=40, n_scenarios=4, interactions_per_user=8, seed=2)
    split = dataset.split()
    model = Popularity().fit(split.train)
    weights = tune_scenario_weights(model, split.train, split.valid, most_candidates=5)  # uniform + 4 corners
    assert sorted(weights.values()) in ([0.25] * 4, [0.0, 0.0, 0.0, 1.0])
    with raises(r"tune_scenario_weights\(most_candidates=\.\.\.\) must be a positive integer"):
        tune_scenario_weights(model, split.train, split.valid, most_candidates=0)
