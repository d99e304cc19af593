"""Nearest items by text and the co-consumption gap, on hand-made vectors with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import DataError
from xscene_lib.evaluation import co_consumption_gap, co_consumption_pairs, nearest_items

ITEMS = pd.DataFrame({"item_id": [10, 11, 12, 13], "title": ["knife", "knife set", "tea", "green tea"]})
VECTORS = np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0], [0.28, 0.96]], dtype=np.float32)  # unit rows


def test_nearest_items_ranks_by_cosine_and_leaves_out_the_query() -> None:
    table = nearest_items(VECTORS, ITEMS, queries=[10, 12, 99], k=2)
    assert list(table.index) == ["knife", "tea"]  # 99 is not an item
    assert table.loc["knife", "#1"] == "knife set (0.96)" and table.loc["tea", "#1"] == "green tea (0.96)"
    with pytest.raises(DataError, match="none of the query items"):
        nearest_items(VECTORS, ITEMS, queries=[99])
    with pytest.raises(DataError, match="rows"):
        nearest_items(VECTORS[:3], ITEMS, queries=[10])


def test_nearest_items_can_be_limited_to_candidates() -> None:
    table = nearest_items(VECTORS, ITEMS, queries=[10], k=1, candidates=[12, 13])
    assert table.loc["knife", "#1"].startswith(("tea", "green tea"))  # the knife set is not a candidate
    with pytest.raises(DataError, match="none of the candidate items"):
        nearest_items(VECTORS, ITEMS, queries=[10], candidates=[99])


def test_co_consumption_pairs_pair_items_of_the_same_user() -> None:
    interactions = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [10, 11, 10, 12, 13],
                                 "scenario": ["a"] * 5})
    pairs = co_consumption_pairs(interactions, seed=3)
    assert len(pairs) == 3  # each user's first interaction (after shuffling) has no partner
    owner = interactions.groupby("user_id")["item_id"].agg(set)
    assert all(row.co_rated in owner[row.user_id] for row in pairs.itertuples())
    assert pairs.equals(co_consumption_pairs(interactions, seed=3))


def test_the_gap_is_positive_when_users_consume_similar_texts() -> None:
    # users 1..200 consume two knives or two teas; random partners mix both kinds
    users = np.repeat(np.arange(200), 2)
    kinds = np.repeat(np.arange(200) % 2, 2)
    items = np.where(kinds == 0, np.tile([10, 11], 200), np.tile([12, 13], 200))
    pairs = co_consumption_pairs(pd.DataFrame({"user_id": users, "item_id": items, "scenario": "a"}))
    per_pair, gap = co_consumption_gap({"text": VECTORS}, ITEMS["item_id"], pairs, n_resamples=200)
    overall = gap.loc[("text", "all")]
    assert overall["ci_low"] > 0.3  # co-rated pairs: cosine 0.96; random pairs: about half of them 0.0-0.3
    assert set(per_pair["model"]) == {"co_rated", "random"}
    with pytest.raises(DataError, match="no pair"):
        co_consumption_gap({"text": VECTORS}, [1, 2, 3, 4], pairs)
