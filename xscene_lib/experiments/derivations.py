"""The article's section 4 worked out: closed-form gradients of its score and of the book's losses, each
checked against torch autograd, and the measurable consequences of its initialisation and its shared bias.

    cos(a, b)          = a·b / (|a| |b|)
    d cos(a, b) / da   = b / (|a| |b|) - cos(a, b) a / |a|^2
    f(x)               = x W + b                                  one W (n x m) and b (m,) for users and items
    S(u, i)            = cos(f(x_u), f(x_i))
    dS / dW            = x_u^T g_u + x_i^T g_i,   dS / db = g_u + g_i,
                         g_u = d cos / da at (f(x_u), f(x_i)),  g_i = d cos / db (the same rule, roles swapped)
    BPR                L = -log sigmoid(s+ - s-),   dL / ds+ = -sigmoid(s- - s+) = -dL / ds-
    in-batch softmax   logits_bk = h_b · v_k / t - log q_k (a copy of b's own item elsewhere in the batch: -inf)
                       L = mean_b w_b CE(logits_b, b),   dL / dlogits_b = w_b (softmax(logits_b) - onehot_b) / B
                       dL / dh = G v / t,   dL / dv = G^T h / t      with G = dL / dlogits

Every gradient is written for a batch and for a scalar (scores summed, losses averaged). `check_gradients`
compares each with torch.autograd in float64 and runs torch.autograd.gradcheck on the closed form itself, which
then has to agree with finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xscene_lib.data.validation import DataError, check_choice

if TYPE_CHECKING:
    from xscene_lib.models.joint import JointModel

READINGS = ("standard deviation", "variance")  # what the article's Normal(0, spread) may mean


# --- closed forms -------------------------------------------------------------------------------------------


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity. shape: (B, d), (B, d) -> (B,)."""
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def cosine_gradient(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d cos(a, b) / da, row by row. shape: (B, d), (B, d) -> (B, d)."""
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)  # (B, 1) each
    return b / (norm_a * norm_b) - cosine(a, b)[:, None] * a / norm_a**2


def affine_cosine_scores(user_text: torch.Tensor, item_text: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor) -> torch.Tensor:
    """The article's Score(u, i) = cos(f(u), f(i)), f(x) = x W + b. shape: (B, n), (B, n), (n, m), (m,) -> (B,)."""
    return cosine(user_text @ weight + bias, item_text @ weight + bias)


def affine_cosine_gradients(user_text: torch.Tensor, item_text: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/dW and d/db of the summed scores, W and b shared by users and items. shape: (n, m), (m,)."""
    f_user, f_item = user_text @ weight + bias, item_text @ weight + bias  # (B, m) each
    g_user, g_item = cosine_gradient(f_user, f_item), cosine_gradient(f_item, f_user)  # (B, m) each
    return user_text.T @ g_user + item_text.T @ g_item, (g_user + g_item).sum(dim=0)


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(s+ - s-) over the batch. shape: (B,), (B,) -> ()."""
    return F.softplus(negative - positive).mean()


def bpr_gradients(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/ds+ and d/ds- of `bpr_loss`. shape: (B,), (B,)."""
    pull = torch.sigmoid(negative - positive) / len(positive)  # (B,): large while the negative is ahead
    return -pull, pull


def in_batch_logits(h: torch.Tensor, v: torch.Tensor, item: torch.Tensor, log_q: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Logits of the joint model's in-batch softmax with logQ correction, one column per row of the batch.

    xscene_lib.models.joint.in_batch_softmax computes the same loss with one column per distinct item.

    h and v are the (unit) user and positive-item vectors of the batch, log_q the log share of each row's item.
    shape: (B, dim), (B, dim), (B,), (B,) -> (B, B).
    """
    logits = h @ v.T / temperature - log_q[None, :]  # (B, B): user b against the positive of row k
    same_item = (item[None, :] == item[:, None]) & ~torch.eye(len(item), dtype=torch.bool)
    return logits.masked_fill(same_item, -torch.inf)


def in_batch_softmax_loss(logits: torch.Tensor, row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (weighted) cross-entropy of each row against its own column. shape: (B, B), (B,) -> ()."""
    per_row = F.cross_entropy(logits, torch.arange(len(logits)), reduction="none")  # (B,)
    return (per_row if row_weights is None else row_weights * per_row).mean()


def in_batch_softmax_gradient(logits: torch.Tensor, row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """d/dlogits of `in_batch_softmax_loss`: (softmax - onehot) w / B. shape: (B, B) -> (B, B)."""
    weights = torch.ones(len(logits), dtype=logits.dtype) if row_weights is None else row_weights
    return (torch.softmax(logits, dim=1) - torch.eye(len(logits), dtype=logits.dtype)) * weights[:, None] / len(logits)


def in_batch_vector_gradients(h: torch.Tensor, v: torch.Tensor, item: torch.Tensor, log_q: torch.Tensor,
                              temperature: float, row_weights: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """d/dh and d/dv of the in-batch softmax loss, through the logits. shape: (B, dim), (B, dim)."""
    g = in_batch_softmax_gradient(in_batch_logits(h, v, item, log_q, temperature), row_weights)  # (B, B)
    return g @ v / temperature, g.T @ h / temperature


# --- the checks -----------------------------------------------------------------------------------------------


class _ClosedForm(torch.autograd.Function):
    """A scalar whose backward pass is a closed-form gradient, so gradcheck tests the closed form itself."""

    @staticmethod
    def forward(ctx, value_and_gradients: Callable, *inputs: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        value, gradients = value_and_gradients(*inputs)
        ctx.save_for_backward(*gradients)
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple:  # noqa: ANN001
        return (None, *(grad_output * gradient for gradient in ctx.saved_tensors))


def _cases(rng: torch.Generator, batch: int, width: int, dim: int) -> dict[str, tuple[Callable, Callable, tuple]]:
    """name -> (value, closed-form gradients, differentiable inputs), random float64 inputs."""
    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=rng, dtype=torch.float64)

    user_text, item_text = normal(batch, width), normal(batch, width)
    item = torch.randint(0, max(2, batch // 2), (batch,), generator=rng)  # (B,) with repeats, so the mask acts
    log_q, row_weights, temperature = normal(batch) - 3.0, torch.rand(batch, generator=rng, dtype=torch.float64), 0.1
    unit = (F.normalize(normal(batch, dim), dim=-1), F.normalize(normal(batch, dim), dim=-1))
    logits = in_batch_logits(*unit, item, log_q, temperature)
    return {
        "d cos(a, b) / da and / db": (lambda a, b: cosine(a, b).sum(),
                                      lambda a, b: (cosine_gradient(a, b), cosine_gradient(b, a)),
                                      (normal(batch, dim), normal(batch, dim))),
        "d Score / dW and / db": (lambda w, b: affine_cosine_scores(user_text, item_text, w, b).sum(),
                                  lambda w, b: affine_cosine_gradients(user_text, item_text, w, b),
                                  (normal(width, dim) / width**0.5, normal(dim) / width)),
        "BPR d L / ds+ and / ds-": (bpr_loss, bpr_gradients, (normal(batch), normal(batch))),
        "in-batch softmax d L / dlogits": (lambda z: in_batch_softmax_loss(z, row_weights),
                                           lambda z: (in_batch_softmax_gradient(z, row_weights),), (logits,)),
        "in-batch softmax d L / dh and / dv": (
            lambda h, v: in_batch_softmax_loss(in_batch_logits(h, v, item, log_q, temperature), row_weights),
            lambda h, v: in_batch_vector_gradients(h, v, item, log_q, temperature, row_weights), unit),
    }


def check_gradients(seed: int = 0, batch: int = 8, width: int = 12, dim: int = 6) -> pd.DataFrame:
    """Every closed-form gradient against autograd (max abs difference) and against finite differences (gradcheck)."""
    rng = torch.Generator().manual_seed(seed)
    rows = []
    for name, (value, closed_form, inputs) in _cases(rng, batch, width, dim).items():
        inputs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
        by_autograd = torch.autograd.grad(value(*inputs), inputs)
        by_hand = closed_form(*(x.detach() for x in inputs))
        finite = [torch.isfinite(a) for a in by_autograd]
        rows.append({"gradient": name, "entries": sum(a.numel() for a in by_autograd),
                     "largest |gradient|": max(float(a[m].abs().max()) for a, m in zip(by_autograd, finite)),
                     "max |closed form - autograd|": max(float((a[m] - h[m]).abs().max())
                                                         for a, h, m in zip(by_autograd, by_hand, finite)),
                     "gradcheck": bool(torch.autograd.gradcheck(
                         lambda *x, c=closed_form, v=value: _ClosedForm.apply(lambda *y: (v(*y), c(*y)), *x),
                         inputs, eps=1e-6, atol=1e-5))})
    return pd.DataFrame(rows).set_index("gradient")


# --- consequences of the article's formulas --------------------------------------------------------------------


def article_init(width: int, dim: int, reading: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W ~ Normal(0, 1/sqrt(n)), b ~ Normal(0, 1/n) with the spread read as `reading`. shape: (n, m), (m,)."""
    check_choice("article_init", "reading", reading, READINGS)
    rng = torch.Generator().manual_seed(seed)
    power = 1.0 if reading == "standard deviation" else 0.5  # a variance s is a standard deviation s ** 0.5
    weight_std, bias_std = (width**-0.5) ** power, (1.0 / width) ** power
    return (weight_std * torch.randn(width, dim, generator=rng, dtype=torch.float64),
            bias_std * torch.randn(dim, generator=rng, dtype=torch.float64))


def output_scale(text: np.ndarray, dim: int | None = None, seeds: Sequence[int] = range(5)) -> pd.DataFrame:
    """``|f(x)| / |x|`` under each reading of the article's init: measured (mean over seeds, rows) and predicted.

    Predicted: ``E|f(x)|^2 = m var(W) |x|^2 + m var(b)``, so the ratio is ``sqrt(m var(W) + m var(b) / |x|^2)``.
    """
    x = torch.as_tensor(np.asarray(text, dtype=np.float64))  # (N, n)
    width = x.shape[1]
    dim = width if dim is None else dim
    rows = []
    for reading in READINGS:
        ratios = []
        for seed in seeds:
            weight, bias = article_init(width, dim, reading, seed)
            ratios.append(((x @ weight + bias).norm(dim=1) / x.norm(dim=1)).mean().item())
        as_std = reading == "standard deviation"
        weight_var, bias_var = (1 / width, 1 / width**2) if as_std else (width**-0.5, 1 / width)
        predicted = np.sqrt(dim * weight_var + dim * bias_var / float((x.norm(dim=1) ** 2).mean()))
        rows.append({"reading": reading, "var(W)": weight_var, "var(b)": bias_var,
                     "measured |f(x)| / |x|": float(np.mean(ratios)), "predicted": float(predicted)})
    return pd.DataFrame(rows).set_index("reading")


def cosine_spread_by_bias(user_text: np.ndarray, item_text: np.ndarray, bias_norms: Sequence[float],
                          seed: int = 0) -> pd.DataFrame:
    """Mean and spread of cos(f(u), f(i)) over all user-item pairs as the shared bias b grows along one direction.

    W follows the article's init (read as a standard deviation); ``|b|`` is also given relative to the mean ``|x W|``.
    """
    users, items = (torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in (user_text, item_text))
    weight, _ = article_init(users.shape[1], users.shape[1], "standard deviation", seed)
    direction = F.normalize(torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(seed + 1),
                                        dtype=torch.float64), dim=0)  # (m,)
    mapped_users, mapped_items = users @ weight, items @ weight  # (U, m), (I, m)
    typical = torch.cat([mapped_users, mapped_items]).norm(dim=1).mean().item()
    rows = []
    for norm in bias_norms:
        f_users = F.normalize(mapped_users + norm * direction, dim=1)
        scores = f_users @ F.normalize(mapped_items + norm * direction, dim=1).T  # (U, I)
        rows.append({"|b|": float(norm), "|b| / |xW|": float(norm) / typical, "mean cosine": scores.mean().item(),
                     "std of cosines": scores.std().item(), "min": scores.min().item(), "max": scores.max().item()})
    return pd.DataFrame(rows)


def scale_invariance(user_text: np.ndarray, item_text: np.ndarray, factors: Sequence[float],
                     seed: int = 0) -> pd.DataFrame:
    """How Score changes when W is multiplied by c: never without b; with b, exactly as if b were divided by c.

    """
    users, items = (torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in (user_text, item_text))
    weight, bias = article_init(users.shape[1], users.shape[1], "standard deviation", seed)
    zero = torch.zeros_like(bias)
    base, base_no_bias = (affine_cosine_scores(users, items, weight, b) for b in (bias, zero))
    rows = []
    for c in factors:
        scaled = affine_cosine_scores(users, items, c * weight, bias)
        rows.append({"c": float(c),
                     "max change, b = 0": (affine_cosine_scores(users, items, c * weight, zero) - base_no_bias)
                     .abs().max().item(),
                     "max change, with b": (scaled - base).abs().max().item(),
                     "max |S(cW, b) - S(W, b / c)|": (scaled - affine_cosine_scores(users, items, weight, bias / c))
                     .abs().max().item()})
    return pd.DataFrame(rows).set_index("c")


def radial_gradient(user_text: np.ndarray, item_text: np.ndarray, seed: int = 0) -> float:
    """Cosine between (W, b) and the gradient of the summed scores: 0, because S(cW, cb) = S(W, b) for c > 0."""
    users, items = (torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in (user_text, item_text))
    weight, bias = article_init(users.shape[1], users.shape[1], "standard deviation", seed)
    grad_w, grad_b = affine_cosine_gradients(users, items, weight, bias)
    inner = (weight * grad_w).sum() + (bias * grad_b).sum()
    return float(inner / (torch.cat([weight.ravel(), bias]).norm() * torch.cat([grad_w.ravel(), grad_b]).norm()))


# --- the joint model's score, by hand ---------------------------------------------------------------------------


def joint_scores_by_hand(model: JointModel, user_id: int, scenario: str, item_vectors: pd.DataFrame) -> np.ndarray:
    """A fitted JointModel's scores of every item for one user in one scenario, recomputed in numpy::

        f(x)  = x P^T + p                    the article's f(x) = Embed(x) W + b, with W = P^T and b = p
        v_i   = f(x_i) + e_i                 e_i = 0 for an item never seen in training
        z     = f(mean of x_j over u's training items) + e_u + c_s
        h     = z + W2 (gamma_s * relu(W1 z + b1) + beta_s) + b2
        score = cos(h, v_i) / temperature

    shape: (n_items,), in the order of ``model.item_ids_``. Only the default model (text, ids, FiLM) is covered.
    """
    if not (model.use_text and model.use_id and model.adaptation == "film"):
        raise DataError("joint_scores_by_hand covers JointModel(use_text=True, use_id=True, adaptation='film') only")
    p = {name: value.detach().double().numpy() for name, value in model.module_.state_dict().items()}
    user, s = int(model.user_index([user_id])[0]), model.scenario_index(scenario)
    if user < 0:
        raise DataError(f"user {user_id} was not in the training data of this model")
    x = item_vectors.loc[model.item_ids_].to_numpy(np.float64)  # (n_items, n)

    def f(text: np.ndarray) -> np.ndarray:
        return text @ p["projection.weight"].T + p["projection.bias"]  # (..., dim)

    known = model.popularity_.sum(axis=0)[:, None] > 0  # (n_items, 1)
    v = f(x) + p["item_id.weight"] * known  # (n_items, dim)
    z = f(x[model.seen_[user].indices].mean(axis=0)) + p["user_id.weight"][user] + p["scenario.weight"][s]  # (dim,)
    hidden = np.maximum(p["tower.hidden.weight"] @ z + p["tower.hidden.bias"], 0.0)  # (dim,)
    h = z + p["tower.output.weight"] @ (p["tower.gamma"][s] * hidden + p["tower.beta"][s]) + p["tower.output.bias"]
    return (v @ h) / (np.linalg.norm(v, axis=1) * np.linalg.norm(h)) / model.temperature
