"""The tie-aware ranking kernel against a brute-force count, on small integer scores full of ties."""

import numpy as np
import pytest
import scipy.sparse as sp

from xscene_lib.data import DataError
from xscene_lib.evaluation import rank_among, tie_aware_ranks


def brute_force(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> tuple[list[float], list[int]]:
    """Rank and candidate count of each row's target, one item at a time; excluded items (not the target) left out."""
    ranks, counts = [], []
    for row, target in enumerate(targets):
        rivals = [scores[row, item] for item in range(scores.shape[1]) if item != target and not excluded[row, item]]
        mine = scores[row, target]
        ranks.append(1 + sum(s > mine for s in rivals) + sum(s == mine for s in rivals) / 2)
        counts.append(len(rivals) + 1)
    return ranks, counts


def problem(seed: int, n_rows: int = 40, n_items: int = 25, density: float = 0.3):
    """Scores 0..3 (many ties), a target per row, and an exclusion mask that sometimes covers the target."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(n_rows, n_items)).astype(np.float32)  # (n_rows, n_items)
    targets = rng.integers(0, n_items, size=n_rows)  # (n_rows,)
    excluded = rng.random((n_rows, n_items)) < density  # (n_rows, n_items)
    return scores, targets, excluded


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("form", ["none", "dense", "csr", "coo with duplicates"])
def test_full_ranks_agree_with_a_brute_force_count(seed, form):
    scores, targets, excluded = problem(seed)
    if form == "none":
        excluded[:] = False
    assert excluded[np.arange(len(targets)), targets].any() or form == "none"  # the target-excluded case is covered
    given = {"none": None, "dense": excluded, "csr": sp.csr_matrix(excluded.astype(np.float32))}.get(form)
    if form == "coo with duplicates":
        rows, columns = np.nonzero(excluded)
        given = sp.coo_matrix((np.ones(2 * len(rows)), (np.r_[rows, rows], np.r_[columns, columns])),
                              shape=excluded.shape)
    before = scores.copy()
    ranks, counts = tie_aware_ranks(scores, targets, given)
    expected_ranks, expected_counts = brute_force(scores, targets, excluded)
    assert ranks.tolist() == expected_ranks
    assert counts.tolist() == expected_counts
    assert ranks.dtype == np.float64 and counts.dtype == np.int64
    np.testing.assert_array_equal(scores, before)  # the scores are left as they were


def test_explicitly_stored_zeros_do_not_exclude():
    scores = np.array([[1.0, 2.0, 3.0]])
    stored_zero = sp.csr_matrix((np.array([0.0]), (np.array([0]), np.array([2]))), shape=(1, 3))
    assert stored_zero.nnz == 1
    ranks, counts = tie_aware_ranks(scores, np.array([0]), stored_zero)
    assert ranks.tolist() == [3.0] and counts.tolist() == [3]


@pytest.mark.parametrize("seed", range(5))
def test_sampled_ranks_agree_with_a_brute_force_count(seed):
    scores, targets, excluded = problem(seed, n_items=12)
    rng = np.random.default_rng(seed)
    target_scores = scores[np.arange(len(targets)), targets]  # (n_rows,)
    rivals = rng.integers(0, 4, size=(len(targets), 7)).astype(np.float32)  # (n_rows, n_rivals)
    expected = [1 + (row > t).sum() + (row == t).sum() / 2 for t, row in zip(target_scores, rivals)]
    assert rank_among(target_scores, rivals).tolist() == expected


def test_sampled_ranks_equal_full_ranks_when_the_rivals_are_every_other_item():
    scores, targets, _ = problem(0)
    rivals = np.stack([np.delete(row, target) for row, target in zip(scores, targets)])  # (n_rows, n_items - 1)
    full, _ = tie_aware_ranks(scores, targets)
    np.testing.assert_array_equal(rank_among(scores[np.arange(len(targets)), targets], rivals), full)


def test_a_nan_rival_is_neither_higher_nor_tied():
    scores = np.array([[1.0, np.nan, 1.0, 2.0]])
    assert tie_aware_ranks(scores, np.array([0]))[0].tolist() == [2.5]
    assert rank_among(np.array([1.0]), scores[:, 1:]).tolist() == [2.5]


def test_tie_breaking_bounds_hold_for_constant_and_distinct_scores():
    n_items = 9
    ranks, counts = tie_aware_ranks(np.zeros((n_items, n_items)), np.arange(n_items))
    assert (ranks == (n_items + 1) / 2).all() and (counts == n_items).all()  # all tied: the middle
    ranks, _ = tie_aware_ranks(np.tile(np.arange(n_items, 0, -1.0), (n_items, 1)), np.arange(n_items))
    assert ranks.tolist() == list(range(1, n_items + 1))  # distinct: the position


def test_bad_shapes_and_targets_are_rejected():
    scores = np.zeros((2, 3))
    with pytest.raises(DataError, match="shape"):
        tie_aware_ranks(scores[0], np.array([0]))
    with pytest.raises(DataError, match="one target per row"):
        tie_aware_ranks(scores, np.array([0]))
    with pytest.raises(DataError, match="column indices between 0 and 2"):
        tie_aware_ranks(scores, np.array([0, 3]))
    with pytest.raises(DataError, match="column indices"):
        tie_aware_ranks(scores, np.array([0.0, 1.0]))
    with pytest.raises(DataError, match="excluded must have the shape of scores"):
        tie_aware_ranks(scores, np.array([0, 1]), np.zeros((2, 4), bool))
    with pytest.raises(DataError, match="rival_scores of shape"):
        rank_among(np.zeros(2), np.zeros((3, 4)))
