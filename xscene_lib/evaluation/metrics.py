"""Top-K evaluation: the rank of each held-out item under full ranking, ranking metrics, summaries, coverage.

`target_ranks` ranks every test row's target item against all of the model's candidate items in that row's
scenario, leaving out the items the user already has in `train` (the target itself is never left out).
`train` is normally the frame the model was fitted on, which leaves out exactly `model.seen_`; pass
training and validation rows together to leave out both.
A target tied with other candidates gets the mean of the positions the tie spans,

    rank = 1 + (candidates scored strictly higher) + (other candidates scored equally) / 2,

which is its expected rank when ties are broken at random, so a model that scores everything alike gets no
credit for luck (`ranking.tie_aware_ranks` counts it). A test row the model cannot score (user not in
training, item not a candidate, scenario not seen in training) is kept, marked `known=False` and given the
worst rank, the number of candidates: it counts as a miss instead of silently leaving the average.

`sampled_ranks` is the looser protocol of some papers: the target against a fixed number of random negatives
from its scenario's candidates (the user's items left out), with ties and unscorable rows treated alike.

`ranking_metrics` turns ranks into per-row metrics at each cut-off k; each test row has a single target, so
recall@k equals the hit rate HR@k. `summarise` averages them per scenario (or any other columns) and overall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from xscene_lib.data.validation import DataError, check_int, check_positive_int, require_columns
from xscene_lib.evaluation.ranking import rank_among, tie_aware_ranks

if TYPE_CHECKING:
    from xscene_lib.models.base import Recommender

TARGET_COLUMNS = ("user_id", "item_id")
OVERALL = "all"  # the label of the row that summarises every test row


def target_ranks(model: Recommender, train: pd.DataFrame, test: pd.DataFrame, *, scenario_column: str = "scenario",
                 batch_size: int = 1024, candidates: Mapping[str, Sequence[int]] | None = None) -> pd.DataFrame:
    """The test rows with the full-ranking rank of each target item; adds rank, known and n_candidates.

    `candidates` (scenario -> item ids) restricts the ranking in a scenario to those items, e.g. to the
    target's own domain on food-kitchen; by default every candidate item of the model competes.
    """
    _fail_if_lacking(test, "test", (*TARGET_COLUMNS, scenario_column))
    _fail_if_lacking(train, "train", TARGET_COLUMNS)
    check_positive_int("target_ranks", "batch_size", batch_size, hint="the users scored at once, e.g. 1024")
    users = model.user_index(test["user_id"].to_numpy())  # (n_rows,), -1 when unknown; fails if unfitted
    n_items = len(model.item_ids_)
    targets = pd.Index(model.item_ids_).get_indexer(test["item_id"].to_numpy())  # (n_rows,), -1 when unknown
    scenarios = test[scenario_column].astype("str").to_numpy()
    excluded = _excluded_items(model, train)  # (n_users, n_items), sparse
    outside = _outside_candidates(model, candidates)  # scenario -> (n_items,) bool, True = not competing
    rank = np.full(len(test), float(n_items))
    counts = np.full(len(test), n_items, dtype=np.int64)
    known = (users >= 0) & (targets >= 0) & np.isin(scenarios, model.scenarios_)
    for scenario, mask in outside.items():  # a target outside its scenario's candidates cannot be ranked
        known &= ~((scenarios == scenario) & mask[np.maximum(targets, 0)])
    for scenario in np.unique(scenarios[known]):
        rows = np.flatnonzero(known & (scenarios == scenario))
        rows = rows[np.argsort(users[rows], kind="stable")]  # a user's rows fall in one batch
        for batch in _user_batches(users[rows], batch_size):
            batch_rows = rows[batch]
            rank[batch_rows], counts[batch_rows] = _ranks_in_batch(
                model, scenario, users[batch_rows], targets[batch_rows], excluded, outside.get(scenario))
    ranked = test.reset_index(drop=True).copy()
    ranked["rank"], ranked["known"], ranked["n_candidates"] = rank, known, counts
    return ranked


def _fail_if_lacking(frame: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
    require_columns(frame, columns, what)
    if what == "test" and frame.empty:
        raise DataError("test has no rows, so there is nothing to rank; check the split")


def _excluded_items(model: Recommender, train: pd.DataFrame) -> sp.csr_matrix:
    """Which candidates each known user has in `train`. shape: (n_users, n_items), 1 where excluded."""
    users = model.user_index(train["user_id"].to_numpy())
    items = pd.Index(model.item_ids_).get_indexer(train["item_id"].to_numpy())
    both = (users >= 0) & (items >= 0)
    excluded = sp.csr_matrix((np.ones(int(both.sum()), np.float32), (users[both], items[both])),
                             shape=(len(model.user_ids_), len(model.item_ids_)))
    excluded.data[:] = 1.0
    return excluded


def _user_batches(sorted_users: np.ndarray, batch_size: int) -> list[slice]:
    """Slices of rows, sorted by user, that hold at most `batch_size` distinct users each."""
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])  # first row of each user
    bounds = np.r_[starts[::batch_size], len(sorted_users)]
    return [slice(begin, end) for begin, end in zip(bounds[:-1], bounds[1:])]


def _outside_candidates(model: Recommender, candidates: Mapping[str, Sequence[int]] | None) -> dict[str, np.ndarray]:
    """For each scenario given, which of the model's items do not compete. shape of each: (n_items,)."""
    if candidates is None:
        return {}
    if not isinstance(candidates, Mapping):
        raise DataError("candidates must map a scenario to the item ids that compete in it")
    masks = {}
    for scenario, items in candidates.items():
        allowed = np.isin(model.item_ids_, np.asarray(list(items), dtype=np.int64))
        if not allowed.any():
            raise DataError(f"no candidate item of scenario {scenario!r} is known to the model; "
                            f"fit with items= covering them")
        masks[str(scenario)] = ~allowed
    return masks


