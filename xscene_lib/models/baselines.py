"""Baselines that every trained model must beat: popularity, item-item neighbours, and text zero-shot.

All three follow the estimator contract of `xscene_lib.models.base.Recommender` (fit on raw ids, score in one
scenario, blend scenarios in `recommend`):

- `Popularity`: an item's training count, in the scenario asked (or over all scenarios).
- `ItemKNN`: the sum of an item's cosine similarities to the user's training items, with only each item's
  `num_neighbours` most similar items kept. It learns from all training interactions together, so its
  scores are the same in every scenario; scenario weights then change nothing.
- `TextZeroShot`: the cosine between an item's text vector and the user's profile, the mean of the
  (L2-normalised) text vectors of the items the user has in training in the scenario asked. A user with no
  training items in that scenario gets the profile of their whole history. Nothing is trained, and items
  never seen in training are scored like any other, since they have text.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import scipy.sparse as sp

from xscene_lib.data.validation import DataError, check_flag, check_number, check_positive_int
from xscene_lib.models.base import Recommender
from xscene_lib.data.synthetic import SyntheticTruth

SIMILARITY_BLOCK = 2**24  # item pairs (n_items x columns) pruned at once by ItemKNN, bounding memory


class Popularity(Recommender):
    """Scores an item by how often it occurs in training, per scenario or over all scenarios."""

    def __init__(self, per_scenario: bool = True) -> None:
        self.per_scenario = per_scenario

    def _check_params(self) -> None:
        check_flag("Popularity", "per_scenario", self.per_scenario)

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        counts = self.popularity_  # (n_scenarios, n_items)
        if not self.per_scenario:
            counts = np.broadcast_to(counts.sum(axis=0), counts.shape)
        self.counts_ = np.array(counts, dtype=np.float32)  # (n_scenarios, n_items)

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """The scenario's counts, the same row for every user. shape: (n_users, n_items)."""
        return np.repeat(self.counts_[scenario_index][None, :], len(user_index), axis=0)


class ItemKNN(Recommender):
    """Scores an item by its cosine similarity to the user's training items (scenario-agnostic)."""

    def __init__(self, num_neighbours: int = 100, shrink: float = 0.0) -> None:
        self.num_neighbours = num_neighbours
        self.shrink = shrink

    def _check_params(self) -> None:
        check_positive_int("ItemKNN", "num_neighbours", self.num_neighbours)
        check_number("ItemKNN", "shrink", self.shrink, positive=False)

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        interactions = self.seen_.tocsc()  # (n_users, n_items), binary
        co_occurrence = (interactions.T @ interactions).tocsc()  # (n_items, n_items), sparse
        norms = np.sqrt(co_occurrence.diagonal().astype(np.float64))  # (n_items,)
        n_items = co_occurrence.shape[0]
        width = max(1, SIMILARITY_BLOCK // n_items)
        blocks = []
        for start in range(0, n_items, width):
            block = co_occurrence[:, start:start + width].tocoo()  # (n_items, width), sparse
            neighbours, targets = block.row, block.col + start
            cosine = block.data / (norms[neighbours] * norms[targets] + self.shrink)
            useful = (neighbours != targets) & (cosine > 0)  # no item is its own neighbour
            blocks.append(_strongest_per_column(neighbours[useful], block.col[useful], cosine[useful],
                                                self.num_neighbours, block.shape))
        self.similarity_ = sp.hstack(blocks, format="csr")  # (n_items, n_items), [j, i]: j as neighbour of i

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """Training history times the similarities. shape: (n_users, n_items)."""
        return (self.seen_[user_index] @ self.similarity_).toarray()


def _strongest_per_column(rows: np.ndarray, columns: np.ndarray, values: np.ndarray, keep: int,
                          shape: tuple[int, int]) -> sp.csc_matrix:
    """The `keep` largest entries of each column (ties to the lower row) of a sparse matrix given as triplets.

    The triplets come in column order, as from a CSC matrix. shape: `shape`, (n_items, n_columns): entry
    [j, i] is item j's weight as a neighbour of item i.
    """
    starts = np.searchsorted(columns, np.arange(shape[1] + 1))  # (n_columns + 1,)
    weakest_kept = np.full(shape[1], -np.inf)  # (n_columns,)
    for column in np.flatnonzero(np.diff(starts) > keep):
        segment = values[starts[column]:starts[column + 1]]
        weakest_kept[column] = np.partition(segment, len(segment) - keep)[len(segment) - keep]
    contenders = values >= weakest_kept[columns]  # the strongest `keep`, plus whatever ties the weakest of them
    rows, columns, values = rows[contenders], columns[contenders], values[contenders]
    order = np.lexsort((rows, -values, columns))  # by column, then strongest first, then lower row
    rows, columns, values = rows[order], columns[order], values[order]
    kept = np.arange(len(columns)) - np.searchsorted(columns, columns) < keep
    return sp.csc_matrix((values[kept].astype(np.float32), (rows[kept], columns[kept])), shape=shape)


class TextZeroShot(Recommender):
    """Scores an item by the cosine between its text vector and the mean text vector of the user's history."""

    needs_item_vectors = True

    def __init__(self) -> None:
        pass

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        self.item_vectors_ = _unit_rows(item_vectors)  # (n_items, d)
        n_users, n_items = self.seen_.shape
        whole_history = _unit_rows(self.seen_ @ self.item_vectors_)  # (n_users, d)
        profiles = []
        for scenario in range(len(self.scenarios_)):
            mask = scenarios == scenario
            history = sp.csr_matrix((np.ones(int(mask.sum()), np.float32), (users[mask], items[mask])),
                                    shape=(n_users, n_items))  # (n_users, n_items)
            history.data[:] = 1.0
            in_scenario = _unit_rows(history @ self.item_vectors_)  # (n_users, d)
            has_history = np.asarray(history.sum(axis=1)).ravel() > 0  # (n_users,)
            profiles.append(np.where(has_history[:, None], in_scenario, whole_history))
        self.user_profiles_ = np.stack(profiles).astype(np.float32)  # (n_scenarios, n_users, d), unit rows

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """Cosine of each user's profile in the scenario with every item. shape: (n_users, n_items)."""
        return self.user_profiles_[scenario_index][user_index] @ self.item_vectors_.T


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm; all-zero rows stay zero. shape: same as `vectors`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class TrueAffinity(Recommender):
    """The planted true affinity in the scenario asked, as a model: the ceiling on synthetic data.

    Items of one topic share their affinity; ties are broken at random, once per user, so the target's rank is
    a draw among its equals rather than the middle of the tie.
    """

    def __init__(self, truth: SyntheticTruth, seed: int = 0) -> None:
        self.truth = truth
        self.seed = seed

    def _check_params(self) -> None:
        if not isinstance(self.truth, SyntheticTruth):
            raise DataError(f"TrueAffinity needs the SyntheticTruth from synthetic(), got {type(self.truth).__name__}")

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        self.tie_break_ = np.random.default_rng(self.seed).random((len(self.user_ids_), len(self.item_ids_)))

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """Each item's place in the user's order by affinity, then tie-break. shape: (B, n_items)."""
        affinity = self.truth.affinity(self.scenarios_[scenario_index])[self.user_ids_[user_index]][:, self.item_ids_]
        order = np.lexsort((self.tie_break_[user_index], affinity))  # (B, n_items)
        return np.argsort(order, axis=1).astype(np.float32)  # exact in float32, unlike added noise
