"""BPR matrix factorisation: one model for all scenarios (`BPRMF`) and one model per scenario (`SingleScenario`).

BPR-MF learns an embedding p_u per user and q_i per item from ids alone, so that each observed (user, item)
pair scores above an item j drawn uniformly from the catalogue:

    loss = -log sigmoid(<p_u, q_i> - <p_u, q_j>) + reg * (|p_u|^2 + |q_i|^2 + |q_j|^2)

A drawn negative that the user has in training is drawn again (up to NEGATIVE_REDRAWS times). Items that
never occur in training only ever appear as negatives, so they end up at the bottom of every ranking.

`BPRMF` learns from all scenarios together and ignores the scenario: its scores are the same in every
scenario. `SingleScenario` is the traditional single-scenario system: one BPR-MF per scenario, each trained
only on that scenario's interactions; in scenario s it scores with s's model, and a user with no training
interactions in s gets s's item popularity instead.

Both stop early on validation NDCG@10. With distributed=True, run under torchrun, each process trains on its
share of every batch and DDP averages the gradients (see xscene_lib.distributed); the result equals one
process's up to float summation order. This module also holds what the other trained models share: the
early-stopping metric (`validation_ndcg`), the uniform negative sampler, the checkpoint run key and the
parameter checks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from xscene_lib import metrics
from xscene_lib import train as training
from xscene_lib.data import DataError
from xscene_lib.distributed import SINGLE, WorkerGroup, setup
from xscene_lib.recommend import Recommender
from xscene_lib.train import TrainHistory

VALIDATION_ROWS = 2_000  # validation interactions sampled for early stopping
VALIDATION_K = 10
NEGATIVE_REDRAWS = 3
INIT_STD = 0.1
SCORE_CHUNK = 4_096  # users scored at once


# --- shared by the trained models ----------------------------------------------------------------------------


def check_positive_int(owner: str, name: str, value: object) -> None:
    """A clear error unless `value` is an integer >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{owner}({name}=...) must be a positive integer, got {value!r}")


def check_number(owner: str, name: str, value: object, *, positive: bool) -> None:
    """A clear error unless `value` is a finite number, > 0 if `positive` else >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not np.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise DataError(f"{owner}({name}=...) must be a finite number {bound}, got {value!r}")


def check_flag(owner: str, name: str, value: object) -> None:
    """A clear error unless `value` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"{owner}({name}=...) must be True or False, got {value!r}")


def worker_group(distributed: bool) -> WorkerGroup:
    """The processes a model trains on: those torchrun started when distributed, else this one."""
    return setup() if distributed else SINGLE


def validation_ndcg(model: Recommender, train: pd.DataFrame, validation: pd.DataFrame | None, *,
                    seed: int = 0) -> Callable[[], float] | None:
    """A function giving the model's current NDCG@10 on (a sample of) the validation rows; None without rows.

    Full ranking over all candidate items, the user's training items left out (see metrics.target_ranks).
    """
    if validation is None or validation.empty:
        return None
    if len(validation) > VALIDATION_ROWS:
        validation = validation.sample(n=VALIDATION_ROWS, random_state=seed)
    history = train[train["user_id"].isin(validation["user_id"])]

    def ndcg() -> float:
        ranks = metrics.target_ranks(model, history, validation)
        return float(metrics.ranking_metrics(ranks, ks=(VALIDATION_K,))[f"ndcg@{VALIDATION_K}"].mean())

    return ndcg


