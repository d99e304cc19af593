"""What the trained models share: their worker group, validation NDCG for early stopping, uniform negatives,
BPR triples, the key of a run, users' mean history vectors and chunked scoring."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from xscene_lib.evaluation.metrics import ranking_metrics, target_ranks
from xscene_lib.training.distributed import SINGLE, WorkerGroup, setup
from xscene_lib.data.validation import DataError
from xscene_lib.models.base import Recommender

VALIDATION_ROWS = 2_000  # validation interactions sampled for early stopping
VALIDATION_K = 10
NEGATIVE_REDRAWS = 3
SCORE_CHUNK = 4_096  # users scored at once


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
        ranks = target_ranks(model, history, validation)
        return float(ranking_metrics(ranks, ks=(VALIDATION_K,))[f"ndcg@{VALIDATION_K}"].mean())

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


def run_key(model: object, *arrays: np.ndarray | None) -> str:
    """A hash of the model's settings and its training data, naming one run in a checkpoint folder.

    `model` is any estimator whose settings are its public attributes: a Recommender or a click-through model.
    """
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


def text_switch(model: Recommender, item_vectors: pd.DataFrame | None, items: Sequence[int] | None
                ) -> tuple[pd.DataFrame | None, Sequence[int] | None]:
    """The (item_vectors, items) that fit passes on for a model with a `use_text` switch.

    With use_text=True the vectors are required; with use_text=False they are dropped, their items kept as the
    candidates, so a no-text twin ranks the same catalogue as its text model.
    """
    if model.use_text and item_vectors is None:
        raise DataError(f"{type(model).__name__}(use_text=True) needs item_vectors: a DataFrame indexed by "
                        f"item_id, e.g. TextEncoder().encode_items(dataset.items); or set use_text=False for ids only")
    if not model.use_text and item_vectors is not None:
        return None, item_vectors.index if items is None else items
    return item_vectors, items
