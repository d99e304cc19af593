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
share of every batch and DDP averages the gradients (see xscene_lib.training.distributed); the result equals one
process's up to float summation order. `BPRMF` is a two-tower model (user . item); `SingleScenario`, whose
item side differs per scenario, is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xscene_lib.models.fitting import run_key, scores_in_chunks, triples, validation_ndcg, worker_group
from xscene_lib.models.base import Recommender
from xscene_lib.training.loop import TrainHistory, seeded_generator, train_module
from xscene_lib.models.two_tower import TwoTowerRecommender
from xscene_lib.data.validation import check_flag, check_number, check_positive_int

INIT_STD = 0.1


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


class _BPRTraining(Recommender):
    """The settings and the training of BPR-MF, shared by `BPRMF` and `SingleScenario`."""

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
        seeded_generator(self.seed)
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

        return train_module(
            module, triples(users, items, len(self.item_ids_), self.batch_size), loss,
            validate=validation_ndcg(self, train, validation, seed=self.seed), num_epochs=self.num_epochs,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, patience=self.patience, seed=self.seed,
            checkpoint_dir=folder, run_key=run_key(self, users, items), show_progress=self.show_progress,
            description=description, workers=workers)


class BPRMF(_BPRTraining, TwoTowerRecommender):
    """Matrix factorisation from ids trained with BPR on all scenarios at once; scores ignore the scenario."""

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


class SingleScenario(_BPRTraining):
    """One BPR-MF per scenario, each trained only on its scenario; popularity for users new to a scenario."""

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        self.trained_users_ = self.scenario_share_.T > 0  # (n_scenarios, n_users)
        self.module_ = torch.nn.ModuleList()  # one _Factors per scenario, in the order of scenarios_
        self.history_: list[TrainHistory] = []  # one per scenario
        scenario_names = train["scenario"].astype("str").to_numpy()
        for index, name in enumerate(self.scenarios_):
            validation = self._validation
            if validation is not None:
                validation = validation[validation["scenario"].astype("str") == name]
            folder = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / f"scenario-{index}"
            self.module_.append(self._new_factors())  # scored by the validation while it trains
            rows = scenarios == index
            self.history_.append(self._train_factors(self.module_[index], users[rows], items[rows],
                                                     train[scenario_names == name], validation, folder,
                                                     f"BPR-MF on {name}"))

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """Scenario s's model for users it was trained on, s's popularity for the rest. shape: (n_users, n_items)."""
        scores = np.repeat(self.popularity_[scenario_index][None, :], len(user_index), axis=0)
        trained = self.trained_users_[scenario_index][user_index]
        if trained.any():
            scores[trained] = self.module_[scenario_index].all_scores(user_index[trained])
        return scores
