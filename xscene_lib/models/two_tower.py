"""Two-tower models: an item's score is one user vector . one item vector shared by every scenario.

BPR-MF and the joint model are two-tower models: the item side v_i is the same in every scenario and only the
user side h_s(u) depends on it, so score_s(u, i) = h_s(u) . v_i. That is what lets `recommend` be served from
a nearest-neighbour index over the item vectors (xscene_lib.models.retrieval) with the scenario blend kept
exact. Models whose item side depends on the scenario (one model per scenario) are not two-tower models.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xscene_lib.models.base import Recommender

if TYPE_CHECKING:
    from xscene_lib.models.retrieval import ItemIndex


class TwoTowerRecommender(Recommender):
    """Base of models that score by user vector . item vector; subclasses give both towers.

    Subclasses implement `item_vectors()` and `user_vectors(user_index, scenario_index)`; `_score` is their
    product, so scores, retrieval and indexes all use what the model scores with.
    """

    def item_vectors(self) -> np.ndarray:
        """The item side of the score, the same in every scenario. shape: (n_items, d)."""
        raise NotImplementedError

    def user_vectors(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """The user side of the score in one scenario, for user indices (not raw ids). shape: (B, d)."""
        raise NotImplementedError

    def recommend(self, users: Sequence[int], k: int = 10,
                  scenario_weights: Mapping[str, float] | str | None = None,
                  exclude_seen: bool = True, index: ItemIndex | None = None) -> pd.DataFrame:
        """Top-k items per user as Recommender.recommend; with `index` (a fitted ItemIndex over
        item_vectors()), searched in the index instead of ranking every item, the scenario blend kept exact."""
        if index is None:
            return super().recommend(users, k, scenario_weights, exclude_seen)
        self._check_fitted()
        return index.recommend(self, users, k, scenario_weights, exclude_seen)
