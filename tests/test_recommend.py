import numpy as np
import pandas as pd
import pytest

from xscene_lib.models import Popularity
from xscene_lib.data import DataError
from xscene_lib.data.synthetic import synthetic


def interactions(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "scenario"])


# Items 10..13. Counts in a: 10 -> 3, 11 -> 2, 12 -> 0, 13 -> 1; in b: 10 -> 0, 11 -> 1, 12 -> 3, 13 -> 0.
TRAIN = interactions([(1, 10, "a"), (1, 11, "a"), (2, 10, "a"), (2, 12, "b"), (3, 12, "b"), (3, 11, "b"),
                      (3, 10, "a"), (4, 12, "b"), (4, 13, "a"), (4, 11, "a")])


def fitted() -> Popularity:
    return Popularity().fit(TRAIN)


def seen_pairs(train: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(train["user_id"], train["item_id"]))


def raises(match: str):
    return pytest.raises(DataError, match=match)


# --- recommend -----------------------------------------------------------------------------------------------

def test_recommend_returns_ranked_lists_with_one_contribution_per_scenario():
    lists = fitted().recommend([1, 2], k=2)
    assert list(lists.columns) == ["user_id", "item_id", "score", "rank", "source", "from_a", "from_b"]
    assert lists["user_id"].tolist() == [1, 1, 2, 2]
    assert lists["rank"].tolist() == [1, 2, 1, 2]
    assert (lists["source"] == "model").all()


def test_contributions_sum_to_the_score():
    lists = fitted().recommend([1, 2, 3, 4], k=4, scenario_weights="uniform", exclude_seen=False)
    np.testing.assert_allclose(lists["from_a"] + lists["from_b"], lists["score"], rtol=1e-6)
    assert lists.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()


def test_user_history_weights_follow_the_user_share_of_each_scenario():
    lists = fitted().recommend([1], k=2)  # user 1 has only scenario a: 12 (b's favourite) adds nothing
    assert (lists["from_b"] == 0).all()
    assert lists["item_id"].tolist() == [13, 12]  # 10 and 11 are seen; a counts 13 above 12


def test_exclude_seen_removes_the_training_items():
    lists = fitted().recommend([1, 2, 3, 4], k=4, scenario_weights={"a": 1.0})
    assert not seen_pairs(lists) & seen_pairs(TRAIN)
    assert lists.groupby("user_id").size().tolist() == [2, 2, 1, 1]  # all that is left of 4 items
    everything = fitted().recommend([1], k=1, scenario_weights={"a": 1.0}, exclude_seen=False)
    assert everything["item_id"].tolist() == [10]


def test_unknown_users_fall_back_to_popularity_and_say_so():
    lists = fitted().recommend([99, 1], k=2, scenario_weights={"b": 1.0})
    unknown = lists[lists["user_id"] == 99]
    assert unknown["item_id"].tolist() == [12, 11]
    assert (unknown["source"] == "popularity (user not in training)").all()
    assert (lists.loc[lists["user_id"] == 1, "source"] == "model").all()


def test_weighting_one_scenario_moves_the_lists_toward_its_planted_preferences():
    dataset, truth = synthetic(n_users=200, n_items=300, seed=0)
    model = Popularity().fit(dataset.split().train)
    users = np.arange(200)
    for scenario, other in (("mobile", "desktop"), ("desktop", "mobile")):
        affinity = truth.affinity(scenario)  # (n_users, n_items), indexed by raw ids

        def mean_affinity(weights: dict[str, float]) -> float:
            lists = model.recommend(users, k=10, scenario_weights=weights)
            return float(affinity[lists["user_id"], lists["item_id"]].mean())

        assert mean_affinity({scenario: 1.0}) > mean_affinity({scenario: 0.5, other: 0.5}) \
            > mean_affinity({other: 1.0})
