"""One training loop for every torch model: seeded, early-stopped, checkpointed, resumable.

A model supplies three things: a function that yields the batches of one epoch from a numpy
random generator, a function that turns a batch into a scalar loss, and (optionally) a
validation score where higher is better. `train_module` runs Adam epoch by epoch, keeps the weights
of the best validation epoch, stops after `patience` epochs without improvement, and, given a
`checkpoint_dir`, writes safetensors checkpoints after every epoch so that an interrupted run
resumes where it stopped and ends with the same numbers as an uninterrupted one.

With `ema_decay` d the loop also keeps an exponential moving average of the weights, updated after every
optimiser step (a_t = r_t a_(t-1) + (1 - r_t) w_t, r_t = min(d, (1 + t) / (10 + t)) so that the first steps
do not keep the initial weights); validation scores the average, and the weights kept are the average at the
best validation epoch. Training itself continues from the raw weights.

Given a `WorkerGroup` of several processes (see xscene_lib.training.distributed), every process draws the same batches,
computes the loss of its own rows through DDP, validates on rank 0 only and receives that score, so early
stopping agrees everywhere; only rank 0 writes checkpoints, and every process can resume from them.

Code that fits a model without seeing its training loop (a tuner that prunes poor trials) can follow it with
`epoch_listener(callback)`: every epoch finished inside the block calls `callback(record)` on the main
process, and an exception raised there stops the training.
"""

from __future__ import annotations

import hashlib
import json
import contextvars
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm  # plain text bars: readable in terminals, notebooks and the built site

from xscene_lib.data.validation import DataError, check_number, check_positive_int
from xscene_lib.training.distributed import SINGLE, WorkerGroup, collective_failure, is_collective_failure
from xscene_lib.data.store import write_atomically

LAST = "last.safetensors"  # model + optimizer + random state after the latest finished epoch
BEST = "best.safetensors"  # model weights of the best validation epoch
EpochListener = Callable[[dict[str, float]], None]
_LISTENERS: contextvars.ContextVar[tuple[EpochListener, ...]] = contextvars.ContextVar("epoch_listeners", default=())


@dataclass
class TrainHistory:
    """What happened during training: one record per epoch and the best epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    stopped_early: bool = False
    steps: int = 0  # optimiser steps taken

    @property
    def frame(self) -> pd.DataFrame:
        """One row per epoch: epoch, loss, valid (if validated), seconds."""
        return pd.DataFrame(self.epochs)


@contextmanager
def epoch_listener(listener: EpochListener) -> Iterator[None]:
    """Call `listener(record)` after every epoch that finishes inside the block (record: epoch, loss, valid)."""
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def seeded_generator(seed: int) -> np.random.Generator:
    """Seed torch and return the numpy generator that drives batch sampling."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def train_module(module: torch.nn.Module, batches: Callable[[np.random.Generator], Iterable[Any]],
          loss: Callable[[Any], torch.Tensor], *, validate: Callable[[], float] | None = None,
          num_epochs: int = 30, learning_rate: float = 1e-3, weight_decay: float = 0.0, patience: int = 3,
          seed: int = 0, checkpoint_dir: str | Path | None = None, run_key: str = "",
          show_progress: bool = True, description: str = "training", workers: WorkerGroup = SINGLE,
          lr_decay: tuple[int, float] | None = None, ema_decay: float | None = None) -> TrainHistory:
    """Train `module` with Adam on `loss` over `batches`; return the history, best weights loaded.

    lr_decay=(step, gamma) multiplies the learning rate by gamma every `step` epochs (epoch e runs at
    learning_rate * gamma ** (e // step)); None keeps it constant. ema_decay (in [0, 1)) validates and keeps a
    moving average of the weights instead of the weights themselves; None does not average.
    """
    try:
        return _train(module, batches, loss, validate, num_epochs, learning_rate, weight_decay, patience, seed,
                      checkpoint_dir, run_key, show_progress and workers.is_main, description, workers, lr_decay,
                      ema_decay)
    except RuntimeError as error:  # DDP's backward reports a failed gloo/NCCL exchange as a plain RuntimeError
        if workers.is_distributed and is_collective_failure(error):
            raise collective_failure(error, workers) from error
        raise