def seen_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique keys user * n_items + item of the training pairs, for `uniform_negatives`."""
    return np.unique(users.astype(np.int64) * n_items + items)


def uniform_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int, keys: np.ndarray) -> np.ndarray:
    """One item per user drawn uniformly from the catalogue, redrawn when the user has it in training."""
    negatives = rng.integers(n_items, size=len(users))
    for _ in range(NEGATIVE_REDRAWS):
        wanted = users.astype(np.int64) * n_items + negatives
        position = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        clash = keys[position] == wanted
        if not clash.any():
            break
        negatives[clash] = rng.integers(n_items, size=int(clash.sum()))
    return negatives


def triples(users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int
            ) -> Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, ...]]]:
    """Epochs of shuffled (user, positive item, uniform negative item) batches, each a tensor of shape (B,)."""
    keys = seen_keys(users, items, n_items)

    def epoch(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        order = rng.permutation(len(users))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            negatives = uniform_negatives(rng, users[rows], n_items, keys)
            yield torch.as_tensor(users[rows]), torch.as_tensor(items[rows]), torch.as_tensor(negatives)

    return epoch


def run_key(model: Recommender, *arrays: np.ndarray | None) -> str:
    """A hash of the model's settings and its training data, naming one run in a checkpoint folder."""
    settings = {name: repr(value) for name, value in sorted(vars(model).items())
                if not name.startswith("_") and not name.endswith("_")
                and name not in ("checkpoint_dir", "show_progress", "distributed")}
    digest = hashlib.sha256(json.dumps([type(model).__name__, settings]).encode())
    for array in arrays:
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def history_means(seen: sp.csr_matrix, item_vectors: np.ndarray) -> np.ndarray:
    """Each user's mean item vector over their training items. shape: (n_users, d)."""
    counts = np.maximum(np.asarray(seen.sum(axis=1)), 1.0)  # (n_users, 1)
    return np.asarray(seen.multiply(1.0 / counts).tocsr() @ item_vectors, dtype=np.float32)


def scores_in_chunks(users: Callable[[torch.Tensor], torch.Tensor], items: torch.Tensor,
                     user_index: np.ndarray) -> np.ndarray:
    """users(index) @ items.T for every user, SCORE_CHUNK users at a time, without gradients.

    shape: items (n_items, dim), users(index) (B, dim) -> (len(user_index), n_items).
    """
    with torch.inference_mode():
        chunks = [users(torch.as_tensor(user_index[start:start + SCORE_CHUNK])) @ items.T
                  for start in range(0, len(user_index), SCORE_CHUNK)]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, items.shape[0]), np.float32)


# --- the models ------------------------------------------------------------------------------------------------


