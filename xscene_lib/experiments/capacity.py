"""What model size costs and what it buys: parameter counts, the time to encode and to score, and a sweep over
the joint model's dimension that shows whether more trainable capacity overfits (the article's section 3.3).

    parameters = trainable_parameters(fitted_model)               # learned weights; frozen text is not counted
    seconds = encoding_seconds(texts)                             # load, encode without cache, read from cache
    per_user = scoring_seconds_per_user(fitted_model, users, "<25")
    sweep = dimension_sweep(train, valid, test, vectors, dims=(16, 64, 256))
    overfitting_summary(sweep.histories)                          # per run: best epoch, validation drop after it

The sweep fits `JointModel(dim=d)` for every dimension and seed on the same split, keeps each run's per-epoch
training loss and validation NDCG@10 (`history_`), and ranks the test items like the experiment runner does
(every candidate item; the training and validation items of the user left out), so the per-row metrics feed
`intervals.paired_bootstrap` with one model name per dimension ("dim 16", "dim 64", ...).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xscene_lib.data.validation import DataError, check_int, check_positive_int, require_columns
from xscene_lib.models.joint import JointModel
from xscene_lib.evaluation.metrics import ranking_metrics, target_ranks
from xscene_lib.models.base import Recommender
from xscene_lib.text.encoder import DEFAULT_MODEL, TextEncoder

TORCH_ATTRIBUTES = ("module_",)  # where a fitted model keeps its torch module(s)


def sweep_name(dim: int) -> str:
    """The model name of one dimension in the sweep's tables, e.g. "dim 64"."""
    return f"dim {dim}"


def trainable_parameters(model: Recommender) -> int:
    """The number of weights a fitted model learned by gradient descent (0 for models without a torch module)."""
    model._check_fitted()
    modules = []
    for attribute in TORCH_ATTRIBUTES:
        found = getattr(model, attribute, None)
        modules += found if isinstance(found, list) else [] if found is None else [found]
    return int(sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad))


def encoding_seconds(texts: Sequence[str], model: str = DEFAULT_MODEL, device: str = "auto",
                     num_threads: int | None = None) -> dict[str, float]:
    """Seconds to load the encoder, to encode the texts with no cache, and to read the same vectors from a cache.

    A fresh temporary cache is used, so the cached time is that of a warm cache for exactly these texts.
    """
    texts = list(texts)
    if not texts:
        raise DataError("encoding_seconds needs at least one text to encode")
    with tempfile.TemporaryDirectory() as folder:
        encoder = TextEncoder(model, device=device, cache_dir=Path(folder), show_progress=False,
                              num_threads=num_threads)
        started = time.perf_counter()
        encoder.encode([texts[0] + " (warm-up)"])  # loads the model; this one text is not among the timed ones
        loaded = time.perf_counter()
        cold = encoder.encode(texts)  # (n, d): every text through the model, then written to the cache
        encoded = time.perf_counter()
        cached = encoder.encode(texts)  # (n, d): read back
        read = time.perf_counter()
    if not np.array_equal(cold, cached):
        raise RuntimeError("the cached vectors differ from the encoded ones; the text cache is broken")
    return {"load": loaded - started, "cold": encoded - loaded, "cached": read - encoded, "texts": float(len(texts))}


def scoring_seconds_per_user(model: Recommender, users: Sequence[int], scenario: str, repeats: int = 3) -> float:
    """Seconds to score every candidate item for one user, the fastest of `repeats` passes over `users`."""
    check_positive_int("scoring_seconds_per_user", "repeats", repeats)
    users = np.asarray(users).reshape(-1)
    if len(users) == 0:
        raise DataError("scoring_seconds_per_user needs at least one user")
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        model.score(users, scenario)  # (n_users, n_items)
        best = min(best, time.perf_counter() - started)
    return float(best / len(users))