def _train(module: torch.nn.Module, batches: Callable[[np.random.Generator], Iterable[Any]],
           loss: Callable[[Any], torch.Tensor], validate: Callable[[], float] | None, num_epochs: int,
           learning_rate: float, weight_decay: float, patience: int, seed: int, checkpoint_dir: str | Path | None,
           run_key: str, show_progress: bool, description: str, workers: WorkerGroup,
           lr_decay: tuple[int, float] | None, ema_decay: float | None) -> TrainHistory:
    """The loop of `train_module`, on one process or on each process of `workers`."""
    for name, value in (("num_epochs", num_epochs), ("patience", patience)):
        check_positive_int(None, name, value)
    check_number(None, "learning_rate", learning_rate, positive=True)
    check_number(None, "weight_decay", weight_decay, positive=False)
    step_size, gamma = _checked_decay(lr_decay)
    if ema_decay is not None:
        check_number(None, "ema_decay", ema_decay, minimum=0, below=1, hint="e.g. 0.99, or None to not average")
    rng = seeded_generator(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    history = TrainHistory()
    best_state = _copy_state(module)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    average = None if ema_decay is None else _copy_state(module)  # the moving average of the weights
    fingerprint = _fingerprint(module, learning_rate, weight_decay, seed, run_key
                               + ("" if lr_decay is None else f"|lr_decay={step_size},{gamma!r}")
                               + ("" if ema_decay is None else f"|ema_decay={float(ema_decay)!r}"))
    if folder is not None and (folder / LAST).is_file():
        history, rng = _resume(folder, module, optimizer, fingerprint, average)
        best_state = load_file(str(folder / BEST)) if (folder / BEST).is_file() else _copy_state(module)
    workers.check_same(len(history.epochs), "the epochs already done in checkpoint_dir")
    step = workers.wrap(module, loss)  # loss(batch), through DDP when there are several processes
    bar = tqdm(total=num_epochs, initial=len(history.epochs), desc=description, disable=not show_progress,
               unit="epoch", leave=False)
    while len(history.epochs) < num_epochs and not history.stopped_early:
        epoch, started = len(history.epochs), time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * gamma ** (epoch // step_size)
        module.train()
        total, count = 0.0, 0
        for batch in batches(rng):
            optimizer.zero_grad(set_to_none=True)
            value = step(batch)
            if not torch.isfinite(value):
                raise FloatingPointError(f"{description}: the loss became {value.item()} in epoch {epoch + 1}; "
                                         f"lower learning_rate (now {learning_rate}) or check the inputs")
            value.backward()
            optimizer.step()
            if average is not None:
                _update_average(average, module, ema_decay, history.steps)
            total, count, history.steps = total + value.item(), count + 1, history.steps + 1
        if count == 0:
            raise DataError(f"{description}: an epoch yielded no batches; check the training data")
        module.eval()
        record = {"epoch": epoch + 1, "loss": workers.sum(total) / workers.world_size / count}
        trained = None if average is None else _copy_state(module)
        if average is not None:  # validate (and keep) the average; training goes on from `trained`
            module.load_state_dict(average)
        if validate is not None:
            record["valid"] = workers.from_main(lambda: _validated(validate))
        record["seconds"] = time.perf_counter() - started
        history.epochs.append(record)
        for listener in _LISTENERS.get() if workers.is_main else ():
            listener(dict(record))
        score = record.get("valid", -record["loss"])
        if score > history.best_score:
            history.best_epoch, history.best_score = epoch + 1, score
            best_state = _copy_state(module)
            if folder is not None and workers.is_main:
                _save_atomically(best_state, folder / BEST, {})
        elif epoch + 1 - history.best_epoch >= patience:
            history.stopped_early = True
        if trained is not None:
            module.load_state_dict(trained)
        if folder is not None and workers.is_main:
            _save_checkpoint(folder, module, optimizer, rng, history, fingerprint, average)
        bar.update(1)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("loss", "valid")})
    bar.close()
    module.load_state_dict(best_state)
    module.eval()
    return history


