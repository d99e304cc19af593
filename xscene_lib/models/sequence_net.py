"""The torch side of the sequential model: a frozen text vector's adaptor (whitening, then a mixture of experts,
as in UniSRec) and a causal self-attention encoder over item sequences (SASRec) adapted to the next scenario.

Sequences are (B, L) arrays of item index + 1, left-padded with PAD, so the latest item is always in the last
column and the positional embedding counts from the end of the history.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

PAD = 0  # the padding entry of an input sequence; item i is stored as i + 1
ID_INIT_STD = 0.1
N_EXPERTS = 4
WHITENING_TOLERANCE = 1e-6  # components whose spread is below this share of the largest are dropped


def whitened(text: np.ndarray, dim: int) -> np.ndarray:
    """Text vectors centred and PCA-whitened to at most `dim` unit-variance components.

    shape: (n_items, d_text) -> (n_items, k), k <= min(dim, d_text); k = 1 (zeros) when the vectors do not vary.
    """
    values = np.asarray(text, dtype=np.float64)
    centred = values - values.mean(axis=0)
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    spread = singular / np.sqrt(max(len(values) - 1, 1))  # each component's standard deviation
    keep = int(min(dim, np.sum(spread > WHITENING_TOLERANCE * max(spread.max(initial=0.0), 1e-12))))
    if keep == 0:
        return np.zeros((len(values), 1), np.float32)
    return (centred @ right[:keep].T / spread[:keep]).astype(np.float32)


class TextAdaptor(torch.nn.Module):
    """u_i = sum_e g_e(w_i) (w_i A_e + b_e), g = softmax(w_i G + c), over the whitened text vectors w_i."""

    def __init__(self, whitened_text: np.ndarray, dim: int, n_experts: int = N_EXPERTS) -> None:
        super().__init__()
        k = whitened_text.shape[1]
        self.register_buffer("text", torch.tensor(whitened_text), persistent=False)  # (n_items, k), frozen
        self.experts = torch.nn.Parameter(torch.randn(n_experts, k, dim) / np.sqrt(k))  # A_e: (E, k, dim)
        self.expert_bias = torch.nn.Parameter(torch.zeros(n_experts, dim))  # b_e: (E, dim)
        self.gate = torch.nn.Linear(k, n_experts)  # G, c

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The text parts of the items `index` (of every item when None). shape: index (...) -> (..., dim)."""
        text = self.text if index is None else self.text[index]  # (..., k)
        gate = torch.softmax(self.gate(text), dim=-1)  # (..., E)
        every = torch.einsum("...k,ekd->...ed", text, self.experts) + self.expert_bias  # (..., E, dim)
        return (gate[..., None] * every).sum(dim=-2)


