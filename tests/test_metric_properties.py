"""Properties of target_ranks and ranking_metrics that hold for any scores and ranks."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xscene_lib.evaluation import ranking_metrics, target_ranks
from xscene_lib.models import Recommender

FEW = settings(max_examples=50, deadline=None)
KS = (1, 2, 3, 5, 10, 20)


class FixedScores(Recommender):
    """A model whose scores are given: scenario -> (n_users, n_items) in the order of user_ids_, item_ids_."""

    def __init__(self, scores: dict[str, np.ndarray]) -> None:
        self.scores = scores

    def _fit(self, users, items, scenarios, train, item_vectors) -> None:
        pass

    def _score(self, user_index, scenario_index):
        return np.asarray(self.scores[self.scenarios_[scenario_index]], dtype=np.float32)[user_index]


def fitted(scores: np.ndarray, train: pd.DataFrame) -> FixedScores:
    """FixedScores of one scenario "a" over users 0.. and items 0.., fitted on `train`."""
    n_users, n_items = scores.shape
    return FixedScores({"a": scores}).fit(train, items=range(n_items))


def rows(pairs) -> pd.DataFrame:
    return pd.DataFrame([(user, item, "a") for user, item in pairs], columns=["user_id", "item_id", "scenario"])


@st.composite
def ranking_problems(draw, max_users: int = 4, max_items: int = 7):
    """A score matrix with ties, each user's training items (at least one) and one test target per user."""
    n_users = draw(st.integers(1, max_users))
    n_items = draw(st.integers(2, max_items))
    scores = np.array(draw(st.lists(st.lists(st.integers(0, 3), min_size=n_items, max_size=n_items),
                                    min_size=n_users, max_size=n_users)), dtype=np.float32)
    seen = [draw(st.sets(st.integers(0, n_items - 1), min_size=1)) for _ in range(n_users)]
    targets = [draw(st.integers(0, n_items - 1)) for _ in range(n_users)]
    return scores, seen, targets


def brute_force_rank(scores: np.ndarray, seen: set[int], target: int) -> float:
    """1 + candidates scored higher + half of those scored equally, the user's seen items (not the target) left out."""
    others = [scores[item] for item in range(len(scores)) if item != target and item not in seen]
    return 1 + sum(s > scores[target] for s in others) + sum(s == scores[target] for s in others) / 2


@FEW
@given(ranking_problems())
def test_target_ranks_agree_with_a_brute_force_count(problem):
    scores, seen, targets = problem
    train = rows([(user, item) for user, items in enumerate(seen) for item in sorted(items)])
    ranks = target_ranks(fitted(scores, train), train, rows(enumerate(targets)), batch_size=2)
    expected = [brute_force_rank(scores[user], seen[user], target) for user, target in enumerate(targets)]
    assert ranks["rank"].tolist() == expected
    assert ranks["n_candidates"].tolist() == [len(scores[0]) - len(s - {t}) for s, t in zip(seen, targets)]


@FEW
@given(ranking_problems())
def test_a_target_scored_highest_scores_one_at_every_cut_off(problem):
    scores, seen, targets = problem
    for user, target in enumerate(targets):
        scores[user, target] = scores.max() + 1
    train = rows([(user, item) for user, items in enumerate(seen) for item in sorted(items)])
    per_row = ranking_metrics(target_ranks(fitted(scores, train), train, rows(enumerate(targets))), ks=KS)
    for k in KS:
        for metric in ("recall", "ndcg", "mrr"):
            assert (per_row[f"{metric}@{k}"] == 1.0).all()


half_steps = st.integers(2, 400).map(lambda twice: twice / 2)  # ranks 1, 1.5, 2, ... as ties produce


@FEW
@given(st.lists(half_steps, min_size=1, max_size=30), st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_metrics_lie_in_the_unit_interval_and_ndcg_never_exceeds_recall(ranks, ks):
    per_row = ranking_metrics(pd.DataFrame({"rank": ranks}), ks=ks)
    for k in ks:
        recall, ndcg, mrr = (per_row[f"{metric}@{k}"].to_numpy() for metric in ("recall", "ndcg", "mrr"))
        for values in (recall, ndcg, mrr):
            assert ((values >= 0) & (values <= 1)).all()
        assert (ndcg <= recall).all()
        assert (mrr <= ndcg + 1e-12).all()  # 1/r <= 1/log2(r + 1) for r >= 1


@FEW
@given(st.lists(half_steps, min_size=1, max_size=30))
def test_recall_never_falls_as_the_cut_off_grows(ranks):
    per_row = ranking_metrics(pd.DataFrame({"rank": ranks}), ks=KS)
    recalls = per_row[[f"recall@{k}" for k in KS]].to_numpy()  # (n_rows, n_ks)
    assert (np.diff(recalls, axis=1) >= 0).all()


def test_random_scores_give_recall_at_k_of_k_over_n_on_average():
    n_users, n_items = 3000, 20
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(n_users, n_items))
    targets = rng.integers(0, n_items, size=n_users)
    train = rows([(user, 0) for user in range(n_users)])
    test = rows(zip(range(n_users), targets))
    per_row = ranking_metrics(target_ranks(fitted(scores, train), train.iloc[:0], test), ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert per_row[f"recall@{k}"].mean() == pytest.approx(k / n_items, abs=0.03)


def test_ties_counted_half_keep_the_mean_rank_of_random_scores_in_the_middle():
    n_users, n_items = 3000, 10
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(n_users, n_items)).astype(np.float32)  # many ties
    train = rows([(user, 0) for user in range(n_users)])
    test = rows(zip(range(n_users), rng.integers(0, n_items, size=n_users)))
    ranks = target_ranks(fitted(scores, train), train.iloc[:0], test)["rank"]
    assert ranks.mean() == pytest.approx((n_items + 1) / 2, abs=0.15)