def _ranks_in_batch(model: Recommender, scenario: str, users: np.ndarray, targets: np.ndarray,
                    excluded: sp.csr_matrix, outside: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rank and number of candidates for test rows given as user and target indices, one scenario."""
    batch_users, row_of = np.unique(users, return_inverse=True)
    scores = _checked_scores(model, batch_users, scenario)  # (n_batch_users, n_items)
    out = excluded[users]  # (n_rows, n_items), sparse
    if outside is not None:  # only the scenario's candidates compete
        competing = np.flatnonzero(~outside)
        scores, out, targets = scores[:, competing], out[:, competing], np.searchsorted(competing, targets)
    return tie_aware_ranks(scores[row_of], targets, out)


def _checked_scores(model: Recommender, users: np.ndarray, scenario: str) -> np.ndarray:
    """The model's scores of every item for users given as indices. shape: (len(users), n_items)."""
    scores = model.score(model.user_ids_[users], scenario)
    if np.isnan(scores).any():
        raise DataError(f"{type(model).__name__} returned NaN scores in scenario {scenario!r}; fix the model")
    return scores


def ranking_metrics(ranks: pd.DataFrame, ks: Sequence[int] = (10, 20)) -> pd.DataFrame:
    """The rows of `ranks` with recall@k (= HR@k), ndcg@k and mrr@k added for each cut-off k."""
    if not isinstance(ranks, pd.DataFrame) or "rank" not in ranks.columns:
        raise DataError("ranking_metrics needs the DataFrame from target_ranks (with a 'rank' column)")
    cut_offs = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    if not cut_offs:
        raise DataError(f"ks must be positive integers, e.g. (10, 20); got {ks!r}")
    for position, k in enumerate(cut_offs):
        check_positive_int("ranking_metrics", f"ks[{position}]", k, hint="ks must be positive integers, e.g. (10, 20)")
    rank = ranks["rank"].to_numpy(np.float64)
    if np.isnan(rank).any() or (rank < 1).any():
        raise DataError("ranks must be numbers >= 1 (1 = best); take them from target_ranks")
    per_row = ranks.copy()
    for k in cut_offs:
        hit = rank <= k
        per_row[f"recall@{k}"] = hit.astype(np.float64)
        per_row[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0)
        per_row[f"mrr@{k}"] = np.where(hit, 1.0 / rank, 0.0)
    return per_row


def summarise(per_row: pd.DataFrame, by: Sequence[str] = ("scenario",)) -> pd.DataFrame:
    """Means of the metric columns (`<metric>@<k>`, and `known`) per group and over all rows, with row counts."""
    groups = [by] if isinstance(by, str) else list(by)
    if not isinstance(per_row, pd.DataFrame):
        raise DataError(f"summarise needs the DataFrame from ranking_metrics, got {type(per_row).__name__}")
    metrics = [column for column in per_row.columns if "@" in str(column)]
    missing = [column for column in groups if column not in per_row.columns]
    if not metrics or missing or per_row.empty:
        raise DataError(f"summarise needs rows with metric columns (from ranking_metrics) and the grouping "
                        f"column(s) {groups}; missing: {missing or 'metric columns or rows'}")
    averaged = metrics + (["known"] if "known" in per_row.columns else [])
    values = per_row[averaged].astype(np.float64).assign(rows=1)
    totals = {column: "mean" for column in averaged} | {"rows": "sum"}
    overall = values.agg(totals).to_frame().T
    if not groups:
        return overall.set_axis([OVERALL]).astype({"rows": np.int64})
    table = values.groupby([per_row[column] for column in groups], observed=True).agg(totals)
    overall.index = pd.MultiIndex.from_tuples([(OVERALL,) * len(groups)], names=groups) if len(groups) > 1 \
        else pd.Index([OVERALL], name=groups[0])
    return pd.concat([table, overall]).astype({"rows": np.int64})


def in_scenario_order(table: pd.DataFrame, scenarios: Sequence[str]) -> pd.DataFrame:
    """`table` with its scenario columns (the column level named "scenario", else every column) in the order
    `scenarios` gives, then "all", then any others as they stand: tables read as the dataset's scenarios do."""
    names = list(table.columns.names)
    if "scenario" not in names and table.columns.nlevels > 1:
        raise DataError(f"in_scenario_order needs a column level named 'scenario'; the levels are {names}")
    position = names.index("scenario") if "scenario" in names else 0
    present = list(dict.fromkeys(table.columns.get_level_values(position)))
    wanted = [name for name in [*scenarios, OVERALL] if name in present]
    order = wanted + [name for name in present if name not in wanted]
    if table.columns.nlevels == 1:
        return table[order]
    levels = [order if index == position else list(dict.fromkeys(table.columns.get_level_values(index)))
              for index in range(table.columns.nlevels)]  # other levels keep their first-seen order
    return table[sorted(table.columns, key=lambda column: tuple(map(list.index, levels, column)))]


def item_coverage(recommendations: pd.DataFrame, n_items: int) -> float:
    """Share of the n_items catalogue items that appear in at least one recommendation list."""
    if not isinstance(recommendations, pd.DataFrame) or "item_id" not in recommendations.columns:
        raise DataError("item_coverage needs the DataFrame from recommend() (with an 'item_id' column)")
    check_positive_int("item_coverage", "n_items", n_items, hint="pass the catalogue size, e.g. len(model.item_ids_)")
    distinct = recommendations["item_id"].nunique()
    if distinct > n_items:
        raise DataError(f"the recommendations hold {distinct} distinct items, more than n_items={n_items}; "
                        f"pass the size of the whole catalogue, e.g. len(model.item_ids_)")
    return distinct / n_items


def sampled_ranks(model: Recommender, train: pd.DataFrame, test: pd.DataFrame, *, n_negatives: int = 999,
                  candidates: Mapping[str, Sequence[int]] | None = None, seed: int = 0,
                  scenario_column: str = "scenario", batch_size: int = 1024) -> pd.DataFrame:
    """The test rows with the rank of each target among n_negatives random negatives; adds rank, known, n_candidates.

    The negatives of a row are drawn uniformly without replacement from its scenario's `candidates` (every
    item of the model by default), leaving out the target and the user's items in `train`. Ties count half,
    as in `target_ranks`, and a row the model cannot score gets the worst rank, n_negatives + 1. The draws
    depend only on `seed` and the test rows, not on `batch_size`.
    """
    _fail_if_lacking(test, "test", (*TARGET_COLUMNS, scenario_column))
    _fail_if_lacking(train, "train", TARGET_COLUMNS)
    for name, value, least in (("n_negatives", n_negatives, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        check_int("sampled_ranks", name, value, minimum=least)
    users = model.user_index(test["user_id"].to_numpy())  # (n_rows,), -1 when unknown; fails if unfitted
    targets = pd.Index(model.item_ids_).get_indexer(test["item_id"].to_numpy())  # (n_rows,), -1 when unknown
    scenarios = test[scenario_column].astype("str").to_numpy()
    excluded = _excluded_items(model, train)  # (n_users, n_items), sparse
    outside = _outside_candidates(model, candidates)  # scenario -> (n_items,) bool, True = not competing
    known = (users >= 0) & (targets >= 0) & np.isin(scenarios, model.scenarios_)
    for scenario, mask in outside.items():  # a target outside its scenario's candidates cannot be ranked
        known &= ~((scenarios == scenario) & mask[np.maximum(targets, 0)])
    rank = np.full(len(test), float(n_negatives + 1))
    rng = np.random.default_rng(seed)  # drawn from scenario by scenario, rows in user order
    for scenario in np.unique(scenarios[known]):
        pool = np.flatnonzero(~outside[scenario]) if scenario in outside else np.arange(len(model.item_ids_))
        if len(pool) < n_negatives + 1:
            raise DataError(f"scenario {scenario!r} has {len(pool)} candidate items, fewer than the target and "
                            f"n_negatives={n_negatives} negatives; lower n_negatives or widen the candidates")
        rows = np.flatnonzero(known & (scenarios == scenario))
        rows = rows[np.argsort(users[rows], kind="stable")]  # a user's rows fall in one batch
        for batch in _user_batches(users[rows], batch_size):
            batch_rows = rows[batch]
            rank[batch_rows] = _sampled_ranks_in_batch(model, scenario, users[batch_rows], targets[batch_rows],
                                                       excluded, pool, n_negatives, rng)
    ranked = test.reset_index(drop=True).copy()
    ranked["rank"], ranked["known"] = rank, known
    ranked["n_candidates"] = np.full(len(test), n_negatives + 1, dtype=np.int64)
    return ranked


def _sampled_ranks_in_batch(model: Recommender, scenario: str, users: np.ndarray, targets: np.ndarray,
                            excluded: sp.csr_matrix, pool: np.ndarray, n_negatives: int,
                            rng: np.random.Generator) -> np.ndarray:
    """Rank of each target among negatives drawn from `pool` (item indices), for rows of one scenario."""
    rows = np.arange(len(users))
    barred = excluded[users][:, pool].toarray() > 0  # (n_rows, n_pool), the user's own items
    position = np.full(len(model.item_ids_), -1)
    position[pool] = np.arange(len(pool))
    barred[rows, position[targets]] = True  # the target is never its own negative
    available = len(pool) - barred.sum(axis=1)
    if (available < n_negatives).any():
        short = int(np.argmax(available < n_negatives))
        raise DataError(f"user {model.user_ids_[users[short]]} has {available[short]} items left to draw from in "
                        f"scenario {scenario!r} once their own items are left out, fewer than "
                        f"n_negatives={n_negatives}; lower n_negatives")
    keys = rng.random((len(users), len(pool)))  # (n_rows, n_pool): the negatives are the smallest keys
    keys[barred] = np.inf
    negatives = pool[np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives]]  # (n_rows, n_negatives)
    batch_users, row_of = np.unique(users, return_inverse=True)
    scores = _checked_scores(model, batch_users, scenario)  # (n_batch_users, n_items)
    return rank_among(scores[row_of, targets], scores[row_of[:, None], negatives])  # (n_rows,), (n_rows, n_negatives)
