"""Text similarity between items: nearest neighbours by text, and whether items consumed by the same
user have closer texts than items paired at random (a check that text carries a preference signal)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from xscene_lib.data.validation import DataError, check_positive_int, require_columns
from xscene_lib.evaluation.intervals import paired_bootstrap


def nearest_items(vectors: np.ndarray, items: pd.DataFrame, queries: Sequence[int], k: int = 5,
                  label: str = "title", candidates: Sequence[int] | None = None) -> pd.DataFrame:
    """The k items whose (unit) vectors are closest to each query item, as "label (cosine)" strings.

    vectors shape: (len(items), d), rows aligned with `items`; returns one row per query found in items.
    `candidates` (item ids) limits the neighbours to those items, e.g. to another domain; default: all.
    """
    require_columns(items, ["item_id", label], "items")
    check_positive_int("nearest_items", "k", k)
    if len(vectors) != len(items):
        raise DataError(f"vectors have {len(vectors)} rows but items {len(items)}; encode the same items")
    rows = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    found = [item for item in queries if item in rows.index]
    if not found:
        raise DataError(f"none of the query items {list(queries)} is among the items")
    allowed = np.ones(len(items), bool) if candidates is None else items["item_id"].isin(candidates).to_numpy()
    if not allowed.any():
        raise DataError("none of the candidate items is among the items; pass item ids of `items`")
    similarity = vectors @ vectors[rows[found].to_numpy()].T  # (n_items, n_queries)
    names = items[label].astype(str).to_numpy()
    table = {}
    for column, item in enumerate(found):
        order = [i for i in np.argsort(-similarity[:, column], kind="stable") if i != rows[item] and allowed[i]][:k]
        table[names[rows[item]]] = [f"{names[i]} ({similarity[i, column]:.2f})" for i in order]
    return pd.DataFrame(table).T.set_axis([f"#{n}" for n in range(1, k + 1)], axis=1)


def co_consumption_pairs(interactions: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Each interaction's item paired with another item of the same user and with the item of a random interaction.

    Returns user_id, scenario, item_id, co_rated, random (one row per interaction that has a partner).
    """
    require_columns(interactions, ["user_id", "item_id", "scenario"], "interactions")
    rng = np.random.default_rng(seed)
    shuffled = interactions.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    shuffled["co_rated"] = shuffled.groupby("user_id")["item_id"].shift()  # another item of the same user
    shuffled["random"] = rng.permutation(shuffled["item_id"].to_numpy())  # the item of a random interaction
    pairs = shuffled.dropna(subset=["co_rated"]).astype({"co_rated": "int64"})
    return pairs[["user_id", "scenario", "item_id", "co_rated", "random"]].reset_index(drop=True)


def co_consumption_gap(vectors_by_recipe: Mapping[str, np.ndarray], item_ids: Sequence[int], pairs: pd.DataFrame,
                       n_resamples: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean cosine of co-rated minus random pairs, per recipe and scenario, with a paired bootstrap CI over users.

    Each matrix of vectors_by_recipe has shape (len(item_ids), d) with unit rows. Returns the per-pair
    cosines (user_id, scenario, model = partner kind, recipe, cosine) and the interval table.
    """
    require_columns(pairs, ["user_id", "scenario", "item_id", "co_rated", "random"], "pairs")
    rows = pd.Series(np.arange(len(item_ids)), index=np.asarray(item_ids))
    known = pairs[["item_id", "co_rated", "random"]].isin(rows.index).all(axis=1)
    pairs = pairs[known]
    if pairs.empty:
        raise DataError("no pair has all its items among item_ids; encode the items the pairs use")
    cosines = []
    for recipe, matrix in vectors_by_recipe.items():
        for partner in ("co_rated", "random"):
            cosine = (matrix[rows[pairs["item_id"]].to_numpy()] * matrix[rows[pairs[partner]].to_numpy()]).sum(axis=1)
            cosines.append(pairs[["user_id", "scenario"]].assign(model=partner, recipe=recipe, cosine=cosine))
    per_pair = pd.concat(cosines, ignore_index=True)
    gaps = {recipe: paired_bootstrap(part, "cosine", baseline="random", candidate="co_rated",
                                     n_resamples=n_resamples, seed=seed)
            for recipe, part in per_pair.groupby("recipe", sort=False)}
    gap = pd.concat(gaps, names=["recipe"]).droplevel(1).set_index("scenario", append=True)
    return per_pair, gap
