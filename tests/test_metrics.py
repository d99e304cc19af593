import numpy as np
import pandas as pd
import pytest

from xscene_lib.models import Popularity
from xscene_lib.data import DataError
from xscene_lib.evaluation import item_coverage, ranking_metrics, sampled_ranks, summarise, target_ranks
from xscene_lib.models import NotFittedError, Recommender
from xscene_lib.data.synthetic import synthetic


class FixedScores(Recommender):
    """A model whose scores are given: scenario -> (n_users, n_items) in the order of user_ids_, item_ids_."""

    def __init__(self, scores: dict[str, list[list[float]]]) -> None:
        self.scores = scores

    def _fit(self, users, items, scenarios, train, item_vectors) -> None:
        pass

    def _score(self, user_index, scenario_index):
        return np.array(self.scores[self.scenarios_[scenario_index]], dtype=np.float32)[user_index]


def frame(rows, columns=("user_id", "item_id", "scenario")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


# Items 10..14. User 1 has 10 (in a) and 11 (in b) in training, user 2 has 12 (in a).
TRAIN = frame([(1, 10, "a"), (1, 11, "b"), (2, 12, "a")])
SCORES = {"a": [[5, 4, 3, 3, 1],   # user 1
                [1, 1, 1, 1, 1]],  # user 2
          "b": [[9, 8, 2, 3, 4],
                [4, 3, 2, 1, 0]]}
# (user, target, scenario) -> rank, known, candidates left after excluding the user's training items
EXPECTED = [
    ((1, 12, "a"), 1.5, True, 3),  # 10 and 11 excluded; 13 ties with 12: 1 + 0 + 1/2
    ((1, 12, "b"), 3.0, True, 3),  # 10 and 11 (scored higher) excluded; 13 and 14 higher
    ((2, 13, "a"), 2.5, True, 4),  # 12 excluded; 10, 11, 14 tie with 13: 1 + 0 + 3/2
    ((2, 12, "b"), 3.0, True, 5),  # the target is in training but never excluded itself; 10, 11 higher
    ((3, 10, "a"), 5.0, False, 5),  # unknown user: the worst rank
    ((1, 99, "a"), 5.0, False, 5),  # unknown item
    ((1, 10, "c"), 5.0, False, 5),  # scenario not seen in training
]
TEST = frame([row for row, *_ in EXPECTED])


def fitted() -> FixedScores:
    return FixedScores(SCORES).fit(TRAIN, items=[10, 11, 12, 13, 14])


def raises(match: str):
    return pytest.raises(DataError, match=match)


# --- target_ranks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 2, 1024])
def test_target_ranks_match_hand_computed_ranks(batch_size):
    ranks = target_ranks(fitted(), TRAIN, TEST, batch_size=batch_size)
    assert ranks[["user_id", "item_id", "scenario"]].equals(TEST)
    assert ranks["rank"].tolist() == [rank for _, rank, _, _ in EXPECTED]
    assert ranks["known"].tolist() == [known for _, _, known, _ in EXPECTED]
    assert ranks["n_candidates"].tolist() == [n for *_, n in EXPECTED]


def test_target_ranks_exclude_the_items_of_the_train_frame_given():
    ranks = target_ranks(fitted(), TRAIN.iloc[:0], TEST.iloc[:2])  # nothing excluded
    assert ranks["rank"].tolist() == [3.5, 5.0]


def test_target_ranks_keep_the_other_test_columns_and_a_custom_scenario_column():
    test = TEST.rename(columns={"scenario": "platform"}).assign(note=range(len(TEST)))
    ranks = target_ranks(fitted(), TRAIN, test, scenario_column="platform")
    assert ranks["note"].tolist() == list(range(len(TEST)))
    assert ranks["rank"].tolist() == [rank for _, rank, _, _ in EXPECTED]


def test_target_ranks_agree_with_a_direct_count_for_popularity():
    dataset, _ = synthetic(n_users=40, n_items=30, interactions_per_user=8, seed=3)
    split = dataset.split()
    model = Popularity().fit(split.train)
    ranks = target_ranks(model, split.train, split.test, batch_size=7)
    for row in ranks.itertuples():
        scores = model.score([row.user_id], row.scenario)[0]
        seen = set(split.train.loc[split.train["user_id"] == row.user_id, "item_id"]) - {row.item_id}
        others = [s for item, s in zip(model.item_ids_, scores) if item not in seen and item != row.item_id]
        target = scores[list(model.item_ids_).index(row.item_id)]
        assert row.rank == 1 + sum(s > target for s in others) + sum(s == target for s in others) / 2


def test_target_ranks_need_a_fitted_model():
    with pytest.raises(NotFittedError):
        target_ranks(FixedScores(SCORES), TRAIN, TEST)


def test_target_ranks_reject_bad_input():
    with raises("test lacks column"):
        target_ranks(fitted(), TRAIN, TEST.drop(columns="scenario"))
    with raises("no rows"):
        target_ranks(fitted(), TRAIN, TEST.iloc[:0])
    with raises("batch_size"):
        target_ranks(fitted(), TRAIN, TEST, batch_size=0)


def test_target_ranks_refuse_nan_scores():
    broken = FixedScores({"a": [[np.nan] * 5] * 2, "b": SCORES["b"]}).fit(TRAIN, items=[10, 11, 12, 13, 14])
    with raises("NaN"):
        target_ranks(broken, TRAIN, TEST)


# --- ranking_metrics and summarise ---------------------------------------------------------------------------

RANKS = pd.DataFrame({"scenario": ["a", "a", "b", "b"], "rank": [1.0, 2.0, 3.0, 11.0]})


def test_ranking_metrics_per_row():
    per_row = ranking_metrics(RANKS, ks=(1, 10))
    np.testing.assert_allclose(per_row["recall@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(per_row["ndcg@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(per_row["recall@10"], [1, 1, 1, 0])
    np.testing.assert_allclose(per_row["ndcg@10"], [1, 1 / np.log2(3), 0.5, 0])
    np.testing.assert_allclose(per_row["mrr@10"], [1, 0.5, 1 / 3, 0])
    assert per_row["scenario"].tolist() == RANKS["scenario"].tolist()


def test_ranking_metrics_count_a_tie_straddling_the_cut_off_as_a_miss():
    per_row = ranking_metrics(pd.DataFrame({"rank": [2.5]}), ks=(2, 3))
    assert per_row["recall@2"].item() == 0.0
    assert per_row["ndcg@3"].item() == pytest.approx(1 / np.log2(3.5))


@pytest.mark.parametrize("ks", [(), (0,), (10, -1), (2.5,), (True,)])
def test_ranking_metrics_need_positive_integer_cut_offs(ks):
    with raises("ks must be positive integers"):
        ranking_metrics(RANKS, ks=ks)


def test_ranking_metrics_name_the_bad_cut_off():
    with raises(r"^ranking_metrics\(ks\[1\]=\.\.\.\) must be a positive integer, got -1; ks must be positive"):
        ranking_metrics(RANKS, ks=(10, -1))


def test_ranking_metrics_need_ranks_of_at_least_one():
    with raises("ranks must be numbers >= 1"):
        ranking_metrics(pd.DataFrame({"rank": [0.0]}))
    with raises("'rank' column"):
        ranking_metrics(pd.DataFrame({"position": [1.0]}))


def test_summarise_averages_per_scenario_and_overall_with_counts():
    summary = summarise(ranking_metrics(RANKS, ks=(10,)))
    assert summary.index.tolist() == ["a", "b", "all"]
    np.testing.assert_allclose(summary["recall@10"], [1.0, 0.5, 0.75])
    np.testing.assert_allclose(summary["ndcg@10"], [(1 + 1 / np.log2(3)) / 2, 0.25, (1.5 + 1 / np.log2(3)) / 4])
    np.testing.assert_allclose(summary["mrr@10"], [0.75, 1 / 6, (1.5 + 1 / 3) / 4])
    assert summary["rows"].tolist() == [2, 2, 4]


def test_summarise_reports_the_share_of_rows_the_model_could_score():
    summary = summarise(ranking_metrics(target_ranks(fitted(), TRAIN, TEST), ks=(2,)))
    assert summary.index.tolist() == ["a", "b", "c", "all"]
    np.testing.assert_allclose(summary["known"], [0.5, 1.0, 0.0, 4 / 7])
    np.testing.assert_allclose(summary["recall@2"], [0.25, 0.0, 0.0, 1 / 7])


def test_summarise_over_several_columns_or_none():
    per_row = ranking_metrics(RANKS.assign(cold=[True, False, True, False]), ks=(10,))
    by_two = summarise(per_row, by=("scenario", "cold"))
    assert by_two.index.tolist()[-1] == ("all", "all")
    assert by_two["rows"].tolist() == [1, 1, 1, 1, 4]
    assert summarise(per_row, by=()).index.tolist() == ["all"]


def test_summarise_needs_metric_columns_and_the_grouping_columns():
    with raises("missing"):
        summarise(RANKS)
    with raises("missing"):
        summarise(ranking_metrics(RANKS), by=("platform",))


# --- item_coverage -------------------------------------------------------------------------------------------

def test_item_coverage_is_the_share_of_the_catalogue_recommended():
    recommendations = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 11, 12]})
    assert item_coverage(recommendations, 10) == pytest.approx(0.3)


