import numpy as np
import pandas as pd
import pytest

from xscene_lib.models import ItemKNN, Popularity, TextZeroShot
from xscene_lib.data import DataError
from xscene_lib.models import NotFittedError


def interactions(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "scenario"])


# Counts in scenario a: item 10 -> 3, 11 -> 1, 12 -> 0; in b: 10 -> 0, 11 -> 1, 12 -> 2; overall 3, 2, 2.
POPULARITY_TRAIN = interactions([(1, 10, "a"), (1, 11, "a"), (2, 10, "a"), (2, 12, "b"), (3, 12, "b"),
                                 (3, 11, "b"), (3, 10, "a")])

# Binary user x item matrix over items 10..13; every item has two users, so all norms are sqrt(2):
#   user 1: 10 11 | user 2: 10 11 12 | user 3: 12 13 | user 4: 13
# co-occurrence 10-11: 2, 10-12: 1, 11-12: 1, 12-13: 1, others 0; cosine = co-occurrence / 2:
#        10   11   12   13
#   10   0    1    .5   0
#   11   1    0    .5   0
#   12   .5   .5   0    .5
#   13   0    0    .5   0
KNN_TRAIN = interactions([(1, 10, "a"), (1, 11, "b"), (2, 10, "a"), (2, 11, "a"), (2, 12, "b"), (3, 12, "a"),
                          (3, 13, "b"), (4, 13, "a")])

# 2-D text vectors: 10 east, 11 north, 12 north-east; 13 almost east and 14 west are never in training.
VECTORS = pd.DataFrame([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.3], [-1.0, 0.0]], index=[10, 11, 12, 13, 14])
# user 1: 10 in a, 11 in b; user 2: 11 in a only; user 3: 10 and 11 in a
TEXT_TRAIN = interactions([(1, 10, "a"), (1, 11, "b"), (2, 11, "a"), (3, 10, "a"), (3, 11, "a")])


def raises(match: str):
    return pytest.raises(DataError, match=match)


# --- Popularity ----------------------------------------------------------------------------------------------

def test_popularity_per_scenario_scores_are_the_scenario_counts():
    model = Popularity().fit(POPULARITY_TRAIN)
    np.testing.assert_array_equal(model.score([1, 2], "a"), [[3, 1, 0], [3, 1, 0]])
    np.testing.assert_array_equal(model.score([3], "b"), [[0, 1, 2]])


def test_global_popularity_scores_are_the_counts_over_all_scenarios():
    model = Popularity(per_scenario=False).fit(POPULARITY_TRAIN)
    for scenario in ("a", "b"):
        np.testing.assert_array_equal(model.score([1], scenario), [[3, 2, 2]])


def test_popularity_gives_items_never_in_training_a_zero_count():
    model = Popularity().fit(POPULARITY_TRAIN, items=[10, 11, 12, 13])
    np.testing.assert_array_equal(model.score([1], "a"), [[3, 1, 0, 0]])


def test_popularity_rejects_a_per_scenario_that_is_not_a_bool_and_stays_unfitted():
    model = Popularity(per_scenario="yes")
    with raises("per_scenario"):
        model.fit(POPULARITY_TRAIN)
    with pytest.raises(NotFittedError):
        model.score([1], "a")


# --- ItemKNN -------------------------------------------------------------------------------------------------

def test_item_knn_scores_sum_the_cosine_similarities_to_the_history():
    model = ItemKNN().fit(KNN_TRAIN)
    np.testing.assert_allclose(model.score([1, 3, 4], "a"), [[1, 1, 1, 0], [.5, .5, .5, .5], [0, 0, .5, 0]],
                               rtol=1e-6)


def test_item_knn_keeps_the_strongest_neighbours_of_each_item_ties_to_the_lower_item():
    # column 10 keeps 11 (1.0), 11 keeps 10, 12 keeps 10 (tied with 11 and 13 at .5), 13 keeps 12
    model = ItemKNN(num_neighbours=1).fit(KNN_TRAIN)
    expected = [[0, 1, .5, 0], [1, 0, 0, 0], [0, 0, 0, .5], [0, 0, 0, 0]]
    np.testing.assert_allclose(model.similarity_.toarray(), expected, rtol=1e-6)
    np.testing.assert_allclose(model.score([1, 3, 4], "b"), [[1, 1, .5, 0], [0, 0, 0, .5], [0, 0, 0, 0]],
                               rtol=1e-6)


def test_item_knn_shrink_is_added_to_the_cosine_denominator():
    model = ItemKNN(shrink=2.0).fit(KNN_TRAIN)  # 10-11: 2 / (2 + 2); the pairs that share one user: 1 / 4
    np.testing.assert_allclose(model.score([1], "a"), [[.5, .5, .5, 0]], rtol=1e-6)


