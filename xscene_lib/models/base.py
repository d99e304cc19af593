"""Scenario-weighted recommendation: the estimator contract every model shares.

A model is fitted on interactions with raw ids (`user_id`, `item_id`, `scenario`) and owns the
maps to contiguous indices. `score(users, scenario)` gives one row of item scores per user in one
scenario. `recommend` blends the scenarios' scores with weights (the article's step 3.2.4):

    score(u, i) = sum_s  w_s(u) * z_s(u, i)

where z_s(u, .) is the user's scores in scenario s standardised over the items (so scenarios whose
scores live on different scales blend fairly) and w_s(u) are non-negative weights summing to one:
fixed for everyone, or the user's own share of training interactions in each scenario. Each
scenario's term is returned as its contribution, so a ranking can be explained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from xscene_lib.data.validation import (DataError, check_choice, check_number, check_positive_int, checked_ids,
                                        require_columns)

if TYPE_CHECKING:
    from xscene_lib.models.retrieval import ItemIndex

TRAIN_COLUMNS = ("user_id", "item_id", "scenario")
USER_CHUNK = 1024  # users blended at once in recommend(), bounding memory to S * 1024 * n_items floats


class NotFittedError(RuntimeError):
    """A model method that needs a fitted model was called before `fit`."""


class Recommender:
    """Base of all models: id maps, validation, and scenario-weighted top-K recommendation.

    Subclasses implement `_fit(users, items, scenarios, train, item_vectors)` on index arrays and
    `_score(user_index, scenario_index) -> (n_users, n_items)`; they set `needs_item_vectors`.
    """

    needs_item_vectors = False

    # --- fitting -----------------------------------------------------------------------------

    def fit(self, train: pd.DataFrame, item_vectors: pd.DataFrame | None = None, *,
            items: Sequence[int] | None = None, valid: pd.DataFrame | None = None) -> Recommender:
        """Learn from training interactions; item_vectors rows are indexed by item_id.

        `valid` (interactions held out for validation) lets trained models stop early; models
        without training ignore it.
        """
        self._check_params()
        train = _checked_train(train)
        self._validation = None if valid is None or valid.empty else _checked_train(valid)
        vectors = _checked_vectors(item_vectors, type(self).__name__, self.needs_item_vectors)
        catalogue = _catalogue(train, vectors, items)
        self.item_ids_ = catalogue  # (n_items,) raw ids, the column order of score()
        self.user_ids_ = np.sort(train["user_id"].unique())  # (n_users,)
        self.scenarios_ = _scenario_order(train)
        users = pd.Index(self.user_ids_).get_indexer(train["user_id"])
        items_index = pd.Index(catalogue).get_indexer(train["item_id"])
        scenarios = pd.Index(self.scenarios_).get_indexer(train["scenario"])
        n_users, n_items, n_scenarios = len(self.user_ids_), len(catalogue), len(self.scenarios_)
        self.seen_ = sp.csr_matrix((np.ones(len(train), np.float32), (users, items_index)),
                                   shape=(n_users, n_items))  # (n_users, n_items), > 0 where seen
        self.seen_.data[:] = 1.0
        self.scenario_share_ = np.zeros((n_users, n_scenarios), np.float64)  # rows sum to 1
        np.add.at(self.scenario_share_, (users, scenarios), 1.0)
        self.scenario_share_ /= self.scenario_share_.sum(axis=1, keepdims=True)
        self.popularity_ = np.zeros((n_scenarios, n_items), np.float32)  # training counts
        np.add.at(self.popularity_, (scenarios, items_index), 1.0)
        aligned = None if vectors is None else vectors.loc[catalogue].to_numpy(np.float32)  # (n_items, d)
        try:
            self._fit(users, items_index, scenarios, train, aligned)
        except BaseException:
            del self.item_ids_  # a failed fit leaves the model unfitted
            raise
        finally:
            del self._validation  # only needed while fitting
        return self

    def _check_params(self) -> None:
        """Raise a DataError for constructor arguments the model cannot work with (none by default)."""

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        raise NotImplementedError

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        raise NotImplementedError

    # --- scoring ---------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(train) first")

    def user_index(self, users: Sequence[int]) -> np.ndarray:
        """Indices of raw user ids (a list of integers, or one); -1 for users the model has not seen in training."""
        self._check_fitted()
        return pd.Index(self.user_ids_).get_indexer(checked_ids(f"{type(self).__name__}.user_index", "users", users))

    def scenario_index(self, scenario: str) -> int:
        """Index of a scenario seen in training; a clear error otherwise."""
        self._check_fitted()
        if scenario not in self.scenarios_:
            raise DataError(f"scenario {scenario!r} was not seen in training; known: {self.scenarios_}")
        return self.scenarios_.index(scenario)

    def score(self, users: Sequence[int], scenario: str) -> np.ndarray:
        """Scores of every catalogue item for each user in one scenario.

        shape: ``(len(users), len(item_ids_))``, columns in the order of `item_ids_`.
        """
        self._check_fitted()
        raw = checked_ids(f"{type(self).__name__}.score", "users", users)
        index = pd.Index(self.user_ids_).get_indexer(raw)
        if (index < 0).any():
            unknown = raw[index < 0]
            raise DataError(f"{len(unknown)} user(s) were not in the training data, e.g. {unknown[0]}; "
                            f"score() needs known users, recommend() falls back to popularity for others")
        return np.asarray(self._score(index, self.scenario_index(scenario)), dtype=np.float32)

    # --- recommending ----------------------------------------------------------------------------

    def recommend(self, users: Sequence[int], k: int = 10,
                  scenario_weights: Mapping[str, float] | str | None = None,
                  exclude_seen: bool = True, index: ItemIndex | None = None) -> pd.DataFrame:
        """Top-k items per user, blending scenarios; one row per (user, rank) with contributions.

        scenario_weights: None or "history" (each user's share of training interactions per
        scenario), "uniform", or a mapping scenario -> non-negative weight. index: two-tower models only
        (see TwoTowerRecommender.recommend).
        """
        self._check_fitted()
        if index is not None:
            raise DataError(f"{type(self).__name__} does not score by one user vector . item vector, so it cannot be "
                            f"served from an index; call recommend() without index (two-tower models such as "
                            f"BPRMF and JointModel can)")
        check_positive_int(None, "k", k)
        raw = checked_ids(f"{type(self).__name__}.recommend", "users", users)
        index = self.user_index(raw)
        weights = self.user_scenario_weights(index, scenario_weights)  # (B, n_scenarios)
        k = min(k, len(self.item_ids_))
        chunks = [self.blended_top_k(raw[start:start + USER_CHUNK], index[start:start + USER_CHUNK],
                              weights[start:start + USER_CHUNK], k, exclude_seen)
                  for start in range(0, len(raw), USER_CHUNK)]
        if not chunks:
            return self.blended_top_k(raw, index, weights, k, exclude_seen)
        return pd.concat(chunks, ignore_index=True)

    def blended_scores(self, users: Sequence[int], scenario_weights: Mapping[str, float] | str | None = None
                       ) -> np.ndarray:
        """The blended score of every catalogue item for each user, seen items included.

        shape: ``(len(users), len(item_ids_))``, the sum over scenarios of what recommend() reports as the
        `from_<scenario>` contributions; users not in training get the scenarios' popularity.
        """
        self._check_fitted()
        raw = checked_ids(f"{type(self).__name__}.blended_scores", "users", users)
        index = self.user_index(raw)
        return self._contributions(index, self.user_scenario_weights(index, scenario_weights)).sum(axis=0)

    def _contributions(self, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Each scenario's weighted, standardised scores. shape: (n_scenarios, B, n_items)."""
        known = index >= 0
        contributions = np.zeros((len(self.scenarios_), len(index), len(self.item_ids_)), np.float32)  # (S, B, I)
        for s in range(len(self.scenarios_)):
            if not weights[:, s].any():
                continue
            scores = np.empty((len(index), len(self.item_ids_)), np.float32)  # (B, n_items)
            if known.any():
                scores[known] = self._score(index[known], s)
            scores[~known] = self.popularity_[s]
            contributions[s] = weights[:, s, None] * _standardised(scores)
        return contributions

    def blended_top_k(self, raw: np.ndarray, index: np.ndarray, weights: np.ndarray, k: int,
                      exclude_seen: bool) -> pd.DataFrame:
        """The k best items of each user in recommend()'s columns; weights from user_scenario_weights."""
        known = index >= 0
        contributions = self._contributions(index, weights)  # (S, B, n_items)
        total = contributions.sum(axis=0)  # (B, n_items)
        if exclude_seen and known.any():
            total[known] = np.where(self.seen_[index[known]].toarray() > 0, -np.inf, total[known])
        top = np.argsort(-total, axis=1, kind="stable")[:, :k].reshape(-1)  # (B * k,)
        rows = np.repeat(np.arange(len(raw)), k)
        table = pd.DataFrame({"user_id": raw[rows], "item_id": self.item_ids_[top], "score": total[rows, top],
                              "rank": np.tile(np.arange(1, k + 1), len(raw)),
                              "source": np.where(known[rows], "model", "popularity (user not in training)")})
        for s, scenario in enumerate(self.scenarios_):
            table[f"from_{scenario}"] = contributions[s][rows, top]
        return table[np.isfinite(table["score"])].reset_index(drop=True)

    def user_scenario_weights(self, index: np.ndarray, scenario_weights: Mapping[str, float] | str | None
                              ) -> np.ndarray:
        """Per-user scenario weights, each row non-negative and summing to one. shape: (B, n_scenarios)."""
        n = len(self.scenarios_)
        named = scenario_weights if isinstance(scenario_weights, str) else None  # no == on arrays and frames
        if named is not None:
            check_choice(None, "scenario_weights", named, ("history", "uniform"),
                         hint="or pass None (history) or a mapping scenario -> weight")
        if scenario_weights is None or named == "history":
            uniform = np.full(n, 1.0 / n)
            return np.where((index >= 0)[:, None], self.scenario_share_[np.maximum(index, 0)], uniform)
        if named == "uniform":
            return np.full((len(index), n), 1.0 / n)
        if not isinstance(scenario_weights, Mapping):
            raise DataError(f"scenario_weights must be None, 'history', 'uniform' or a mapping scenario -> weight, "
                            f"got {type(scenario_weights).__name__} {scenario_weights!r:.120}")
        unknown = sorted(map(repr, set(scenario_weights) - set(self.scenarios_)))
        if unknown:
            raise DataError(f"scenario_weights names unknown scenario(s) {', '.join(unknown)}; "
                            f"known: {self.scenarios_}")
        for name, weight in scenario_weights.items():
            check_number(None, f"scenario_weights[{name!r}]", weight, minimum=0,
                         hint="weights must be finite, non-negative and not all zero")
        fixed = np.array([float(scenario_weights.get(name, 0.0)) for name in self.scenarios_])
        fixed = fixed / fixed.max(initial=0.0) if fixed.max(initial=0.0) > 0 else fixed  # 1e308 + 1e308 stays finite
        if fixed.sum() <= 0:
            raise DataError(f"scenario_weights must be finite, non-negative and not all zero, got "
                            f"{dict(scenario_weights)}; give at least one scenario a positive weight")
        return np.tile(fixed / fixed.sum(), (len(index), 1))