def test_item_coverage_needs_the_whole_catalogue_size():
    recommendations = pd.DataFrame({"item_id": [10, 11, 12]})
    with raises("more than n_items"):
        item_coverage(recommendations, 2)
    with raises("positive integer"):
        item_coverage(recommendations, 0)


def test_candidates_restrict_the_ranking_to_a_scenarios_items():
    # scenario a ranks among items 12, 13, 14 only: user 2's target 13 then ties with 14 (12 is excluded)
    ranks = target_ranks(fitted(), TRAIN, frame([(2, 13, "a"), (1, 12, "b"), (2, 10, "a")]),
                         candidates={"a": [12, 13, 14]})
    assert ranks["rank"].tolist() == [1.5, 3.0, 5.0]
    assert ranks["n_candidates"].tolist() == [2, 3, 5]
    assert ranks["known"].tolist() == [True, True, False]  # item 10 does not compete in scenario a
    with raises("no candidate item"):
        target_ranks(fitted(), TRAIN, TEST, candidates={"a": [99]})


# --- sampled_ranks -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, n_negatives", [
    ([(1, 12, "a"), (1, 12, "b")], 2),  # user 1 has 10 and 11 excluded: 2 negatives left in each scenario
    ([(2, 13, "a")], 3),
    ([(2, 12, "b")], 4),  # the target is in training but is no negative of itself
])
def test_sampled_ranks_with_every_other_candidate_drawn_equal_the_full_ranking(rows, n_negatives):
    sampled = sampled_ranks(fitted(), TRAIN, frame(rows), n_negatives=n_negatives)
    full = target_ranks(fitted(), TRAIN, frame(rows))
    assert sampled["rank"].tolist() == full["rank"].tolist()
    assert sampled["n_candidates"].tolist() == [n_negatives + 1] * len(rows)