@dataclass(frozen=True)
class Sweep:
    """A finished dimension sweep: per-epoch histories, per-test-row metrics, one row per run, the fitted models."""

    histories: pd.DataFrame  # dim, seed, epoch, loss, valid, seconds
    per_row: pd.DataFrame  # model ("dim d"), dim, seed, user_id, scenario, rank, metrics
    runs: pd.DataFrame  # dim, seed, parameters, fit_seconds, epochs_run, best_epoch
    models: dict[tuple[int, int], JointModel]  # (dim, seed) -> the fitted model


def dimension_sweep(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, item_vectors: pd.DataFrame,
                    dims: Sequence[int] = (16, 64, 256), seeds: Sequence[int] = (0,), *,
                    items: Sequence[int] | None = None, ks: Sequence[int] = (10, 20),
                    **model_args: object) -> Sweep:
    """Fit JointModel(dim=d) for each dimension and seed; the histories, test metrics and size of every run."""
    require_columns(test, ["user_id", "item_id", "scenario"], "test")
    dims, seeds = list(dims), list(seeds)
    for name, values, least, why in (("dims", dims, 1, "a joint model of dimension 0 has nothing to learn"),
                                     ("seeds", seeds, 0, "")):
        if not values:
            raise DataError(f"dimension_sweep({name}=...) must be a non-empty list of integers, got {values!r}")
        for position, value in enumerate(values):
            check_int("dimension_sweep", f"{name}[{position}]", value, minimum=least, hint=why)
    if {"dim", "seed"} & set(model_args):
        raise DataError("give dim and seed through dims and seeds, not as model arguments")
    seen = pd.concat([train, valid], ignore_index=True)  # left out of the ranking at test time
    histories, per_rows, runs, models = [], [], [], {}
    for dim in dims:
        for seed in seeds:
            model = JointModel(dim=int(dim), seed=int(seed), **{"show_progress": False, **model_args})
            started = time.perf_counter()
            model.fit(train, item_vectors, items=items, valid=valid)
            fit_seconds = time.perf_counter() - started
            models[(int(dim), int(seed))] = model
            history = model.history_
            histories.append(history.frame.assign(dim=dim, seed=seed))
            rows = ranking_metrics(target_ranks(model, seen, test), ks=ks)
            per_rows.append(rows.assign(model=sweep_name(dim), dim=dim, seed=seed))
            runs.append({"dim": dim, "seed": seed, "parameters": trainable_parameters(model),
                         "fit_seconds": fit_seconds, "epochs_run": len(history.epochs),
                         "best_epoch": history.best_epoch})
    first = ["dim", "seed"]
    history_table = pd.concat(histories, ignore_index=True)
    return Sweep(history_table[first + [c for c in history_table.columns if c not in first]],
                 pd.concat(per_rows, ignore_index=True), pd.DataFrame(runs), models)


def overfitting_summary(histories: pd.DataFrame) -> pd.DataFrame:
    """Per (dim, seed): the best validation epoch and score, and how much validation fell and loss fell after it.

    A run overfits when its training loss keeps falling after the best validation epoch while its validation
    score falls: loss_fall_after_best > 0 and valid_drop_after_best > 0.
    """
    require_columns(histories, ["dim", "seed", "epoch", "loss", "valid"], "histories",
                    "take it from dimension_sweep(...).histories")
    rows = []
    for (dim, seed), run in histories.sort_values("epoch").groupby(["dim", "seed"], sort=True):
        best = int(run["valid"].to_numpy().argmax())  # first epoch with the highest validation score
        valid, loss = run["valid"].to_numpy(np.float64), run["loss"].to_numpy(np.float64)
        rows.append({"dim": dim, "seed": seed, "epochs_run": len(run), "best_epoch": int(run["epoch"].iloc[best]),
                     "best_valid": valid[best], "last_valid": valid[-1],
                     "valid_drop_after_best": valid[best] - valid[-1],
                     "loss_at_best": loss[best], "last_loss": loss[-1], "loss_fall_after_best": loss[best] - loss[-1]})
    return pd.DataFrame(rows)
