"""Top-K retrieval from a FAISS index instead of ranking every item, for models that score by inner product.

`recommend` scores every catalogue item for every user and sorts them all: exact, and fine for a few
thousand items, but its cost grows with the catalogue. Two-tower models score an item by the inner product
of a user vector and an item vector, so the top K can come from a nearest-neighbour index over the item
vectors (FAISS: Johnson, Douze and Jegou, "Billion-scale similarity search with GPUs", 2019):

- "exact": IndexFlatIP, every inner product computed, only the K best kept (no full sort);
- "ivf": IndexIVFFlat, items clustered into `nlist` cells by k-means, `nprobe` cells searched per query;
- "hnsw": IndexHNSWFlat, a navigable small-world graph with `m` links per node, `ef_search` candidates.

The approximate kinds can miss true top-K items; `recall_at_k` measures how many they find.

`retrieve` (and `model.recommend(..., index=...)`) gives the output of `Recommender.recommend` (same rows
and columns) from an index. The blend of scenarios stays exact: in a two-tower model (the joint model,
BPR-MF) the item vector v_i is the same in every scenario and only the user vector h_s depends on it, and
standardising z_s = (h_s.v_i - h_s.mu) / sigma_s (mu: mean item vector, sigma_s^2 = h_s' Cov(v) h_s, both
over all items) is affine in v_i, so

    sum_s w_s z_s(u, i) = q_u . v_i - c_u,   q_u = sum_s (w_s / sigma_s) h_s,   c_u = sum_s w_s (h_s.mu) / sigma_s

and one search with q_u ranks the items as `recommend` does (up to ties and float rounding). Models whose
item side depends on the scenario (SingleScenario) or that are not inner products cannot be served this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import faiss
import numpy as np
import pandas as pd

from xscene_lib.data.validation import DataError, check_choice, check_positive_int, checked_ids
from xscene_lib.models.base import USER_CHUNK, NotFittedError, Recommender
from xscene_lib.models.two_tower import TwoTowerRecommender

KINDS = ("exact", "ivf", "hnsw")
TRAIN_POINTS_PER_CELL = 64  # k-means of "ivf" learns from at most this many items per cell
SCORE_TOLERANCE = 1e-3  # relative gap between index and model scores that shows the index is not the model's


class ItemIndex:
    """A FAISS inner-product index over item vectors: exact, IVF or HNSW; search returns the top k of each query."""

    def __init__(self, kind: str = "exact", nlist: int | None = None, nprobe: int = 16, m: int = 32,
                 ef_construction: int = 80, ef_search: int = 64, seed: int = 0) -> None:
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.seed = seed

    def fit(self, item_vectors: np.ndarray) -> ItemIndex:
        """Build the index over the items; row i of item_vectors is item i. shape: (n_items, d)."""
        check_choice("ItemIndex", "kind", self.kind, KINDS)
        for name in ("nprobe", "m", "ef_construction", "ef_search"):
            check_positive_int("ItemIndex", name, getattr(self, name))
        vectors = _checked_matrix(item_vectors, "item_vectors")
        if len(vectors) == 0:
            raise DataError("item_vectors is empty: an index needs at least one item")
        n, d = vectors.shape
        if self.kind == "exact":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
        else:
            index = self._trained_ivf(vectors)
        index.add(vectors)
        self.index_, self.n_items_, self.dim_ = index, n, d
        return self

    def _trained_ivf(self, vectors: np.ndarray) -> faiss.IndexIVFFlat:
        """An IVF index whose cells k-means learned from (a seeded sample of) the items."""
        n, d = vectors.shape
        nlist = self.nlist if self.nlist is not None else default_nlist(n)
        check_positive_int("ItemIndex", "nlist", nlist)
        if nlist > n:
            raise DataError(f"ItemIndex(nlist={nlist}) asks for more cells than there are items ({n}); "
                            f"use nlist <= {n} or leave it None")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
        sample = min(n, TRAIN_POINTS_PER_CELL * nlist)
        rows = np.sort(np.random.default_rng(self.seed).choice(n, size=sample, replace=False))
        index.train(vectors[rows])
        return index

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k items of highest inner product with each query, best first, and their scores.

        shape: query_vectors (B, d) -> scores (B, k) float32, indices (B, k) int64 (rows of the fitted
        item_vectors). An approximate index that finds fewer than k items pads with index -1, score -inf.
        nprobe and ef_search are read here, so they can be changed after fit without rebuilding.
        """
        if not hasattr(self, "index_"):
            raise NotFittedError("this ItemIndex is not fitted yet; call fit(item_vectors) first")
        for name in ("nprobe", "ef_search"):
            check_positive_int("ItemIndex", name, getattr(self, name))
        if isinstance(self.index_, faiss.IndexIVFFlat):
            self.index_.nprobe = min(self.nprobe, self.index_.nlist)
        elif isinstance(self.index_, faiss.IndexHNSWFlat):
            self.index_.hnsw.efSearch = self.ef_search
        queries = _checked_matrix(query_vectors, "query_vectors")
        if queries.shape[1] != self.dim_:
            raise DataError(f"query_vectors have {queries.shape[1]} dimensions but the index was built on "
                            f"{self.dim_}-dimensional item vectors; use the same model (and layer) for both")
        check_positive_int(None, "k", k)
        if k > self.n_items_:
            raise DataError(f"k={k} is more than the {self.n_items_} items in the index; ask for k <= {self.n_items_}")
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        scores, indices = self.index_.search(queries, int(k))  # (B, k) each
        scores[indices < 0] = -np.inf
        return scores, indices.astype(np.int64)

    def recommend(self, model: TwoTowerRecommender, users: Sequence[int], k: int = 10,
                  scenario_weights: Mapping[str, float] | str | None = None, exclude_seen: bool = True
                  ) -> pd.DataFrame:
        """model.recommend(users, k, scenario_weights, exclude_seen) served from this index (see `retrieve`)."""
        return retrieve(model, users, self, k, scenario_weights, exclude_seen)