def test_sampled_ranks_of_the_best_and_the_worst_target_do_not_depend_on_the_draw():
    test = frame([(1, 10, "b"), (2, 14, "b")])  # 10 scores highest for user 1, 14 lowest for user 2
    for seed in range(5):
        assert sampled_ranks(fitted(), TRAIN, test, n_negatives=2, seed=seed)["rank"].tolist() == [1.0, 3.0]


def test_sampled_ranks_draw_uniformly_from_the_items_left():
    # user 2, scenario b, target 11 (score 3): of the negatives 10 (4), 13 (1), 14 (0) only 10 is higher;
    # 12 (2) is the user's own and never drawn, else the share of rank 2 would be 1/4
    ranks = sampled_ranks(fitted(), TRAIN, frame([(2, 11, "b")] * 1000), n_negatives=1)["rank"]
    assert set(ranks) == {1.0, 2.0}
    assert 0.29 < (ranks == 2.0).mean() < 0.38


def test_sampled_ranks_count_ties_half_and_give_unscorable_rows_the_worst_rank():
    ranks = sampled_ranks(fitted(), TRAIN, frame([(2, 13, "a"), (3, 10, "a"), (1, 10, "c")]), n_negatives=2)
    assert ranks["rank"].tolist() == [2.0, 3.0, 3.0]  # user 2 scores every item of a alike: 1 + 2/2
    assert ranks["known"].tolist() == [True, False, False]


