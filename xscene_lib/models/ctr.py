"""Multi-scenario click-through models: SharedBottom, STAR and the book's joint model with a pointwise head.

All three read the same features and share one estimator API (scikit-learn style):

    model = STAR(num_epochs=5).fit(split.train, valid=split.valid)   # split = click_through_split(dataset)
    model.predict_proba(split.test)                                 # (n,) click probabilities
    model.evaluate(split.test)                                      # AUC and log loss per scenario and "all"

Features of a row: the user id, the item id and the scenario, each embedded in `dim` numbers, plus
the user's `gender`, `occupation` and `zip_code` (one embedding each), the user's `age` (min-max scaled on
the training rows, as one number) and the item's `genres` (the mean of its genre embeddings) when the
training frame has those columns. Raw ids and category values stay
outside; the fitted model owns the maps to indices. Index 0 of every map is "unknown": users,
items and category values not seen in training map there, and its embedding is fixed at zero (an
unseen item's text is not used either). A scenario not seen in training is an error. Given
`item_vectors` (rows indexed by item_id), an item's embedding also adds a learned projection of
its vector (JointCTR(use_text=False) ignores them).

Training minimises binary cross-entropy with `xscene_lib.training.loop.train_module` (Adam with weight decay,
the learning rate decayed by `lr_decay`); with `valid` it keeps the epoch of best validation AUC (over all
scenarios) and stops after `patience` epochs without one. The defaults are the settings of the Scenario-Wise
Rec benchmark's ml-1m script: 16-d embeddings, batch 4,096, learning rate 1e-3, weight decay 1e-5, decay 0.85
every 2 epochs, patience 4, at most 20 epochs, batch normalisation in the MLPs and no dropout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from xscene_lib.models.ctr_networks import Batch, FeatureEmbedding, JointNetwork, SharedBottomNetwork, StarNetwork
from xscene_lib.models.ctr_protocol import (GENRE_SEPARATOR, ITEM_FEATURES, NUMERIC_USER_FEATURES, USER_FEATURES,
                                            click_through_table)
from xscene_lib.data.validation import DataError, check_flag, check_number, check_positive_int, require_columns
from xscene_lib.models.base import NotFittedError
from xscene_lib.models.fitting import run_key
from xscene_lib.training.loop import TrainHistory, seeded_generator, train_module

ID_COLUMNS = ("user_id", "item_id", "scenario")
PREDICT_CHUNK = 65_536  # rows scored at once


@dataclass(frozen=True, eq=False)
class Features:
    """The maps from raw values to indices that a fitted model owns, and the encoding of a frame with them."""

    user_ids: np.ndarray  # (n_users,) raw ids; index = position + 1, 0 = unknown
    item_ids: np.ndarray  # (n_items,)
    scenarios: list[str]
    categories: dict[str, list[str]]  # column -> known values (index = position + 1)
    genres: list[str]  # the multi-hot vocabulary of the `genres` column ([] without one)
    numeric: dict[str, tuple[float, float]]  # column -> (min, max) over the training rows

    @classmethod
    def learn(cls, train: pd.DataFrame) -> Features:
        """The vocabularies of a training frame."""
        column = train["scenario"]
        scenarios = ([str(s) for s in column.cat.categories if (column == s).any()]
                     if isinstance(column.dtype, pd.CategoricalDtype) else sorted(column.astype("str").unique()))
        categories = {c: sorted(train[c].astype("str").unique()) for c in USER_FEATURES if c in train.columns}
        every = GENRE_SEPARATOR.join(train["genres"].astype("str").unique()) if "genres" in train.columns else ""
        genres = sorted(set(every.split(GENRE_SEPARATOR)) - {""})
        numeric = {c: (float(train[c].min()), float(train[c].max())) for c in NUMERIC_USER_FEATURES
                   if c in train.columns and pd.api.types.is_numeric_dtype(train[c]) and train[c].notna().any()}
        return cls(np.unique(train["user_id"].to_numpy(np.int64)), np.unique(train["item_id"].to_numpy(np.int64)),
                   scenarios, categories, genres, numeric)

    def encode(self, frame: pd.DataFrame) -> Batch:
        """Index tensors of a frame's rows (plus `label` if the frame has one); unknown values map to 0."""
        needed = [*ID_COLUMNS, *self.categories, *self.numeric, *(ITEM_FEATURES if self.genres else ())]
        _check_columns(frame, needed, "the frame to score")
        names = frame["scenario"].astype("str").to_numpy()
        scenario = pd.Index(self.scenarios).get_indexer(names)
        if (scenario < 0).any():
            raise DataError(f"scenario {names[scenario < 0][0]!r} was not seen in training; known: {self.scenarios}. "
                            f"Drop those rows or refit with them")
        columns = [pd.Index(known).get_indexer(frame[c].astype("str")) + 1 for c, known in self.categories.items()]
        batch = {"user": pd.Index(self.user_ids).get_indexer(frame["user_id"].to_numpy(np.int64)) + 1,
                 "item": pd.Index(self.item_ids).get_indexer(frame["item_id"].to_numpy(np.int64)) + 1,
                 "scenario": scenario,
                 "categories": np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0)),
                 "genres": self._genre_rows(frame), "numbers": self._number_rows(frame)}
        if "label" in frame.columns:
            batch["label"] = frame["label"].to_numpy(np.float32)
        return {k: torch.as_tensor(v, dtype=torch.float32 if k in ("genres", "numbers", "label") else torch.long)
                for k, v in batch.items()}

    def embedding(self, dim: int, item_vectors: np.ndarray | None = None, use_item_id: bool = True) -> FeatureEmbedding:
        """A fresh embedding sized for these vocabularies."""
        return FeatureEmbedding(len(self.user_ids), len(self.item_ids), len(self.scenarios),
                                [len(known) for known in self.categories.values()], len(self.genres),
                                len(self.numeric), dim, item_vectors, use_item_id)

    def _number_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """The numeric features min-max scaled with the training range, clipped to [0, 1], missing 0.

        shape: (n, n_numeric).
        """
        columns = []
        for column, (low, high) in self.numeric.items():
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
            scaled = np.clip((values - low) / (high - low) if high > low else values * 0.0, 0.0, 1.0)
            columns.append(np.nan_to_num(scaled, nan=0.0))
        return np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0))

    def _genre_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Multi-hot genres of each row, each row summing to one (or zero). shape: (n, n_genres)."""
        if not self.genres:
            return np.zeros((len(frame), 0), np.float32)
        codes, distinct = pd.factorize(frame["genres"].astype("str"))
        hot = (pd.Series(distinct).str.get_dummies(sep=GENRE_SEPARATOR)
               .reindex(columns=self.genres, fill_value=0).to_numpy(np.float32))  # (n_distinct, n_genres)
        return (hot / np.maximum(hot.sum(axis=1, keepdims=True), 1.0))[codes]


class ClickModel:
    """Base of the click-through estimators: settings, fitting with the shared loop, prediction and scores."""

    def __init__(self, dim: int = 16, hidden: Sequence[int] = (128, 64, 32), dropout: float = 0.0,
                 batch_norm: bool = True, num_epochs: int = 20, learning_rate: float = 1e-3,
                 weight_decay: float = 1e-5, lr_decay: tuple[int, float] | None = (2, 0.85), batch_size: int = 4096,
                 patience: int = 4, seed: int = 0, checkpoint_dir: str | Path | None = None,
                 show_progress: bool = False) -> None:
        self.dim = dim
        self.hidden = hidden
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.num_epochs = num_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.show_progress = show_progress

    def _network(self, embed: FeatureEmbedding, n_scenarios: int) -> nn.Module:
        raise NotImplementedError

    def _embedding(self, features: Features, vectors: np.ndarray | None) -> FeatureEmbedding:
        """The feature embedding; item vectors, if given, join the item's embedding."""
        return features.embedding(self.dim, vectors)

    def fit(self, train: pd.DataFrame, item_vectors: pd.DataFrame | None = None, *,
            valid: pd.DataFrame | None = None) -> ClickModel:
        """Learn from labelled interactions (e.g. click_through_split(dataset).train); `valid` stops early."""
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)  # a failed fit leaves the model unfitted
        self._check_params()
        _check_labelled(train, "train")
        if valid is not None:
            _check_labelled(valid, "valid")
        features = Features.learn(train)
        vectors = _aligned_vectors(item_vectors, features)
        seeded_generator(self.seed)
        network = self._network(self._embedding(features, vectors), len(features.scenarios))
        data, held_out = features.encode(train), None if valid is None else features.encode(valid)
        labels = data["label"]
        # the run's checkpoints are keyed by the settings and the exact encoded rows (side features included)
        arrays = [tensor.numpy() for part in (data, held_out or {}) for tensor in part.values()]

        def batches(rng: np.random.Generator) -> Iterator[torch.Tensor]:
            chunks = list(torch.as_tensor(rng.permutation(len(labels))).split(self.batch_size))
            if len(chunks) > 1 and len(chunks[-1]) == 1:  # batch normalisation needs two rows: join the last two
                chunks[-2:] = [torch.cat(chunks[-2:])]
            yield from chunks

        def loss(rows: torch.Tensor) -> torch.Tensor:
            logits = network({key: values[rows] for key, values in data.items()})
            return nn.functional.binary_cross_entropy_with_logits(logits, labels[rows])

        def validate() -> float:
            return roc_auc_score(held_out["label"].numpy(), _logits(network, held_out).numpy())

        self.history_: TrainHistory = train_module(
            network, batches, loss, validate=None if held_out is None else validate, num_epochs=self.num_epochs,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, lr_decay=self.lr_decay,
            patience=self.patience, seed=self.seed,
            checkpoint_dir=self.checkpoint_dir, run_key=run_key(self, *arrays, vectors),
            show_progress=self.show_progress, description=type(self).__name__)
        self.features_, self.network_ = features, network
        return self

    def _check_params(self) -> None:
        """A clear error for settings the network cannot be built with (the loop checks its own)."""
        owner = type(self).__name__
        for name in ("dim", "batch_size"):
            check_positive_int(owner, name, getattr(self, name))
        hidden = self.hidden
        if not isinstance(hidden, (tuple, list)) or not hidden:
            raise DataError(f"{owner}(hidden=...) must be a non-empty sequence of layer widths, e.g. (128, 64); "
                            f"got {hidden!r}")
        for position, width in enumerate(hidden):
            check_positive_int(owner, f"hidden[{position}]", width,
                               hint=f"hidden holds layer widths, e.g. (128, 64); got {hidden!r}")
        check_number(owner, "dropout", self.dropout, minimum=0, below=1)
        for name in ("show_progress", "batch_norm"):
            check_flag(owner, name, getattr(self, name))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Click probability of each row (user_id, item_id, scenario and the side features used in fit).

        shape: (len(frame),) float64.
        """
        if not hasattr(self, "network_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(train) first")
        return torch.sigmoid(_logits(self.network_, self.features_.encode(frame)).double()).numpy()

    def evaluate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """AUC and log loss per scenario (in training order) and over all rows ("all") on labelled rows."""
        _check_labelled(frame, "the frame to evaluate")
        probabilities = self.predict_proba(frame)
        return click_through_table(frame, probabilities, scenarios=self.features_.scenarios)


class SharedBottom(ClickModel):
    """Shared embeddings and bottom MLP, one tower per scenario (hidden[-1] is the towers' width)."""

    def __init__(self, dim: int = 16, hidden: Sequence[int] = (128, 8), dropout: float = 0.0,
                 batch_norm: bool = True, num_epochs: int = 20, learning_rate: float = 1e-3,
                 weight_decay: float = 1e-5, lr_decay: tuple[int, float] | None = (2, 0.85), batch_size: int = 4096,
                 patience: int = 4, seed: int = 0, checkpoint_dir: str | Path | None = None,
                 show_progress: bool = False) -> None:
        super().__init__(dim, hidden, dropout, batch_norm, num_epochs, learning_rate, weight_decay, lr_decay,
                         batch_size, patience, seed, checkpoint_dir, show_progress)

    def _network(self, embed: FeatureEmbedding, n_scenarios: int) -> nn.Module:
        return SharedBottomNetwork(embed, n_scenarios, self.hidden, self.dropout, self.batch_norm)


class STAR(ClickModel):
    """Star topology (Sheng et al. 2021) with partitioned normalisation and an auxiliary scenario network."""

    def _network(self, embed: FeatureEmbedding, n_scenarios: int) -> nn.Module:
        return StarNetwork(embed, n_scenarios, self.hidden, self.dropout, self.batch_norm)


class JointCTR(ClickModel):
    """The joint model, pointwise: item = projected text vector + ID embedding; STAR layers plus an FM term.

    use_text=False leaves the text out (no item_vectors needed); use_id=False leaves out the item
    ID embedding (users keep theirs: they have no text).
    """

    def __init__(self, dim: int = 16, hidden: Sequence[int] = (128, 64, 32), dropout: float = 0.0,
                 batch_norm: bool = True, num_epochs: int = 20, learning_rate: float = 1e-3,
                 weight_decay: float = 1e-5, lr_decay: tuple[int, float] | None = (2, 0.85), batch_size: int = 4096,
                 patience: int = 4, seed: int = 0, checkpoint_dir: str | Path | None = None,
                 show_progress: bool = False, use_text: bool = True, use_id: bool = True) -> None:
        super().__init__(dim, hidden, dropout, batch_norm, num_epochs, learning_rate, weight_decay, lr_decay,
                         batch_size, patience, seed, checkpoint_dir, show_progress)
        self.use_text = use_text
        self.use_id = use_id

    def _check_params(self) -> None:
        """The shared settings' checks plus the item switches."""
        super()._check_params()
        for name in ("use_text", "use_id"):
            check_flag(type(self).__name__, name, getattr(self, name))
        if not self.use_text and not self.use_id:
            raise DataError("JointCTR(use_text=False, use_id=False) leaves items without features; keep one on")

    def _embedding(self, features: Features, vectors: np.ndarray | None) -> FeatureEmbedding:
        """The feature embedding with the item parts the switches keep."""
        if self.use_text and vectors is None:
            raise DataError("JointCTR(use_text=True) needs item_vectors: a DataFrame indexed by item_id, e.g. "
                            "pd.DataFrame(TextEncoder().encode(items.text.tolist()), index=items.item_id); "
                            "or pass use_text=False")
        return features.embedding(self.dim, vectors if self.use_text else None, use_item_id=self.use_id)

    def _network(self, embed: FeatureEmbedding, n_scenarios: int) -> nn.Module:
        return JointNetwork(embed, n_scenarios, self.hidden, self.dropout, self.batch_norm)


def _logits(network: nn.Module, data: Batch) -> torch.Tensor:
    """The network's logits for every row, scored in chunks without gradients. shape: (n,)."""
    network.eval()
    with torch.inference_mode():
        rows = torch.arange(len(data["user"]))
        parts = [network({k: v[chunk] for k, v in data.items()}) for chunk in rows.split(PREDICT_CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """A clear error unless `frame` is a DataFrame with these columns."""
    require_columns(frame, columns, what, "make the frames with click_through_split(dataset)")


def _check_labelled(frame: pd.DataFrame, what: str) -> None:
    """A clear error unless `frame` has the id columns and 0/1 labels of both kinds."""
    _check_columns(frame, [*ID_COLUMNS, "label"], what)
    labels = frame["label"]
    if not (pd.api.types.is_numeric_dtype(labels) and labels.isin((0, 1)).all() and labels.nunique() == 2):
        raise DataError(f"{what} needs column 'label' holding 0 and 1, both present; make it with click_through_split")


def _aligned_vectors(item_vectors: pd.DataFrame | None, features: Features) -> np.ndarray | None:
    """Item vectors in the model's item order, row 0 (unknown item) zero. shape: (n_items + 1, d)."""
    if item_vectors is None:
        return None
    if not isinstance(item_vectors, pd.DataFrame) or item_vectors.empty:
        raise DataError("item_vectors must be a non-empty DataFrame indexed by item_id, one row of floats per item")
    values = item_vectors.to_numpy()
    numeric = np.issubdtype(values.dtype, np.number) and np.isfinite(values).all()
    if not numeric or item_vectors.index.duplicated().any():
        raise DataError("item_vectors must hold finite numbers, one row per item_id (no repeated index values)")
    missing = ~np.isin(features.item_ids, item_vectors.index.to_numpy())
    if missing.any():
        raise DataError(f"item_vectors lack {int(missing.sum())} training item(s), e.g. "
                        f"{features.item_ids[missing][0]}; encode every item's text before fit")
    aligned = item_vectors.loc[features.item_ids].to_numpy(np.float32)
    return np.vstack([np.zeros((1, aligned.shape[1]), np.float32), aligned])