def test_item_knn_scores_are_the_same_in_every_scenario():
    model = ItemKNN().fit(KNN_TRAIN)
    np.testing.assert_array_equal(model.score([1, 2, 3, 4], "a"), model.score([1, 2, 3, 4], "b"))


@pytest.mark.parametrize("number", [0, -3, 2.5, True, None])
def test_item_knn_needs_a_positive_integer_number_of_neighbours(number):
    with raises("num_neighbours"):
        ItemKNN(num_neighbours=number).fit(KNN_TRAIN)


@pytest.mark.parametrize("shrink", [-1.0, float("nan"), float("inf"), "1"])
def test_item_knn_needs_a_finite_non_negative_shrink(shrink):
    with raises("shrink"):
        ItemKNN(shrink=shrink).fit(KNN_TRAIN)


# --- TextZeroShot --------------------------------------------------------------------------------------------

def test_text_zero_shot_scores_the_cosine_with_the_history_in_the_scenario():
    model = TextZeroShot().fit(TEXT_TRAIN, VECTORS)
    east, north = [1, 0, 2 ** -.5, 3 / np.hypot(3, .3), -1], [0, 1, 2 ** -.5, .3 / np.hypot(3, .3), 0]
    np.testing.assert_allclose(model.score([1], "a"), [east], atol=1e-6)
    np.testing.assert_allclose(model.score([1], "b"), [north], atol=1e-6)


def test_text_zero_shot_profile_is_the_mean_of_the_history():
    model = TextZeroShot().fit(TEXT_TRAIN, VECTORS)
    scores = model.score([3], "a")[0]  # profile north-east: item 12 is a perfect match
    assert scores[2] == pytest.approx(1.0)
    assert scores.argmax() == 2


def test_text_zero_shot_falls_back_to_the_whole_history_in_a_scenario_without_one():
    model = TextZeroShot().fit(TEXT_TRAIN, VECTORS)  # user 2 has nothing in b, only 11 (north) in a
    np.testing.assert_allclose(model.score([2], "b"), model.score([2], "a"))
    assert model.score([2], "b")[0].argmax() == 1


def test_text_zero_shot_ranks_items_never_in_training_first_when_they_fit():
    model = TextZeroShot().fit(TEXT_TRAIN, VECTORS)
    top = model.recommend([1], k=2, scenario_weights={"a": 1.0})
    assert top["item_id"].tolist() == [13, 12]  # 13 is cold; 10 is excluded as seen


def test_text_zero_shot_needs_item_vectors():
    with raises("needs item_vectors"):
        TextZeroShot().fit(TEXT_TRAIN)


def test_item_vectors_must_cover_the_training_items():
    with raises("outside the candidate items"):
        TextZeroShot().fit(TEXT_TRAIN, VECTORS.drop(index=11))


def test_item_vectors_must_cover_the_given_candidate_items():
    with raises("item_vectors lack 1"):
        TextZeroShot().fit(TEXT_TRAIN, VECTORS, items=[10, 11, 12, 99])


# --- the contract, through the baselines ---------------------------------------------------------------------

@pytest.mark.parametrize("model", [Popularity(), ItemKNN(), TextZeroShot()], ids=lambda m: type(m).__name__)
def test_unfitted_models_say_so(model):
    with pytest.raises(NotFittedError, match="fit"):
        model.score([1], "a")
    with pytest.raises(NotFittedError, match="fit"):
        model.recommend([1])


@pytest.mark.parametrize("model", [Popularity(), ItemKNN(), TextZeroShot()], ids=lambda m: type(m).__name__)
def test_fitting_on_empty_training_data_fails_clearly(model):
    with raises("empty"):
        model.fit(TEXT_TRAIN.iloc[:0], VECTORS)


def test_an_unknown_scenario_is_rejected():
    model = Popularity().fit(POPULARITY_TRAIN)
    with raises("scenario 'c' was not seen in training"):
        model.score([1], "c")


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_a_positive_integer(k):
    with raises("k must be a positive integer"):
        Popularity().fit(POPULARITY_TRAIN).recommend([1], k=k)


@pytest.mark.parametrize("weights", [{"a": -1.0, "b": 2.0}, {"a": 0.0, "b": 0.0}, {"a": float("nan")}])
def test_scenario_weights_must_be_non_negative_and_not_all_zero(weights):
    with raises("non-negative and not all zero"):
        Popularity().fit(POPULARITY_TRAIN).recommend([1], scenario_weights=weights)
