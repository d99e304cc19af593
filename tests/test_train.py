"""The training loop: determinism, early stopping, safetensors checkpoints, resuming, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xscene_lib.data import DataError
from xscene_lib.training import seeded_generator, train_module as train
from xscene_lib.training.loop import BEST, LAST, epoch_listener

TRUE_WEIGHTS = torch.tensor([[2.0], [-3.0], [0.5]])


def _problem(seed: int = 0):
    """A small linear regression with a known answer: module, batches, loss and validation."""
    seeded_generator(seed)
    module = torch.nn.Linear(3, 1, bias=False)
    inputs = torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    targets = inputs @ TRUE_WEIGHTS

    def batches(rng: np.random.Generator):
        order = rng.permutation(len(inputs))
        for start in range(0, len(order), 32):
            yield torch.as_tensor(order[start:start + 32])

    def loss(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(module(inputs[batch]), targets[batch])

    def validate() -> float:
        return -torch.nn.functional.mse_loss(module(inputs), targets).item()

    return module, batches, loss, validate


def test_training_finds_the_known_weights() -> None:
    module, batches, loss, validate = _problem()
    history = train(module, batches, loss, validate=validate, num_epochs=60, learning_rate=0.05,
                     patience=60, show_progress=False)
    assert torch.allclose(module.weight.detach().T, TRUE_WEIGHTS, atol=1e-2)
    assert history.best_score > -1e-4
    assert list(history.frame.columns) == ["epoch", "loss", "valid", "seconds"]


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    runs = []
    for seed in (0, 0, 1):
        module, batches, loss, validate = _problem(seed)
        history = train(module, batches, loss, validate=validate, num_epochs=3, learning_rate=0.01,
                        seed=seed, show_progress=False)
        runs.append((module.weight.detach().clone(), history.frame["loss"].tolist()))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def test_early_stopping_keeps_the_best_epoch() -> None:
    module, batches, loss, _ = _problem()
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])
    history = train(module, batches, loss, validate=lambda: next(scores), num_epochs=6, patience=3,
                    learning_rate=0.01, show_progress=False)
    assert history.stopped_early and history.best_epoch == 2 and len(history.epochs) == 5


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    module, batches, loss, validate = _problem()
    train(module, batches, loss, validate=validate, num_epochs=6, learning_rate=0.01, patience=6,
          checkpoint_dir=tmp_path / "whole", show_progress=False)
    uninterrupted = module.weight.detach().clone()

    module, batches, loss, validate = _problem()
    calls = {"n": 0}

    def failing_loss(batch: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 8 * 3 + 2:  # 8 batches an epoch: fail inside epoch 4
            raise KeyboardInterrupt
        return loss(batch)

    with pytest.raises(KeyboardInterrupt):
        train(module, batches, failing_loss, validate=validate, num_epochs=6, learning_rate=0.01, patience=6,
              checkpoint_dir=tmp_path / "split", show_progress=False)
    assert (tmp_path / "split" / LAST).is_file() and (tmp_path / "split" / BEST).is_file()
    module, batches, loss, validate = _problem()
    history = train(module, batches, loss, validate=validate, num_epochs=6, learning_rate=0.01, patience=6,
                    checkpoint_dir=tmp_path / "split", show_progress=False)
    assert len(history.epochs) == 6
    assert torch.equal(module.weight.detach(), uninterrupted)
    assert not any(p.name.startswith(".") for p in (tmp_path / "split").iterdir())  # no temporary files left


def test_checkpoints_are_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    module, batches, loss, validate = _problem()
    train(module, batches, loss, validate=validate, num_epochs=2, checkpoint_dir=tmp_path, show_progress=False)
    assert set(load_file(str(tmp_path / BEST))) == {"weight"}
    assert "model.weight" in load_file(str(tmp_path / LAST))


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    module, batches, loss, validate = _problem()
    train(module, batches, loss, validate=validate, num_epochs=1, checkpoint_dir=tmp_path, show_progress=False)
    module, batches, loss, validate = _problem()
    with pytest.raises(DataError, match="another run"):
        train(module, batches, loss, validate=validate, num_epochs=1, learning_rate=0.5, checkpoint_dir=tmp_path,
              show_progress=False)


@pytest.mark.parametrize("setting", [{"num_epochs": 0}, {"patience": -1}, {"learning_rate": 0.0},
                                     {"weight_decay": -1.0}, {"num_epochs": 2.5}])
def test_bad_settings_are_refused(setting: dict) -> None:
    module, batches, loss, _ = _problem()
    with pytest.raises(DataError):
        train(module, batches, loss, show_progress=False, **setting)


def test_a_diverging_loss_says_what_to_do() -> None:
    module, batches, _, _ = _problem()
    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        train(module, batches, lambda batch: module.weight.sum() * float("nan"), show_progress=False)


def test_no_batches_is_a_clear_error() -> None:
    module, _, loss, _ = _problem()
    with pytest.raises(DataError, match="no batches"):
        train(module, lambda rng: iter(()), loss, show_progress=False)


def test_an_epoch_listener_sees_every_epoch_inside_its_block_only() -> None:
    seen: list[dict[str, float]] = []
    net = torch.nn.Linear(2, 1)
    batches = lambda rng: [torch.ones(4, 2)]  # noqa: E731
    loss = lambda batch: net(batch).pow(2).mean()  # noqa: E731
    with epoch_listener(seen.append):
        train(net, batches, loss, validate=lambda: 0.5, num_epochs=3, patience=5, show_progress=False)
    assert [(r["epoch"], r["valid"]) for r in seen] == [(1, 0.5), (2, 0.5), (3, 0.5)]
    train(net, batches, loss, num_epochs=2, show_progress=False)
    assert len(seen) == 3  # outside the block nothing is called

    def stop(record: dict[str, float]) -> None:
        raise KeyboardInterrupt
    with epoch_listener(stop), pytest.raises(KeyboardInterrupt):
        train(net, batches, loss, num_epochs=3, show_progress=False)


def test_lr_decay_lowers_the_step_every_step_epochs() -> None:
    weight = torch.nn.Parameter(torch.zeros(()))
    holder = torch.nn.Module()
    holder.weight = weight
    # a constant gradient of 1: each Adam step moves the weight by the learning rate of its epoch
    train(holder, lambda rng: [None], lambda batch: holder.weight * 1.0, num_epochs=4, learning_rate=0.1,
          lr_decay=(2, 0.5), patience=10, show_progress=False)
    assert weight.item() == pytest.approx(-(0.1 + 0.1 + 0.05 + 0.05), abs=1e-5)
    with pytest.raises(DataError, match=r"lr_decay must be \(step, gamma\)"):
        train(holder, lambda rng: [None], lambda batch: holder.weight * 1.0, lr_decay=0.5, show_progress=False)
    with pytest.raises(DataError, match=r"lr_decay\[1\]"):
        train(holder, lambda rng: [None], lambda batch: holder.weight * 1.0, lr_decay=(2, 0), show_progress=False)


def _constant_slope(trajectory: list[float]) -> tuple[torch.nn.Module, object, object]:
    """A weight at 0 with a gradient of 1: each Adam step lowers it by the learning rate; 2 steps an epoch.

    The batches note the (raw) weight at the start of every epoch in `trajectory`."""
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(torch.zeros(()))

    def batches(rng: np.random.Generator):
        trajectory.append(holder.weight.item())
        yield from (None, None)

    return holder, batches, lambda batch: holder.weight * 1.0


def test_ema_decay_validates_and_keeps_the_moving_average_and_trains_on_the_raw_weights() -> None:
    raw: list[float] = []
    holder, batches, loss = _constant_slope(raw)
    history = train(holder, batches, loss, validate=lambda: -holder.weight.item(), num_epochs=3,
                    learning_rate=0.1, ema_decay=0.2, patience=10, show_progress=False)
    average, by_epoch = 0.0, []
    for step in range(6):  # the weight after step t is -0.1 (t + 1); the rate is min(0.2, (1 + t) / (10 + t))
        rate = min(0.2, (1 + step) / (10 + step))
        average = rate * average + (1 - rate) * -0.1 * (step + 1)
        by_epoch += [average] if step % 2 else []
    assert [-r["valid"] for r in history.epochs] == pytest.approx(by_epoch, abs=1e-6)
    assert holder.weight.item() == pytest.approx(by_epoch[-1], abs=1e-6)  # the average is kept, not -0.6
    assert raw == pytest.approx([0.0, -0.2, -0.4], abs=1e-6)  # training went on from the raw weights
    assert history.steps == 6


def test_an_interrupted_run_with_ema_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    module, batches, loss, validate = _problem()
    train(module, batches, loss, validate=validate, num_epochs=4, learning_rate=0.01, patience=6, ema_decay=0.9,
          checkpoint_dir=tmp_path / "whole", show_progress=False)
    uninterrupted = module.weight.detach().clone()
    module, batches, loss, validate = _problem()

    def stop_after_two(record: dict[str, float]) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt
    with epoch_listener(stop_after_two), pytest.raises(KeyboardInterrupt):
        train(module, batches, loss, validate=validate, num_epochs=4, learning_rate=0.01, patience=6,
              ema_decay=0.9, checkpoint_dir=tmp_path / "split", show_progress=False)
    module, batches, loss, validate = _problem()
    with pytest.raises(DataError, match="another run"):  # the same run without the average is another run
        train(module, batches, loss, validate=validate, num_epochs=4, learning_rate=0.01, patience=6,
              checkpoint_dir=tmp_path / "split", show_progress=False)
    history = train(module, batches, loss, validate=validate, num_epochs=4, learning_rate=0.01, patience=6,
                    ema_decay=0.9, checkpoint_dir=tmp_path / "split", show_progress=False)
    assert len(history.epochs) == 4 and history.steps == 4 * 8
    assert torch.equal(module.weight.detach(), uninterrupted)


@pytest.mark.parametrize("ema_decay", [1.0, -0.1, "0.9"])
def test_a_bad_ema_decay_is_refused(ema_decay: object) -> None:
    holder, batches, loss = _constant_slope([])
    with pytest.raises(DataError, match="ema_decay"):
        train(holder, batches, loss, ema_decay=ema_decay, show_progress=False)
