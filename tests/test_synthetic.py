import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import DataError, Dataset
from xscene_lib.data import SyntheticTruth
from xscene_lib.data.synthetic import GENERIC_WORDS, TOPIC_WORDS, synthetic
from xscene_lib.models import TrueAffinity


def test_same_seed_same_data_other_seed_other_data():
    first, first_truth = synthetic(seed=3)
    again, again_truth = synthetic(seed=3)
    other, _ = synthetic(seed=4)
    pd.testing.assert_frame_equal(first.interactions, again.interactions)
    pd.testing.assert_frame_equal(first.items, again.items)
    np.testing.assert_array_equal(first_truth.affinity("mobile"), again_truth.affinity("mobile"))
    assert not first.interactions.equals(other.interactions)


def test_shapes_names_and_counts():
    data, truth = synthetic(n_users=30, n_items=40, n_scenarios=3, n_topics=5, interactions_per_user=12, seed=1)
    assert isinstance(data, Dataset) and isinstance(truth, SyntheticTruth)
    assert data.scenarios == ["s0", "s1", "s2"] and truth.scenarios == data.scenarios
    assert truth.item_topics.shape == (40,) and set(truth.item_topics) == set(range(5))
    assert truth.user_preferences.shape == (30, 5) and truth.scenario_shifts.shape == (3, 5)
    assert truth.affinity("s2").shape == (30, 40)
    assert len(data.interactions) == 30 * 12 and len(data.items) == 40 and len(data.users) == 30
    per_user_scenario = data.interactions.groupby(["user_id", "scenario"]).size()
    assert len(per_user_scenario) == 30 * 3  # every user is active in every scenario
    assert not data.interactions.duplicated(["user_id", "item_id", "scenario"]).any()
    assert synthetic()[0].scenarios == ["mobile", "desktop"]


def test_timestamps_increase_within_each_user():
    interactions = synthetic(seed=2)[0].interactions
    assert (interactions.groupby("user_id")["timestamp"].diff().dropna() > 0).all()


def test_affinity_is_base_preference_plus_scenario_shift_of_the_item_topic():
    _, truth = synthetic(n_users=5, n_items=8, interactions_per_user=4, seed=5)
    expected = truth.user_preferences[3, truth.item_topics[6]] + truth.scenario_shifts[1, truth.item_topics[6]]
    assert truth.affinity("desktop")[3, 6] == pytest.approx(expected)
    np.testing.assert_array_equal(truth.affinity(1), truth.affinity("desktop"))
    with pytest.raises(DataError, match=r"unknown scenario 'tv'; known: \['mobile', 'desktop'\]"):
        truth.affinity("tv")


def test_item_text_reveals_its_topic():
    data, truth = synthetic(n_items=50, n_topics=4, seed=6)
    for text, topic in zip(data.items["text"], truth.item_topics):
        generic, *words = text.split()
        assert generic in GENERIC_WORDS and words and set(words) <= set(TOPIC_WORDS[topic])


def test_planted_scenario_preferences_are_recoverable():
    data, truth = synthetic(seed=0)
    rows = data.interactions
    n_topics = truth.user_preferences.shape[1]
    for index, scenario in enumerate(data.scenarios):
        here = rows[rows["scenario"] == scenario]
        users, items = here["user_id"].to_numpy(), here["item_id"].to_numpy()
        favourite = np.argmax(truth.user_preferences + truth.scenario_shifts[index], axis=1)
        share_on_favourite = np.mean(truth.item_topics[items] == favourite[users])
        assert share_on_favourite > 1 / n_topics + 0.2
        # the scenario's own affinity explains its interactions better than the other scenario's affinity
        other = data.scenarios[1 - index]
        assert truth.affinity(scenario)[users, items].mean() > truth.affinity(other)[users, items].mean()


@pytest.mark.parametrize("arguments, message", [
    ({"n_users": 0}, "n_users must be a positive integer"),
    ({"n_topics": 2.5}, "n_topics must be a positive integer"),
    ({"n_items": 3, "n_topics": 4, "interactions_per_user": 2}, "n_topics=4 exceeds n_items=3"),
    ({"interactions_per_user": 1}, "must lie between n_scenarios=2"),
    ({"n_items": 10, "interactions_per_user": 11}, "and n_items=10"),
])
def test_bad_parameters(arguments, message):
    with pytest.raises(DataError, match=message):
        synthetic(**arguments)


def test_true_affinity_scores_follow_the_planted_preferences_with_ties_broken_once():
    dataset, truth = synthetic(n_users=30, n_items=40, seed=4)
    split = dataset.split()
    oracle = TrueAffinity(truth, seed=1).fit(split.train)
    scores = oracle.score(oracle.user_ids_[:5], "mobile")  # (5, n_items): places 0..n_items-1
    affinity = truth.affinity("mobile")[oracle.user_ids_[:5]][:, oracle.item_ids_]
    assert (np.sort(scores, axis=1) == np.arange(len(oracle.item_ids_))).all()
    best = scores.argmax(axis=1)
    assert np.allclose(affinity[np.arange(5), best], affinity.max(axis=1))  # the top item has the top affinity
    np.testing.assert_array_equal(scores, TrueAffinity(truth, seed=1).fit(split.train).score(oracle.user_ids_[:5],
                                                                                              "mobile"))
    with pytest.raises(DataError, match="needs the SyntheticTruth"):
        TrueAffinity("truth").fit(split.train)
