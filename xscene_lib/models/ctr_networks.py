"""The torch networks behind the click-through models: a shared feature embedding and three heads.

Every network maps a batch (a dict of index tensors, see `Batch`) to one logit per row:

- `SharedBottomNetwork`: shared embeddings and bottom MLP, one tower per scenario.
- `StarNetwork`: STAR (Sheng et al. 2021): partitioned normalisation, layers whose weights are the
  shared weights times the scenario's (element-wise) and whose biases are their sum, and an
  auxiliary network fed the scenario embedding whose logit is added.
- `JointNetwork`: an MLP on the features and a scenario embedding whose hidden layers are
  modulated per scenario by FiLM (scale gamma, shift beta).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]  # user (B,), item (B,), scenario (B,), categories (B, F), genres (B, G) [, label (B,)]


class FeatureEmbedding(nn.Module):
    """Embeds a batch's user, item and side features into one row. Output shape: (B, width).

    Index 0 of users, items and categories is "unknown" and embeds to zero. The item's embedding is
    its ID embedding (if use_item_id) plus a projection of its row of `item_vectors` (if given).
    """

    def __init__(self, n_users: int, n_items: int, n_scenarios: int, category_sizes: Sequence[int], n_genres: int,
                 dim: int, item_vectors: np.ndarray | None = None, use_item_id: bool = True) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users + 1, dim, padding_idx=0)
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0) if use_item_id else None
        self.text = None if item_vectors is None else nn.Linear(item_vectors.shape[1], dim)
        if item_vectors is not None:  # (n_items + 1, d), row 0 (unknown item) zero; an input, not a weight
            self.register_buffer("item_vectors", torch.as_tensor(item_vectors), persistent=False)
        self.categories = nn.ModuleList(nn.Embedding(size + 1, dim, padding_idx=0) for size in category_sizes)
        self.genres = nn.Linear(n_genres, dim, bias=False) if n_genres else None  # mean of the genres' embeddings
        self.scenario = nn.Embedding(n_scenarios, dim)
        self.width = dim * (2 + len(self.categories) + (self.genres is not None))

    def item_vector(self, batch: Batch) -> torch.Tensor:
        """The item's ID embedding plus its projected text vector (each if used). shape: (B, dim)."""
        parts = [] if self.item is None else [self.item(batch["item"])]
        if self.text is not None:
            parts.append(self.text(self.item_vectors[batch["item"]]))
        return torch.stack(parts).sum(dim=0)

    def forward(self, batch: Batch) -> torch.Tensor:
        """The concatenated field embeddings of the batch's rows. shape: (B, width)."""
        fields = [self.user(batch["user"]), self.item_vector(batch)]  # each (B, dim)
        fields += [embed(batch["categories"][:, k]) for k, embed in enumerate(self.categories)]
        if self.genres is not None:
            fields.append(self.genres(batch["genres"]))
        return torch.cat(fields, dim=1)  # (B, width)


