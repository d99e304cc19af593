"""The torch networks behind the click-through models: a shared feature embedding and three heads.

Every network maps a batch (a dict of index tensors, see `Batch`) to one logit per row:

- `SharedBottomNetwork`: shared embeddings and bottom MLP, one tower per scenario.
- `StarNetwork`: STAR (Sheng et al. 2021): partitioned normalisation, layers whose weights are the
  shared weights times the scenario's (element-wise) and whose biases are their sum, and an
  auxiliary network fed the scenario embedding whose logit is added.
- `JointNetwork`: the book's joint model in pointwise form: STAR's scenario-specific layers on the
  features (the item being its ID embedding plus its projected text vector), plus a factorisation-machine
  term, the explicit pairwise crosses of the feature embeddings (Rendle 2010).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]  # user, item, scenario (B,); categories (B, F); genres (B, G); numbers (B, N); label
EMBEDDING_STD = 1e-4  # embeddings start as N(0, 1e-4), as the benchmark's models start theirs


class FeatureEmbedding(nn.Module):
    """Embeds a batch's user, item and side features into one row. Output shape: (B, width).

    Index 0 of users, items and categories is "unknown" and embeds to zero. The item's embedding is
    its ID embedding (if use_item_id) plus a projection of its row of `item_vectors` (if given). The
    numeric features (already scaled) join the row as they are.
    """

    def __init__(self, n_users: int, n_items: int, n_scenarios: int, category_sizes: Sequence[int], n_genres: int,
                 n_numbers: int, dim: int, item_vectors: np.ndarray | None = None, use_item_id: bool = True) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users + 1, dim, padding_idx=0)
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0) if use_item_id else None
        self.text = None if item_vectors is None else nn.Linear(item_vectors.shape[1], dim)
        if item_vectors is not None:  # (n_items + 1, d), row 0 (unknown item) zero; an input, not a weight
            self.register_buffer("item_vectors", torch.as_tensor(item_vectors), persistent=False)
        self.categories = nn.ModuleList(nn.Embedding(size + 1, dim, padding_idx=0) for size in category_sizes)
        self.genres = nn.Linear(n_genres, dim, bias=False) if n_genres else None  # mean of the genres' embeddings
        self.scenario = nn.Embedding(n_scenarios, dim)
        for table in [t for t in (self.user, self.item, *self.categories, self.scenario) if t is not None]:
            nn.init.normal_(table.weight, 0.0, EMBEDDING_STD)
            if table.padding_idx is not None:  # "unknown" stays zero
                nn.init.zeros_(table.weight[table.padding_idx])
        self.width = dim * (2 + len(self.categories) + (self.genres is not None)) + n_numbers

    def item_vector(self, batch: Batch) -> torch.Tensor:
        """The item's ID embedding plus its projected text vector (each if used). shape: (B, dim)."""
        parts = [] if self.item is None else [self.item(batch["item"])]
        if self.text is not None:
            item = batch["item"]  # (B,)
            if len(item) >= len(self.item_vectors):  # project the whole catalogue once, then pick: cheaper
                parts.append(self.text(self.item_vectors)[item])
            else:
                parts.append(self.text(self.item_vectors[item]))
        return torch.stack(parts).sum(dim=0)

    def fields(self, batch: Batch) -> torch.Tensor:
        """The field embeddings of the batch's rows: user, item, categories, genres. shape: (B, F, dim)."""
        fields = [self.user(batch["user"]), self.item_vector(batch)]  # each (B, dim)
        fields += [embed(batch["categories"][:, k]) for k, embed in enumerate(self.categories)]
        if self.genres is not None:
            fields.append(self.genres(batch["genres"]))
        return torch.stack(fields, dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """The concatenated field embeddings and numeric features of the batch's rows. shape: (B, width)."""
        return self.flat(self.fields(batch), batch)

    def flat(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Field embeddings (B, F, dim) side by side, then the numeric features. shape: (B, width)."""
        return torch.cat([fields.flatten(1), batch["numbers"]], dim=1)


def _mlp(width: int, hidden: Sequence[int], dropout: float, batch_norm: bool) -> tuple[nn.Sequential, int]:
    """Linear (+ batch normalisation) + ReLU + dropout layers of the given widths, and the output width."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), *([nn.BatchNorm1d(size)] if batch_norm else []), nn.ReLU(),
                   nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers), width


class SharedBottomNetwork(nn.Module):
    """Shared embeddings and bottom layers (all hidden layers but the last), one tower per scenario.

    The scenario enters through its tower only (its embedding is not an input), as in the benchmark.
    """

    def __init__(self, embed: FeatureEmbedding, n_scenarios: int, hidden: Sequence[int], dropout: float,
                 batch_norm: bool) -> None:
        super().__init__()
        self.embed = embed
        self.bottom, width = _mlp(embed.width, hidden[:-1], dropout, batch_norm)
        self.towers = nn.ModuleList(nn.Sequential(_mlp(width, hidden[-1:], dropout, batch_norm)[0],
                                                  nn.Linear(hidden[-1], 1)) for _ in range(n_scenarios))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of the batch's rows, each from its scenario's tower. shape: (B,)."""
        shared = self.bottom(self.embed(batch))  # (B, hidden[-2])
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

    def forward(self, rows: torch.Tensor, scenario: int) -> torch.Tensor:
        """The rows (n, width) of one scenario, normalised with that scenario's moments. shape: (n, width)."""
        if self.training:  # the moments of this scenario's rows in the batch (centred: Tensor.var(dim=0) is slow)
            mean = rows.mean(dim=0)
            var = (rows - mean).pow(2).mean(dim=0)
            with torch.no_grad():
                self.running_mean[scenario] += self.momentum * (mean - self.running_mean[scenario])
                self.running_var[scenario] += self.momentum * (var - self.running_var[scenario])
        else:
            mean, var = self.running_mean[scenario], self.running_var[scenario]
        normal = (rows - mean) / torch.sqrt(var + self.eps)
        return normal * (self.scale * self.scenario_scale[scenario]) + (self.shift + self.scenario_shift[scenario])


class StarLinear(nn.Module):
    """A linear layer whose weight is shared * scenario's (element-wise) and bias shared + scenario's."""

    def __init__(self, width: int, size: int, n_scenarios: int) -> None:
        super().__init__()
        shared = nn.Linear(width, size)  # for its initialisation
        self.weight = nn.Parameter(shared.weight.detach().T.clone())  # (width, size)
        self.bias = nn.Parameter(shared.bias.detach().clone())  # (size,)
        self.scenario_weight = nn.Parameter(torch.ones(n_scenarios, width, size))
        self.scenario_bias = nn.Parameter(torch.zeros(n_scenarios, size))

    def forward(self, rows: torch.Tensor, scenario: int) -> torch.Tensor:
        """The rows (n, width) of one scenario through that scenario's layer. shape: (n, size)."""
        return torch.addmm(self.bias + self.scenario_bias[scenario], rows, self.weight * self.scenario_weight[scenario])


class StarNetwork(nn.Module):
    """STAR: partitioned normalisation, star-topology layers, plus an auxiliary network fed the scenario.

    The rows of a batch are grouped by scenario once; each group runs through its scenario's normalisation
    and layers, and the logits return to the batch's order at the end.
    """

    def __init__(self, embed: FeatureEmbedding, n_scenarios: int, hidden: Sequence[int], dropout: float,
                 batch_norm: bool) -> None:
        super().__init__()
        self.embed = embed
        self.norm = PartitionedNorm(embed.width, n_scenarios)
        widths = [embed.width, *hidden, 1]
        self.layers = nn.ModuleList(StarLinear(a, b, n_scenarios) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = nn.Dropout(dropout)
        auxiliary, width = _mlp(embed.width + embed.scenario.embedding_dim, hidden[-1:], dropout, batch_norm)
        self.auxiliary = nn.Sequential(auxiliary, nn.Linear(width, 1))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of the batch's rows: star network plus auxiliary network. shape: (B,)."""
        return self.logits(self.embed(batch), batch["scenario"])

    def logits(self, fields: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Logits from the embedded rows (B, width) and their scenarios (B,). shape: (B,)."""
        order = torch.argsort(scenario, stable=True)  # the rows grouped by scenario
        counts = torch.bincount(scenario, minlength=len(self.norm.running_mean)).tolist()
        outputs = []
        for s, rows in enumerate(fields[order].split(counts)):
            if len(rows) == 0:
                continue
            x = self.norm(rows, s)  # (n_s, width)
            for layer in self.layers[:-1]:
                x = self.dropout(torch.relu(layer(x, s)))
            outputs.append(self.layers[-1](x, s))  # (n_s, 1)
        main = torch.empty(len(order), dtype=fields.dtype).index_put((order,), torch.cat(outputs).squeeze(1))
        return main + self.auxiliary(torch.cat([fields, self.embed.scenario(scenario)], dim=1)).squeeze(1)


class JointNetwork(nn.Module):
    """The joint model's pointwise head: STAR on the features (item = ID + projected text) plus an FM term."""

    def __init__(self, embed: FeatureEmbedding, n_scenarios: int, hidden: Sequence[int], dropout: float,
                 batch_norm: bool) -> None:
        super().__init__()
        self.embed = embed
        self.star = StarNetwork(embed, n_scenarios, hidden, dropout, batch_norm)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of the batch's rows: STAR's logit plus the sum of pairwise field interactions. shape: (B,)."""
        fields = self.embed.fields(batch)  # (B, F, dim)
        crosses = 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1)  # (B,) sum_{f<g} <v_f, v_g>
        return self.star.logits(self.embed.flat(fields, batch), batch["scenario"]) + crosses
