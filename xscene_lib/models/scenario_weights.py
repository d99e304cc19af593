"""Scenario weights: how a blended list ranks held-out items, and fixed weights chosen on validation.

`Recommender.recommend` blends a user's per-scenario scores with weights (chapter 3.2.4). Two questions
follow. How good is a blend? `blended_ranks` gives the full-ranking rank of each held-out item under the
blended scores, with the user's seen items left out, in the format of `metrics.target_ranks`, so
`metrics.ranking_metrics` and the bootstrap intervals apply unchanged. Which fixed weights are best?
`tune_scenario_weights` tries weight vectors on the simplex and keeps the one with the best validation NDCG.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from xscene_lib.data.validation import (DataError, check_int, check_number, check_positive_int, checked_ids,
                                        require_columns)
from xscene_lib.evaluation.metrics import ranking_metrics
from xscene_lib.evaluation.ranking import tie_aware_ranks
from xscene_lib.models.base import TRAIN_COLUMNS, USER_CHUNK, Recommender

MOST_CANDIDATES = 256  # weight vectors tried at most; beyond, a seeded sample of the simplex grid


def blended_ranks(model: Recommender, targets: pd.DataFrame, seen: Iterable[pd.DataFrame] = (),
                  scenario_weights: Mapping[str, float] | str | None = None) -> pd.DataFrame:
    """The rows of `targets` with the rank of each item among all candidates under the blended scores.

    Items a user has in any frame of `seen` (e.g. the training and validation interactions) do not
    compete, except the target itself; ties count half, as in `metrics.target_ranks`. Adds `rank`,
    `known` (the model knows the item) and `n_candidates`.
    """
    model._check_fitted()
    require_columns(targets, ("user_id", "item_id"), "targets")
    if targets.empty:
        raise DataError("targets has no rows, so there is nothing to rank; check the split")
    _check_id_columns("blended_ranks", "targets", targets)
    excluded = _seen_items(model, seen, np.unique(targets["user_id"].to_numpy(np.int64)))
    return _ranks(model, targets, excluded, scenario_weights)


def _ranks(model: Recommender, targets: pd.DataFrame, excluded: sp.csr_matrix,
           scenario_weights: Mapping[str, float] | str | None) -> pd.DataFrame:
    """blended_ranks with the users' excluded items already looked up (`_seen_items` of the targets' users)."""
    n_items = len(model.item_ids_)
    users = targets["user_id"].to_numpy(np.int64)
    listed = np.unique(users)  # the rows of `excluded`
    items = pd.Index(model.item_ids_).get_indexer(targets["item_id"].to_numpy(np.int64))  # (n_rows,), -1: unknown
    rank, counts = np.full(len(targets), float(n_items)), np.full(len(targets), n_items, dtype=np.int64)
    known = items >= 0
    unique_users = np.unique(users[known])
    for start in range(0, len(unique_users), USER_CHUNK):
        chunk = unique_users[start:start + USER_CHUNK]
        scores = model.blended_scores(chunk, scenario_weights)  # (B, n_items)
        rows = np.flatnonzero(known & np.isin(users, chunk))
        for part in range(0, len(rows), USER_CHUNK):  # at most USER_CHUNK rows of scores gathered at once
            batch = rows[part:part + USER_CHUNK]
            rank[batch], counts[batch] = tie_aware_ranks(scores[np.searchsorted(chunk, users[batch])], items[batch],
                                                         excluded[np.searchsorted(listed, users[batch])])
    ranked = targets.reset_index(drop=True).copy()
    ranked["rank"], ranked["known"], ranked["n_candidates"] = rank, known, counts
    return ranked


def _seen_items(model: Recommender, seen: Iterable[pd.DataFrame], users: np.ndarray) -> sp.csr_matrix:
    """Which of the model's items each of `users` (sorted, distinct) has in the `seen` frames.

    shape: (len(users), n_items), 1 where seen.
    """
    if isinstance(seen, pd.DataFrame):
        raise DataError("seen must be a list of frames, e.g. [split.train, split.valid]; wrap one frame: [train]")
    frames = [frame for frame in seen]
    for number, frame in enumerate(frames):
        require_columns(frame, ("user_id", "item_id"), f"seen[{number}]")
        _check_id_columns("blended_ranks", f"seen[{number}]", frame)
    if not frames:
        return sp.csr_matrix((len(users), len(model.item_ids_)), dtype=np.float32)
    pairs = pd.concat([frame[["user_id", "item_id"]] for frame in frames], ignore_index=True)
    rows = pd.Index(users).get_indexer(pairs["user_id"].to_numpy(np.int64))  # (n_pairs,), -1: not among users
    columns = pd.Index(model.item_ids_).get_indexer(pairs["item_id"].to_numpy(np.int64))  # (n_pairs,), -1: unknown
    both = (rows >= 0) & (columns >= 0)
    matrix = sp.csr_matrix((np.ones(int(both.sum()), np.float32), (rows[both], columns[both])),
                           shape=(len(users), len(model.item_ids_)))
    matrix.data[:] = 1.0
    return matrix


def _check_id_columns(owner: str, what: str, frame: pd.DataFrame) -> None:
    """A DataError naming the column and row position of the first user or item id that is not an integer."""
    for column in ("user_id", "item_id"):
        checked_ids(owner, f"{what}['{column}']", frame[column], hint="ids are integers, as in the training data")


def simplex_grid(n_scenarios: int, grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> np.ndarray:
    """Every weight vector whose entries are grid values summing to one. shape: (n_candidates, n_scenarios)."""
    check_positive_int("simplex_grid", "n_scenarios", n_scenarios)
    if isinstance(grid, (str, bytes, Mapping)) or not isinstance(grid, Iterable) or _ndim(grid) != 1:
        raise DataError(f"grid must be a list of weights between 0 and 1, e.g. (0.0, 0.25, 0.5, 0.75, 1.0); "
                        f"got {grid!r:.120}")
    for position, value in enumerate(grid):
        check_number(None, f"grid[{position}]", value, minimum=0, maximum=1,
                     hint="grid must hold weights between 0 and 1, e.g. (0.0, 0.25, 0.5, 0.75, 1.0)")
    values = np.unique(np.asarray(grid, dtype=np.float64).reshape(-1))
    if values.size == 0 or not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise DataError(f"grid must hold weights between 0 and 1, e.g. (0.0, 0.25, 0.5, 0.75, 1.0); got {grid!r}")
    positive = values[values > 0]
    step = positive.min() if positive.size else 1.0
    total = int(round(1.0 / step))
    multiples = np.round(values / step)
    if not positive.size or not np.isclose(total * step, 1.0) or not np.allclose(multiples * step, values):
        return _simplex_by_product(values, n_scenarios)  # not evenly spaced: filter the full product
    allowed = set(multiples.astype(int).tolist())
    vectors = [parts for parts in _compositions(total, n_scenarios) if set(parts) <= allowed]
    return np.array(vectors, dtype=np.float64).reshape(-1, n_scenarios) / total


def _ndim(values: object) -> int:
    """The number of dimensions of a nested list, 0 for one that is ragged or not a list."""
    try:
        return np.ndim(values)
    except ValueError:
        return 0


def _compositions(total: int, parts: int) -> Iterable[tuple[int, ...]]:
    """All tuples of `parts` non-negative integers summing to `total` (stars and bars)."""
    for bars in itertools.combinations(range(total + parts - 1), parts - 1):
        edges = (-1, *bars, total + parts - 1)
        yield tuple(edges[i + 1] - edges[i] - 1 for i in range(parts))


def _simplex_by_product(values: np.ndarray, n_scenarios: int) -> np.ndarray:
    """The grid vectors summing to one, for grids that are not multiples of one step (small cases only)."""
    if len(values) ** n_scenarios > 1_000_000:
        raise DataError(f"a grid of {len(values)} irregular values over {n_scenarios} scenarios is too large to "
                        f"enumerate; use evenly spaced values such as (0.0, 0.25, 0.5, 0.75, 1.0)")
    combos = np.stack(np.meshgrid(*[values] * n_scenarios, indexing="ij"), axis=-1).reshape(-1, n_scenarios)
    return combos[np.isclose(combos.sum(axis=1), 1.0)]


def tune_scenario_weights(model: Recommender, train: pd.DataFrame, valid: pd.DataFrame,
                          grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), k: int = 10,
                          most_candidates: int = MOST_CANDIDATES, seed: int = 0) -> dict[str, float]:
    """Fixed scenario weights from the simplex grid that maximise the validation NDCG@k of the blend.

    The candidates are the weight vectors of grid values summing to one; when there are more than
    `most_candidates`, a seeded sample of them is tried, always with the uniform weights and each single
    scenario. Validation rows whose item is in the user's `train` history are left out; ties go to the
    first candidate tried.
    """
    model._check_fitted()
    for name, value in (("k", k), ("most_candidates", most_candidates)):
        check_positive_int("tune_scenario_weights", name, value)
    check_int("tune_scenario_weights", "seed", seed, minimum=0)
    for what, frame in (("train", train), ("valid", valid)):
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{what} must be a DataFrame with columns {list(TRAIN_COLUMNS)}")
        require_columns(frame, TRAIN_COLUMNS, what)
        _check_id_columns("tune_scenario_weights", what, frame)
    names = model.scenarios_
    candidates = _candidates(simplex_grid(len(names), grid), len(names), most_candidates, seed)
    seen = pd.MultiIndex.from_frame(train[["user_id", "item_id"]])
    targets = valid.loc[~pd.MultiIndex.from_frame(valid[["user_id", "item_id"]]).isin(seen), ["user_id", "item_id"]]
    if targets.empty:
        raise DataError("every validation item is already in its user's training history; nothing to tune on")

    excluded = _seen_items(model, [train], np.unique(targets["user_id"].to_numpy(np.int64)))  # once for all

    def validation_ndcg(weights: np.ndarray) -> float:
        ranks = _ranks(model, targets, excluded, dict(zip(names, weights.tolist())))
        return float(ranking_metrics(ranks, ks=(k,))[f"ndcg@{k}"].mean())

    best = max(candidates, key=validation_ndcg)
    return {name: float(weight) for name, weight in zip(names, best)}


def _candidates(simplex: np.ndarray, n_scenarios: int, most: int, seed: int) -> np.ndarray:
    """The weight vectors to try: the whole grid, or a seeded sample of it with uniform and the corners."""
    if len(simplex) == 0:
        raise DataError(f"no combination of grid values sums to one over {n_scenarios} scenarios; "
                        f"include 0 and 1, or steps such as 0.25")
    if len(simplex) <= most:
        return simplex
    anchors = np.vstack([np.full(n_scenarios, 1.0 / n_scenarios), np.eye(n_scenarios)])
    picked = np.random.default_rng(seed).choice(len(simplex), size=max(most - len(anchors), 0), replace=False)
    return np.vstack([anchors, simplex[np.sort(picked)]])[:max(most, len(anchors))]