def default_nlist(n_items: int) -> int:
    """The number of IVF cells used when none is given: about sqrt(n), with at least 39 items per cell."""
    return int(max(1, min(round(np.sqrt(n_items)), n_items // 39)))


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top k that the approximate top k contains.

    shape: approximate (B, k), exact (B, k), item indices as ItemIndex.search returns them (-1: none).
    """
    approximate, exact = np.asarray(approximate), np.asarray(exact)
    if approximate.ndim != 2 or approximate.shape != exact.shape:
        raise DataError(f"recall_at_k needs two (queries, k) arrays of the same shape, got {approximate.shape} "
                        f"and {exact.shape}")
    if approximate.size == 0:
        raise DataError("recall_at_k needs at least one query and k >= 1")
    found = [len(np.intersect1d(a[a >= 0], e[e >= 0])) for a, e in zip(approximate, exact)]
    return float(np.mean(found) / exact.shape[1])


# --- serving a recommender from an index -------------------------------------------------------------------------


def item_vectors(model: Recommender) -> np.ndarray:
    """The item side of a two-tower model: score = user vector . item vector. shape: (n_items, d)."""
    _check_two_tower(model)
    return np.ascontiguousarray(model.item_vectors(), dtype=np.float32)


def user_vectors(model: Recommender, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
    """The user side of a two-tower model in one scenario, for user indices (not raw ids). shape: (B, d)."""
    _check_two_tower(model)
    return np.ascontiguousarray(model.user_vectors(np.asarray(user_index, dtype=np.int64), scenario_index),
                                dtype=np.float32)


def retrieve(model: Recommender, users: Sequence[int], index: ItemIndex, k: int = 10,
             scenario_weights: Mapping[str, float] | str | None = None, exclude_seen: bool = True) -> pd.DataFrame:
    """model.recommend(users, k, scenario_weights, exclude_seen) served from an index over item_vectors(model).

    Same rows and columns; with an exact index the same items, up to ties and float rounding. The index is asked
    for k plus the most training items any user of a chunk has, so that k remain once seen items are left out;
    an approximate index may still return fewer rows for a user, and may miss items full ranking would give.
    """
    items = item_vectors(model)  # (n_items, d)
    if not hasattr(index, "index_"):
        raise NotFittedError("this ItemIndex is not fitted yet; fit it on item_vectors(model) first")
    if (index.n_items_, index.dim_) != items.shape:
        raise DataError(f"the index holds {index.n_items_} items of {index.dim_} dimensions but the model has "
                        f"{items.shape[0]} of {items.shape[1]}; build it with ItemIndex().fit(item_vectors(model))")
    check_positive_int(None, "k", k)
    raw = checked_ids("recommend", "users", users)  # (B,)
    user_index = model.user_index(raw)
    weights = model.user_scenario_weights(user_index, scenario_weights)  # (B, S)
    k = min(k, len(items))
    mean, covariance = _moments(items)
    chunks = [_retrieved_chunk(model, index, items, mean, covariance, raw[start:start + USER_CHUNK],
                               user_index[start:start + USER_CHUNK], weights[start:start + USER_CHUNK], k,
                               exclude_seen) for start in range(0, len(raw), USER_CHUNK)]
    return pd.concat(chunks, ignore_index=True) if chunks else model.recommend(raw, k, scenario_weights, exclude_seen)


def _moments(items: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (divided by n) of the item vectors, in float64. shape: (d,), (d, d)."""
    mean = items.mean(axis=0, dtype=np.float64)  # (d,)
    covariance = np.zeros((items.shape[1], items.shape[1]), np.float64)
    for start in range(0, len(items), chunk):
        centred = items[start:start + chunk].astype(np.float64) - mean  # (chunk, d)
        covariance += centred.T @ centred
    return mean, covariance / len(items)


def _retrieved_chunk(model: Recommender, index: ItemIndex, items: np.ndarray, mean: np.ndarray,
                     covariance: np.ndarray, raw: np.ndarray, user_index: np.ndarray, weights: np.ndarray, k: int,
                     exclude_seen: bool) -> pd.DataFrame:
    """One chunk of users: model users from the index, users not in training from the blended popularity."""
    known, position = user_index >= 0, np.arange(len(raw))
    tables = []  # the user_id column holds each user's position in the chunk until the end
    if known.any():
        tables.append(_from_index(model, index, items, mean, covariance, position[known], user_index[known],
                                  weights[known], k, exclude_seen))
    if (~known).any():  # not in training: recommend() gives them the blended scenario popularity
        tables.append(model.blended_top_k(position[~known], user_index[~known], weights[~known], k, exclude_seen))
    table = pd.concat(tables, ignore_index=True).sort_values(["user_id", "rank"], kind="stable")
    table["user_id"] = raw[table["user_id"].to_numpy()]
    return table.reset_index(drop=True)


def _from_index(model: Recommender, index: ItemIndex, items: np.ndarray, mean: np.ndarray, covariance: np.ndarray,
                position: np.ndarray, user_index: np.ndarray, weights: np.ndarray, k: int,
                exclude_seen: bool) -> pd.DataFrame:
    """Top k of users the model knows: one search with q_u, then the recommend() columns for what it found."""
    n_scenarios, n_users = len(model.scenarios_), len(user_index)
    per_scenario = np.zeros((n_scenarios, n_users, items.shape[1]), np.float64)  # (S, B, d): (w_s/sigma_s) h_s
    offsets = np.zeros((n_scenarios, n_users), np.float64)  # (S, B): w_s (h_s.mu) / sigma_s
    for s in range(n_scenarios):
        if not weights[:, s].any():
            continue
        h = user_vectors(model, user_index, s).astype(np.float64)  # (B, d)
        spread = np.sqrt(np.maximum(np.einsum("bd,de,be->b", h, covariance, h), 0.0))  # (B,)
        scale = np.divide(weights[:, s], spread, out=np.zeros(n_users), where=spread > 0)  # constant rows: 0
        per_scenario[s], offsets[s] = scale[:, None] * h, scale * (h @ mean)
    query = per_scenario.sum(axis=0).astype(np.float32)  # (B, d)
    seen = model.seen_[user_index] if exclude_seen else None  # (B, n_items) sparse
    extra = 0 if seen is None else int(np.diff(seen.indptr).max(initial=0))
    found_scores, found = index.search(query, min(len(items), k + extra))  # (B, k + extra), -1: none found
    _check_scores(found_scores, found, query, items)
    chosen = []
    for b in range(n_users):
        candidates = found[b][found[b] >= 0]
        if seen is not None:
            candidates = candidates[~np.isin(candidates, seen.indices[seen.indptr[b]:seen.indptr[b + 1]])]
        chosen.append(candidates[:k])
    row = np.repeat(np.arange(n_users), [len(c) for c in chosen])  # (R,)
    item = np.concatenate(chosen).astype(np.int64)  # (R,)
    contributions = np.einsum("sbd,bd->sb", per_scenario[:, row], items[item].astype(np.float64)) - offsets[:, row]
    table = pd.DataFrame({"user_id": position[row], "item_id": model.item_ids_[item],
                          "score": contributions.sum(axis=0).astype(np.float32),
                          "rank": np.concatenate([np.arange(1, len(c) + 1) for c in chosen]), "source": "model"})
    for s, scenario in enumerate(model.scenarios_):
        table[f"from_{scenario}"] = contributions[s].astype(np.float32)
    return table


def _check_scores(scores: np.ndarray, found: np.ndarray, query: np.ndarray, items: np.ndarray) -> None:
    """A clear error when the index's scores are not the model's: the index was built on other item vectors."""
    valid = found[:, :1] >= 0  # each query's best item
    expected = np.einsum("bd,bd->b", query, items[np.maximum(found[:, 0], 0)])  # (B,)
    gap = np.abs(scores[:, 0] - expected)[valid[:, 0]]
    if gap.size and (gap > SCORE_TOLERANCE * (1.0 + np.abs(expected[valid[:, 0]]))).any():
        raise DataError("the index's scores differ from this model's: it was built on other item vectors; "
                        "rebuild it with ItemIndex().fit(item_vectors(model)) after every fit")


def _check_two_tower(model: Recommender) -> None:
    """A clear error unless the model is fitted and scores by user vector . item vector."""
    if not hasattr(model, "item_ids_"):
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet; call fit(train) first")
    if not isinstance(model, TwoTowerRecommender):
        raise DataError(f"{type(model).__name__} does not score by one user vector . item vector shared by all "
                        f"scenarios, so it cannot be served from an index; use its recommend()")


def _checked_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """values as a C-contiguous float32 (rows, d) array, or a clear error."""
    array = np.asarray(values)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or array.shape[1] == 0:
        raise DataError(f"{name} must be a numeric 2-d array (rows, dimensions) with d >= 1, got shape {array.shape} "
                        f"of {array.dtype}")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds NaN or infinite values; fix the vectors before indexing or searching")
    return np.ascontiguousarray(array, dtype=np.float32)