def _mlp(width: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    """Linear + ReLU + dropout layers of the given widths, and the output width."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers), width


class SharedBottomNetwork(nn.Module):
    """Shared embeddings and bottom layers (all hidden layers but the last), one tower per scenario."""

    def __init__(self, embed: FeatureEmbedding, n_scenarios: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.embed = embed
        self.bottom, width = _mlp(embed.width + embed.scenario.embedding_dim, hidden[:-1], dropout)
        self.towers = nn.ModuleList(nn.Sequential(_mlp(width, hidden[-1:], dropout)[0], nn.Linear(hidden[-1], 1))
                                    for _ in range(n_scenarios))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of the batch's rows, each from its scenario's tower. shape: (B,)."""
        shared = self.bottom(torch.cat([self.embed(batch), self.embed.scenario(batch["scenario"])], dim=1))
        every = torch.cat([tower(shared) for tower in self.towers], dim=1)  # (B, n_scenarios)
        return every.gather(1, batch["scenario"][:, None]).squeeze(1)  # (B,) logits


class PartitionedNorm(nn.Module):
    """Batch normalisation with each scenario's own moments and scale = shared * scenario's (bias: sum)."""

    def __init__(self, width: int, n_scenarios: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.scale, self.shift = nn.Parameter(torch.ones(width)), nn.Parameter(torch.zeros(width))
        self.scenario_scale = nn.Parameter(torch.ones(n_scenarios, width))
        self.scenario_shift = nn.Parameter(torch.zeros(n_scenarios, width))
        self.register_buffer("running_mean", torch.zeros(n_scenarios, width))
        self.register_buffer("running_var", torch.ones(n_scenarios, width))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """x (B, width) normalised with the moments of each row's scenario. shape: (B, width)."""
        if self.training:  # moments of each scenario's rows in this batch
            member = nn.functional.one_hot(scenario, len(self.running_mean)).T.to(x.dtype)  # (S, B)
            count = member.sum(dim=1, keepdim=True)  # (S, 1)
            mean = member @ x / count.clamp(min=1)  # (S, width)
            var = member @ (x - mean[scenario]) ** 2 / count.clamp(min=1)
            with torch.no_grad():
                seen = count.squeeze(1) > 0
                self.running_mean[seen] += self.momentum * (mean[seen] - self.running_mean[seen])
                self.running_var[seen] += self.momentum * (var[seen] - self.running_var[seen])
        else:
            mean, var = self.running_mean, self.running_var
        normal = (x - mean[scenario]) / torch.sqrt(var[scenario] + self.eps)  # (B, width)
        return normal * self.scale * self.scenario_scale[scenario] + self.shift + self.scenario_shift[scenario]


class StarLinear(nn.Module):
    """A linear layer whose weight is shared * scenario's (element-wise) and bias shared + scenario's."""

    def __init__(self, width: int, size: int, n_scenarios: int) -> None:
        super().__init__()
        shared = nn.Linear(width, size)  # for its initialisation
        self.weight = nn.Parameter(shared.weight.detach().T.clone())  # (width, size)
        self.bias = nn.Parameter(shared.bias.detach().clone())  # (size,)
        self.scenario_weight = nn.Parameter(torch.ones(n_scenarios, width, size))
        self.scenario_bias = nn.Parameter(torch.zeros(n_scenarios, size))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """x (B, width) through the layer of each row's scenario. shape: (B, size)."""
        weights = self.weight * self.scenario_weight  # (S, width, size)
        order = torch.argsort(scenario, stable=True)  # the rows grouped by scenario
        groups = x[order].split(torch.bincount(scenario, minlength=len(weights)).tolist())
        own = torch.cat([rows @ weights[s] for s, rows in enumerate(groups)])[torch.argsort(order)]  # (B, size)
        return own + self.bias + self.scenario_bias[scenario]


class StarNetwork(nn.Module):
    """STAR: partitioned normalisation, star-topology layers, plus an auxiliary network fed the scenario."""

    def __init__(self, embed: FeatureEmbedding, n_scenarios: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.embed = embed
        self.norm = PartitionedNorm(embed.width, n_scenarios)
        widths = [embed.width, *hidden, 1]
        self.layers = nn.ModuleList(StarLinear(a, b, n_scenarios) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = nn.Dropout(dropout)
        auxiliary, width = _mlp(embed.width + embed.scenario.embedding_dim, hidden[-1:], dropout)
        self.auxiliary = nn.Sequential(auxiliary, nn.Linear(width, 1))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of the batch's rows: star network plus auxiliary network. shape: (B,)."""
        fields, scenario = self.embed(batch), batch["scenario"]  # (B, width), (B,)
        x = self.norm(fields, scenario)
        for layer in self.layers[:-1]:
            x = self.dropout(torch.relu(layer(x, scenario)))
        main = self.layers[-1](x, scenario).squeeze(1)  # (B,)
        return main + self.auxiliary(torch.cat([fields, self.embed.scenario(scenario)], dim=1)).squeeze(1)


class JointNetwork(nn.Module):
    """The joint model's pointwise head: an MLP on the features and a scenario embedding, FiLM per scenario."""

    def __init__(self, embed: FeatureEmbedding, n_scenarios: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.embed = embed
        widths = [embed.width + embed.scenario.embedding_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.gamma = nn.ParameterList(nn.Parameter(torch.ones(n_scenarios, size)) for size in hidden)
        self.beta = nn.ParameterList(nn.Parameter(torch.zeros(n_scenarios, size)) for size in hidden)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(widths[-1], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of the batch's rows. shape: (B,)."""
        scenario = batch["scenario"]
        x = torch.cat([self.embed(batch), self.embed.scenario(scenario)], dim=1)
        for layer, gamma, beta in zip(self.layers, self.gamma, self.beta):
            x = self.dropout(gamma[scenario] * torch.relu(layer(x)) + beta[scenario])  # FiLM on the activations
        return self.output(x).squeeze(1)  # (B,) logits