class FullSoftmaxLoss(torch.autograd.Function):
    """Mean cross-entropy of the logits hidden @ table.T at the targets: F.cross_entropy's value and gradients,
    with the softmax written over the logits in place and kept for the backward pass (no log-softmax, no one-hot).

    shape: hidden (N, dim), table (n, dim), target (N,) of column indices -> ().
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, hidden: torch.Tensor, table: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        probability = hidden @ table.T  # (N, n): the logits, then the softmax
        picked = probability.gather(1, target[:, None])  # (N, 1): the targets' logits
        top = probability.amax(dim=1, keepdim=True)  # (N, 1)
        mass = probability.sub_(top).exp_().sum(dim=1, keepdim=True)  # (N, 1)
        probability.div_(mass)
        ctx.save_for_backward(probability, hidden, table, target)
        return (mass.log() + top - picked).sum() / max(len(hidden), 1)  # mean -log softmax at the targets

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        probability, hidden, table, target = ctx.saved_tensors
        probability[torch.arange(len(target)), target] -= 1.0  # softmax - one-hot: N * d loss / d logits, in place
        scale = grad / max(len(target), 1)
        return probability @ table * scale, probability.T @ hidden * scale, None


class SequenceNet(torch.nn.Module):
    """Item table v_i = m_i e_i + u_i and a causal encoder of item sequences with scenario embedding and FiLM."""

    def __init__(self, n_items: int, n_scenarios: int, dim: int, num_layers: int, num_heads: int, max_length: int,
                 dropout: float, adaptation: str | None, use_id: bool, whitened_text: np.ndarray | None,
                 known_items: np.ndarray) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.item_id = None
        if use_id:
            self.item_id = torch.nn.Embedding(n_items, dim)  # e_i
            torch.nn.init.normal_(self.item_id.weight, std=ID_INIT_STD)
        self.register_buffer("known", torch.as_tensor(known_items, dtype=torch.float32)[:, None],
                             persistent=False)  # (n_items, 1): m_i, 1 if the item is in training
        self.text = None if whitened_text is None else TextAdaptor(whitened_text, dim)
        self.position = torch.nn.Embedding(max_length, dim)  # (L, dim), column L - 1 = the latest item
        torch.nn.init.normal_(self.position.weight, std=ID_INIT_STD)
        self.scenario = self.gamma = self.beta = None
        if adaptation == "film":
            self.scenario = torch.nn.Embedding(n_scenarios, dim)  # c_s, added at every position
            torch.nn.init.zeros_(self.scenario.weight)
            self.gamma = torch.nn.Parameter(torch.ones(n_scenarios, dim))  # (S, dim)
            self.beta = torch.nn.Parameter(torch.zeros(n_scenarios, dim))  # (S, dim)
        layer = torch.nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=dim, dropout=dropout,
                                                 batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers, norm=torch.nn.LayerNorm(dim),
                                                   enable_nested_tensor=False)
        self.input_dropout = torch.nn.Dropout(dropout)
        future = torch.ones(max_length, max_length, dtype=torch.bool).triu(diagonal=1)  # (L, L), True = not attended
        self.register_buffer("future", future, persistent=False)
        self.register_buffer("off_diagonal", ~torch.eye(max_length, dtype=torch.bool), persistent=False)  # (L, L)

    def parts(self, index: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The id parts m_i e_i and text parts u_i (None where absent) of the items `index`, of every item when None.

        Only the items asked for go through the text adaptor, so a batch costs the same in a catalogue of any size.
        shape: index (...) -> (..., dim) each; (n_items, dim) each without index.
        """
        if index is None:
            ids = None if self.item_id is None else self.item_id.weight * self.known
            return ids, None if self.text is None else self.text()
        ids = None if self.item_id is None else self.item_id(index) * F.embedding(index, self.known)
        return ids, None if self.text is None else self.text(index)

    def items(self, id_keep: torch.Tensor | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        """The item table v_i of the items `index` (every item when None); id_keep (same rows, 1) zeroes some
        items' id parts. shape: (len(index) or n_items, dim)."""
        return self.whole(*self.parts(index), id_keep)

    @staticmethod
    def whole(ids: torch.Tensor | None, text: torch.Tensor | None, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """v_i from the parts that `parts` gave; id_keep (same rows, 1) zeroes some id parts. shape: (rows, dim)."""
        if ids is not None and id_keep is not None:
            ids = ids * id_keep
        return torch.stack([part for part in (ids, text) if part is not None]).sum(dim=0)

    def encode(self, sequence: torch.Tensor, scenarios: torch.Tensor,
               id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output at every position but the leading columns that are padding in every row (attention
        never reads them); id_keep (B, L) zeroes the id part of some occurrences.

        shape: sequence (B, L) of item index + 1 (PAD before the history), scenarios (B, L) -> (B, L', dim), the
        last L' <= L columns.
        """
        real = sequence != PAD  # (B, L)
        start = int(real.any(dim=0).to(torch.uint8).argmax()) if len(sequence) else 0  # the first column in use
        sequence, scenarios, real = sequence[:, start:], scenarios[:, start:], real[:, start:]
        ids, text = self.parts((sequence - 1).clamp(min=0))  # (B, L', dim) each; PAD reads item 0, zeroed below
        x = 0.0
        if ids is not None:
            x = x + (ids if id_keep is None else ids * id_keep[:, start:, None])
        if text is not None:
            x = x + text
        if self.scenario is not None:
            x = x + self.scenario(scenarios)
        length = sequence.shape[1]
        x = self.input_dropout((x + self.position.weight[-length:][None]) * real[:, :, None])
        future, off_diagonal = self.future[-length:, -length:], self.off_diagonal[-length:, -length:]  # (L', L')
        blocked = future[None] | (~real[:, None, :] & off_diagonal[None])  # (B, L', L'): no future, no padding
        return self.encoder(x, mask=blocked.repeat_interleave(self.num_heads, dim=0))  # mask: (B * heads, L', L')

    def adapt(self, hidden: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """FiLM to the scenario of the next interaction, gamma_s * h + beta_s (identity without adaptation).

        shape: hidden (..., dim), scenario (...) -> (..., dim).
        """
        if self.gamma is None:
            return hidden
        # F.embedding, not self.gamma[scenario]: its gradient sums rows in a fixed order, so runs repeat exactly
        return F.embedding(scenario, self.gamma) * hidden + F.embedding(scenario, self.beta)