def test_sampled_ranks_are_deterministic_per_seed_and_do_not_depend_on_batching():
    dataset, _ = synthetic(n_users=40, n_items=30, interactions_per_user=8, seed=3)
    split = dataset.split()
    model = Popularity().fit(split.train)
    first = sampled_ranks(model, split.train, split.test, n_negatives=10, seed=7)
    assert first.equals(sampled_ranks(model, split.train, split.test, n_negatives=10, seed=7, batch_size=3))
    assert not first["rank"].equals(sampled_ranks(model, split.train, split.test, n_negatives=10, seed=8)["rank"])
    assert (first["rank"] <= 11).all() and (first["n_candidates"] == 11).all()
    assert set(ranking_metrics(first, ks=(1, 5, 10)).columns) >= {"recall@1", "ndcg@5", "ndcg@10"}


def test_sampled_ranks_keep_to_the_scenarios_candidates():
    test = frame([(2, 13, "a"), (2, 10, "a")])
    ranks = sampled_ranks(fitted(), TRAIN, test, n_negatives=1, candidates={"a": [12, 13, 14]})
    assert ranks["rank"].tolist() == [1.5, 2.0]  # only 14 is left to draw: a tie; 10 does not compete
    assert ranks["known"].tolist() == [True, False]


def test_sampled_ranks_refuse_too_few_candidates_and_bad_settings():
    with raises("scenario 'a' has 5 candidate items"):
        sampled_ranks(fitted(), TRAIN, TEST, n_negatives=5)
    with raises("scenario 'a' has 3 candidate items"):
        sampled_ranks(fitted(), TRAIN, TEST, n_negatives=3, candidates={"a": [12, 13, 14]})
    with raises("user 1 has 2 items left"):
        sampled_ranks(fitted(), TRAIN, frame([(1, 12, "b")]), n_negatives=4)
    for settings in ({"n_negatives": 0}, {"n_negatives": 2.5}, {"seed": -1}, {"batch_size": 0}):
        with raises("must be an integer"):
            sampled_ranks(fitted(), TRAIN, TEST, **settings)
    with raises("no rows"):
        sampled_ranks(fitted(), TRAIN, TEST.iloc[:0])
    with pytest.raises(NotFittedError):
        sampled_ranks(FixedScores(SCORES), TRAIN, TEST)
    broken = FixedScores({"a": [[np.nan] * 5] * 2, "b": SCORES["b"]}).fit(TRAIN, items=[10, 11, 12, 13, 14])
    with raises("NaN"):
        sampled_ranks(broken, TRAIN, TEST, n_negatives=2)


def test_tables_read_in_the_datasets_scenario_order_with_all_last():
    from xscene_lib.evaluation import in_scenario_order

    flat = pd.DataFrame([[1, 2, 3, 4, 5]], columns=["25-34", "all", "<25", "extra", ">=35"])
    assert list(in_scenario_order(flat, ["<25", "25-34", ">=35"]).columns) == ["<25", "25-34", ">=35", "all", "extra"]
    wide = pd.DataFrame([range(6)], columns=pd.MultiIndex.from_product(
        [["ndcg@10", "recall@10"], ["all", "kitchen", "food"]], names=[None, "scenario"]))
    ordered = in_scenario_order(wide, ["food", "kitchen"])
    assert list(ordered.columns) == [(m, s) for m in ("ndcg@10", "recall@10") for s in ("food", "kitchen", "all")]
    assert ordered[("recall@10", "kitchen")].item() == 4  # values move with their columns
    with pytest.raises(DataError, match="column level named 'scenario'"):
        in_scenario_order(wide.rename_axis(columns=["metric", "slice"]), ["food"])
