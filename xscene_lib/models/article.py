"""The article's model (its section 4), implemented as written: one affine map on frozen text vectors, cosine score.

    f(x) = Embed(x) · W + b                     one W (n x m) and b (m,) shared by users and items
    Score(u, i) = cos(f(u), f(i))

Embed(i) is item i's (frozen) text vector; Embed(u) is the mean of the text vectors of the items in u's
training history, all scenarios together. W ~ Normal(0, 1/sqrt(n)) and b ~ Normal(0, 1/n), n the text
vector width; the article writes Normal(mean, spread) without saying whether the spread is a variance or a
standard deviation, and we read it as the standard deviation (1/sqrt(n) is the usual scale of a layer's
weights). m, the width of f, defaults to n, as in the article's code (input_dim = hidden_dim = 768).

The article names a loss but not which one; we train W and b with BPR on the cosine scores: each training
pair (u, i) should score above an item j drawn uniformly from the catalogue,
loss = -log sigmoid(cos(f(u), f(i)) - cos(f(u), f(j))).

Faithful, not improved, so that its limits can be measured:
- no scenario input at all: the same scores in every scenario, so scenario weights change nothing;
- no id embeddings: two users with the same mean history text get the same scores, and an item can only
  be told apart from another through its text;
- a cosine score bounded in [-1, 1] with no temperature: BPR's margins stay within [-2, 2], so the loss can
  never push a positive far above the negatives;
- since f is affine and Embed(u) is a mean, f(u) is the centroid of f over u's history: a user is never
  represented apart from the items they have seen.

Section 4.2 also initialises a separate Weights_cosine and Bias_cosine for the recommendation model, yet
writes f(u) = Embed(u) there, so they are never used; we keep the one shared W and b of section 4.1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xscene_lib.models.fitting import history_means, run_key, scores_in_chunks, triples, validation_ndcg
from xscene_lib.models.base import Recommender
from xscene_lib.training.loop import seeded_generator, train_module
from xscene_lib.data.validation import check_positive_int


class _AffineCosine(torch.nn.Module):
    """f(x) = x W + b applied to frozen user and item text vectors; scores are cosines of f(user) and f(item)."""

    def __init__(self, item_text: np.ndarray, user_text: np.ndarray, dim: int) -> None:
        super().__init__()
        width = item_text.shape[1]  # n, the text vector width
        self.weight = torch.nn.Parameter(torch.randn(width, dim) / math.sqrt(width))  # (n, m), std 1/sqrt(n)
        self.bias = torch.nn.Parameter(torch.randn(dim) / width)  # (m,), std 1/n
        self.register_buffer("item_text", torch.tensor(item_text), persistent=False)  # (n_items, n)
        self.register_buffer("user_text", torch.tensor(user_text), persistent=False)  # (n_users, n)

    def users(self, user: torch.Tensor) -> torch.Tensor:
        """f(u), unit length. shape: (B, m)."""
        return F.normalize(self.user_text[user] @ self.weight + self.bias, dim=-1)

    def items(self, item: torch.Tensor | None = None) -> torch.Tensor:
        """f(i), unit length, for the given items or all of them. shape: (B, m) or (n_items, m)."""
        text = self.item_text if item is None else self.item_text[item]
        return F.normalize(text @ self.weight + self.bias, dim=-1)


class ArticleModel(Recommender):
    """The article's section 4: a shared affine map of frozen text vectors, cosine score, no scenario input."""

    needs_item_vectors = True

    def __init__(self, dim: int | None = None, num_epochs: int = 30, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 2048, patience: int = 3, seed: int = 0,
                 checkpoint_dir: str | Path | None = None, show_progress: bool = True) -> None:
        self.dim = dim
        self.num_epochs = num_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.show_progress = show_progress

    def _check_params(self) -> None:
        owner = type(self).__name__
        if self.dim is not None:
            check_positive_int(owner, "dim", self.dim)
        check_positive_int(owner, "batch_size", self.batch_size)

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        user_text = history_means(self.seen_, item_vectors)  # (n_users, n): Embed(u)
        seeded_generator(self.seed)
        module = _AffineCosine(item_vectors, user_text, item_vectors.shape[1] if self.dim is None else self.dim)
        self.module_ = module

        def loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            user, positive, negative = batch  # (B,) each
            # f of each distinct user and item of the batch once (popular ones recur), then back to the rows
            distinct_users, user_row = torch.unique(user, return_inverse=True)
            distinct_items, item_row = torch.unique(torch.cat([positive, negative]), return_inverse=True)
            f_u = module.users(distinct_users)[user_row]  # (B, m)
            f_positive, f_negative = module.items(distinct_items)[item_row].split(len(user))  # (B, m) each
            margin = (f_u * (f_positive - f_negative)).sum(dim=1)  # (B,): cos_ui - cos_uj
            return -F.logsigmoid(margin).mean()

        self.history_ = train_module(
            module, triples(users, items, len(self.item_ids_), self.batch_size), loss,
            validate=validation_ndcg(self, train, self._validation, seed=self.seed), num_epochs=self.num_epochs,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, patience=self.patience, seed=self.seed,
            checkpoint_dir=self.checkpoint_dir, run_key=run_key(self, users, items, item_vectors),
            show_progress=self.show_progress, description="article model")

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """cos(f(u), f(i)) for every item, the same in every scenario. shape: (n_users, n_items)."""
        with torch.inference_mode():
            items = self.module_.items()  # (n_items, m)
        return scores_in_chunks(self.module_.users, items, user_index)