def _checked_decay(lr_decay: tuple[int, float] | None) -> tuple[int, float]:
    """(step, gamma) of a learning-rate decay, (1, 1.0) for none; a clear error for a malformed one."""
    if lr_decay is None:
        return 1, 1.0
    if not isinstance(lr_decay, (tuple, list)) or len(lr_decay) != 2:
        raise DataError(f"lr_decay must be (step, gamma), e.g. (2, 0.85), or None; got {lr_decay!r}")
    check_positive_int(None, "lr_decay[0]", lr_decay[0], hint="the decay's step in epochs, e.g. 2")
    check_number(None, "lr_decay[1]", lr_decay[1], positive=True, hint="the decay's factor, e.g. 0.85")
    return int(lr_decay[0]), float(lr_decay[1])


def _validated(validate: Callable[[], float]) -> float:
    """The validation score, computed without gradients."""
    with torch.inference_mode():
        return float(validate())


def _update_average(average: dict[str, torch.Tensor], module: torch.nn.Module, decay: float, step: int) -> None:
    """Move the average towards the module's weights after optimiser step `step` (0-based); buffers are copied."""
    rate = min(float(decay), (1 + step) / (10 + step))
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                average[name].mul_(rate).add_(value, alpha=1 - rate)
            else:
                average[name].copy_(value)


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the module's weights."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _fingerprint(module: torch.nn.Module, learning_rate: float, weight_decay: float, seed: int, run_key: str) -> str:
    """A hash of what makes two runs the same run (architecture, settings, caller's key)."""
    shapes = [(name, tuple(t.shape), str(t.dtype)) for name, t in module.state_dict().items()]
    text = json.dumps([type(module).__name__, shapes, learning_rate, weight_decay, seed, run_key])
    return hashlib.sha256(text.encode()).hexdigest()


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {name: tensor.contiguous() for name, tensor in tensors.items()}
    write_atomically(path, lambda temporary: save_file(contiguous, str(temporary), metadata=metadata))


def _save_checkpoint(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     rng: np.random.Generator, history: TrainHistory, fingerprint: str,
                     average: dict[str, torch.Tensor] | None) -> None:
    """Save everything needed to continue after the latest epoch."""
    tensors = {f"model.{name}": tensor for name, tensor in module.state_dict().items()}
    tensors.update({f"average.{name}": tensor for name, tensor in (average or {}).items()})
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    tensors["torch_rng"] = torch.get_rng_state()
    metadata = {"fingerprint": fingerprint, "param_groups": json.dumps(state["param_groups"]),
                "numpy_rng": json.dumps(rng.bit_generator.state), "history": json.dumps(history.__dict__)}
    _save_atomically(tensors, folder / LAST, metadata)


def _resume(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
            fingerprint: str, average: dict[str, torch.Tensor] | None) -> tuple[TrainHistory, np.random.Generator]:
    """Load the latest checkpoint of this same run into module, optimizer and (if kept) the weights' average."""
    from safetensors import safe_open

    with safe_open(str(folder / LAST), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("fingerprint") != fingerprint:
            raise DataError(f"{folder / LAST} belongs to another run (different model, settings or seed); "
                            f"use another checkpoint_dir or delete that folder to start over")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    module.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for name in average or {}:
        average[name].copy_(tensors[f"average.{name}"])
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": json.loads(metadata["param_groups"])})
    torch.set_rng_state(tensors["torch_rng"])
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(metadata["numpy_rng"])
    return TrainHistory(**json.loads(metadata["history"])), rng