def _standardised(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (rows that are constant become 0)."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


def _checked_train(train: pd.DataFrame) -> pd.DataFrame:
    """The training interactions, or a clear error for a frame a model cannot learn from."""
    if not isinstance(train, pd.DataFrame):
        raise DataError(f"fit needs the training interactions as a DataFrame (e.g. dataset.split().train), "
                        f"got {type(train).__name__}")
    require_columns(train, TRAIN_COLUMNS, "training interactions")
    if train.empty:
        raise DataError("the training interactions are empty; check the split and any filtering before fit")
    return train


def _checked_vectors(item_vectors: pd.DataFrame | None, model: str, needed: bool) -> pd.DataFrame | None:
    """Item vectors as a float DataFrame indexed by item_id, or None."""
    if item_vectors is None:
        if needed:
            raise DataError(f"{model} needs item_vectors: a DataFrame indexed by item_id with one row per item "
                            f"(e.g. pd.DataFrame(TextEncoder().encode(items.text), index=items.item_id))")
        return None
    if not isinstance(item_vectors, pd.DataFrame):
        raise DataError(f"item_vectors must be a DataFrame indexed by item_id, got {type(item_vectors).__name__}")
    values = item_vectors.to_numpy()
    if item_vectors.empty or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise DataError("item_vectors must be non-empty, numeric and finite")
    if item_vectors.index.duplicated().any():
        raise DataError("item_vectors has repeated item ids in its index; keep one row per item")
    return item_vectors


def _catalogue(train: pd.DataFrame, vectors: pd.DataFrame | None, items: Sequence[int] | None) -> np.ndarray:
    """The candidate items: `items` if given, else the vectors' items, else the training items."""
    if items is not None:
        catalogue = np.unique(np.asarray(items, dtype=np.int64))
    elif vectors is not None:
        catalogue = np.unique(vectors.index.to_numpy(np.int64))
    else:
        catalogue = np.unique(train["item_id"].to_numpy(np.int64))
    outside = ~np.isin(train["item_id"].to_numpy(np.int64), catalogue)
    if outside.any():
        raise DataError(f"{int(outside.sum())} training interaction(s) name items outside the candidate items, "
                        f"e.g. {train['item_id'].to_numpy()[outside][0]}; include them in `items`/item_vectors")
    if vectors is not None:
        uncovered = ~np.isin(catalogue, vectors.index.to_numpy(np.int64))
        if uncovered.any():
            raise DataError(f"item_vectors lack {int(uncovered.sum())} candidate item(s), e.g. "
                            f"{catalogue[uncovered][0]}; encode every item (items.text) before fit")
    return catalogue


def _scenario_order(train: pd.DataFrame) -> list[str]:
    """Scenario names in their categorical order if there is one, else sorted."""
    column = train["scenario"]
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(s) for s in column.cat.categories if (column == s).any()]
    return sorted(str(s) for s in column.unique())