class _Factors(torch.nn.Module):
    """One embedding per user and per item; a pair scores the dot product of its two embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.users = torch.nn.Embedding(n_users, dim)  # (n_users, dim)
        self.items = torch.nn.Embedding(n_items, dim)  # (n_items, dim)
        torch.nn.init.normal_(self.users.weight, std=INIT_STD)
        torch.nn.init.normal_(self.items.weight, std=INIT_STD)

    def all_scores(self, user_index: np.ndarray) -> np.ndarray:
        """Scores of every item for the given users. shape: (n_users, n_items)."""
        return scores_in_chunks(self.users, self.items.weight, user_index)


class BPRMF(Recommender):
    """Matrix factorisation from ids trained with BPR on all scenarios at once; scores ignore the scenario."""

    def __init__(self, dim: int = 64, num_epochs: int = 50, learning_rate: float = 1e-2, weight_decay: float = 0.0,
                 reg: float = 1e-5, batch_size: int = 2048, patience: int = 5, seed: int = 0,
                 checkpoint_dir: str | Path | None = None, show_progress: bool = True,
                 distributed: bool = False) -> None:
        self.dim = dim
        self.num_epochs = num_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.reg = reg
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.show_progress = show_progress
        self.distributed = distributed

    def _check_params(self) -> None:
        owner = type(self).__name__
        for name in ("dim", "batch_size"):
            check_positive_int(owner, name, getattr(self, name))
        check_number(owner, "reg", self.reg, positive=False)
        check_flag(owner, "distributed", self.distributed)

    def _new_factors(self) -> _Factors:
        """Freshly initialised embeddings for every user and item, seeded."""
        training.seeded_generator(self.seed)
        return _Factors(len(self.user_ids_), len(self.item_ids_), self.dim)

    def _train_factors(self, module: _Factors, users: np.ndarray, items: np.ndarray, train: pd.DataFrame,
                       validation: pd.DataFrame | None, folder: Path | None, description: str) -> TrainHistory:
        """Train one BPR-MF on the given training pairs (indices into the whole user list and catalogue)."""
        reg, workers = float(self.reg), worker_group(self.distributed)

        def loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            mine = workers.rows(len(batch[0]))  # this process's rows of the batch: all of them on one process
            user, positive, negative = (column[mine] for column in batch)  # (b,) each
            p_u, q_i, q_j = module.users(user), module.items(positive), module.items(negative)  # (b, dim) each
            margin = (p_u * (q_i - q_j)).sum(dim=1)  # (b,)
            penalty = (p_u.square().sum() + q_i.square().sum() + q_j.square().sum()) / workers.divisor(len(batch[0]))
            return workers.mean(-F.logsigmoid(margin), len(batch[0])) + reg * penalty

        return training.train(
            module, triples(users, items, len(self.item_ids_), self.batch_size), loss,
            validate=validation_ndcg(self, train, validation, seed=self.seed), num_epochs=self.num_epochs,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, patience=self.patience, seed=self.seed,
            checkpoint_dir=folder, run_key=run_key(self, users, items), show_progress=self.show_progress,
            description=description, workers=workers)

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        folder = None if self.checkpoint_dir is None else Path(self.checkpoint_dir)
        self.module_ = self._new_factors()
        self.history_ = self._train_factors(self.module_, users, items, train, self._validation, folder, "BPR-MF")

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """Dot products of user and item embeddings, the same in every scenario. shape: (n_users, n_items)."""
        return self.module_.all_scores(user_index)

    def item_vectors(self) -> np.ndarray:
        """The item embeddings (score = user . item, in every scenario). shape: (n_items, dim)."""
        self._check_fitted()
        return self.module_.items.weight.detach().numpy().copy()

    def user_vectors(self, user_index: np.ndarray, scenario_index: int = 0) -> np.ndarray:
        """The user embeddings, the same in every scenario. shape: (len(user_index), dim)."""
        self._check_fitted()
        with torch.inference_mode():
            return self.module_.users(torch.as_tensor(np.asarray(user_index, dtype=np.int64))).numpy()


class SingleScenario(BPRMF):
    """One BPR-MF per scenario, each trained only on its scenario; popularity for users new to a scenario."""

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        self.trained_users_ = self.scenario_share_.T > 0  # (n_scenarios, n_users)
        self.modules_: list[_Factors] = []
        self.histories_: list[TrainHistory] = []
        scenario_names = train["scenario"].astype("str").to_numpy()
        for index, name in enumerate(self.scenarios_):
            validation = self._validation
            if validation is not None:
                validation = validation[validation["scenario"].astype("str") == name]
            folder = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / f"scenario-{index}"
            self.modules_.append(self._new_factors())  # scored by the validation while it trains
            rows = scenarios == index
            self.histories_.append(self._train_factors(self.modules_[index], users[rows], items[rows],
                                                       train[scenario_names == name], validation, folder,
                                                       f"BPR-MF on {name}"))

    def item_vectors(self) -> np.ndarray:
        raise DataError("SingleScenario keeps one model per scenario, not one item vector per item; use recommend()")

    def user_vectors(self, user_index: np.ndarray, scenario_index: int = 0) -> np.ndarray:
        raise DataError("SingleScenario keeps one model per scenario, not one user vector per user; use recommend()")

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """Scenario s's model for users it was trained on, s's popularity for the rest. shape: (n_users, n_items)."""
        scores = np.repeat(self.popularity_[scenario_index][None, :], len(user_index), axis=0)
        trained = self.trained_users_[scenario_index][user_index]
        if trained.any():
            scores[trained] = self.modules_[scenario_index].all_scores(user_index[trained])
        return scores
