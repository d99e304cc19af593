"""Distributed training: two processes under torchrun (gloo, CPU) train the joint model and BPR-MF to the same
weights and metrics as one process, only rank 0 writes checkpoints, a crashed or stalled process fails the
job with a clear message within the timeout; the batch-sharing arithmetic; clear setup errors.

Tolerance: the two-process update of a batch equals the one-process update up to float summation order (each
process sums its own rows, DDP averages the two sums), so weights agree to 1e-5 absolute (measured: ~1e-7)
and losses to 1e-6 relative. Rankings, hence NDCG, agree exactly unless two scores tie within that noise;
the check allows 1e-6 so that only such a near-tie could make it fail.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xscene_lib.training import distributed
from xscene_lib.models import BPRMF
from xscene_lib.data import DataError
from xscene_lib.training import DistributedError, WorkerGroup
from xscene_lib.models import JointModel
from xscene_lib.training.loop import BEST, LAST

JOB_TIMEOUT_S = 150  # the two-process job takes well under a minute; a hung job fails the test at this point
WEIGHT_ATOL, LOSS_RTOL, METRIC_ATOL = 1e-5, 1e-6, 1e-6

SCRIPT = textwrap.dedent('''
    """Train the joint model and BPR-MF on synthetic data; each rank writes what it saw to OUT/rank<r>.json."""
    import json, os, sys, time
    from pathlib import Path
    import numpy as np, pandas as pd, torch
    from xscene_lib.evaluation import metrics
    from xscene_lib.training import distributed, loop as training
    from xscene_lib.models.bpr import BPRMF
    from xscene_lib.models.joint import JointModel
    from xscene_lib.data.synthetic import synthetic

    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    group = distributed.setup(timeout_s=float(os.environ.get("TIMEOUT_S", 60))) if distributed.launched() \\
        else distributed.SINGLE
    writes, save = [], training._save_atomically
    training._save_atomically = lambda tensors, path, metadata: (writes.append(path.name), save(tensors, path,
                                                                                               metadata))
    steps, step = [0], torch.optim.Adam.step
    def misbehaving_step(self, *args, **kwargs):
        steps[0] += 1
        if steps[0] == 3 and os.environ.get("CRASH_RANK") == str(group.rank):
            raise RuntimeError(f"rank {group.rank} crashed on purpose")
        if steps[0] == 3 and os.environ.get("STALL_RANK") == str(group.rank):
            time.sleep(600)
        return step(self, *args, **kwargs)
    torch.optim.Adam.step = misbehaving_step

    data, truth = synthetic(n_users=120, n_items=100, n_topics=5, interactions_per_user=15, seed=0)
    split = data.split()
    noise = np.random.default_rng(0).normal(scale=0.1, size=(100, 5))
    vectors = pd.DataFrame(np.eye(5)[truth.item_topics] + noise, index=np.arange(100))
    settings = dict(num_epochs=3, batch_size=199, patience=3, show_progress=False,  # odd last batch: 84 + 83 rows
                    distributed=group.is_distributed)
    models = {"joint": JointModel(dim=16, learning_rate=1e-2, checkpoint_dir=out / "joint", **settings),
              "bpr": BPRMF(dim=16, checkpoint_dir=out / "bpr", **settings)}
    results = {}
    for name, model in models.items():
        model.fit(split.train, vectors if name == "joint" else None, items=vectors.index, valid=split.valid)
        ranks = metrics.target_ranks(model, split.train, split.test)
        history = model.history_.frame
        results[name] = {"loss": history["loss"].tolist(), "valid": history["valid"].tolist(),
                         "ndcg": float(metrics.ranking_metrics(ranks, ks=(10,))["ndcg@10"].mean()),
                         "weights": {k: v.tolist() for k, v in model.module_.state_dict().items()}}
    (out / f"rank{group.rank}.json").write_text(json.dumps({"writes": writes, "results": results}))
    distributed.teardown()
''')


def _script(folder: Path) -> Path:
    path = folder / "train_job.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The same training on one process and on two processes: what each rank wrote, and the folders."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("distributed")
    script = _script(folder)
    (folder / "one").mkdir()
    started = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(folder / "one")], check=True, timeout=JOB_TIMEOUT_S)
    (folder / "two").mkdir()
    distributed.torchrun([str(script), str(folder / "two")], 2, timeout_s=JOB_TIMEOUT_S)
    print(f"one process and two processes: {time.perf_counter() - started:.1f} s")
    read = {name: json.loads((folder / path).read_text()) for name, path in
            (("one", "one/rank0.json"), ("rank0", "two/rank0.json"), ("rank1", "two/rank1.json"))}
    return {**read, "folder": folder}


@pytest.mark.parametrize("model", ["joint", "bpr"])
def test_two_processes_train_what_one_process_trains(runs: dict, model: str) -> None:
    one, two = runs["one"]["results"][model], runs["rank0"]["results"][model]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(two["valid"], one["valid"], atol=METRIC_ATOL)
    assert abs(two["ndcg"] - one["ndcg"]) <= METRIC_ATOL
    for name, weights in one["weights"].items():
        np.testing.assert_allclose(two["weights"][name], weights, atol=WEIGHT_ATOL, rtol=0, err_msg=name)
    assert one["valid"][0] != one["valid"][-1]  # training moved the model, so agreeing says something


@pytest.mark.parametrize("model", ["joint", "bpr"])
def test_both_processes_end_with_the_same_model(runs: dict, model: str) -> None:
    assert runs["rank0"]["results"][model] == runs["rank1"]["results"][model]


def test_only_rank_zero_writes_checkpoints(runs: dict) -> None:
    assert runs["rank1"]["writes"] == []
    assert sorted(set(runs["rank0"]["writes"])) == sorted({BEST, LAST}) == sorted(set(runs["one"]["writes"]))
    for model in ("joint", "bpr"):
        assert sorted(p.name for p in (runs["folder"] / "two" / model).iterdir()) == sorted([BEST, LAST])


def test_one_process_resumes_from_the_checkpoints_of_two(runs: dict, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    shutil.copytree(runs["folder"] / "two", tmp_path / "resumed")
    (tmp_path / "resumed" / "rank0.json").unlink()
    subprocess.run([sys.executable, str(_script(tmp_path)), str(tmp_path / "resumed")], check=True,
                   timeout=JOB_TIMEOUT_S)
    resumed = json.loads((tmp_path / "resumed" / "rank0.json").read_text())
    assert resumed["writes"] == []  # every epoch was done: nothing trained, nothing written
    assert resumed["results"] == runs["rank0"]["results"]  # same history, weights and metrics


def test_a_crashed_process_fails_the_job_with_its_message(tmp_path: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(DistributedError) as failure:
        distributed.torchrun([str(_script(tmp_path)), str(tmp_path)], 2, timeout_s=JOB_TIMEOUT_S,
                             env={"CRASH_RANK": "1"})
    assert "rank 1: " in str(failure.value) and "rank 1 crashed on purpose" in str(failure.value)
    assert time.perf_counter() - started < JOB_TIMEOUT_S  # failed, not timed out by the test's own limit
    assert "did not finish" not in str(failure.value)


def test_a_stalled_process_fails_the_job_at_the_timeout(tmp_path: Path) -> None:
    with pytest.raises(DistributedError) as failure:
        distributed.torchrun([str(_script(tmp_path)), str(tmp_path)], 2, timeout_s=JOB_TIMEOUT_S,
                             env={"STALL_RANK": "1", "TIMEOUT_S": "5"})
    message = str(failure.value)
    assert "rank 0: " in message and "did not answer within the timeout" in message
    assert "did not finish" not in message  # the collective's 5 s timeout ended it, not the test's limit


# --- the arithmetic of sharing a batch, and setup errors (one process, fast) ----------------------------------


@pytest.mark.parametrize("n_rows", [6, 5, 1])  # even, uneven, and a batch smaller than the processes
def test_shared_losses_average_to_the_whole_batch_gradient(n_rows: int) -> None:
    torch.manual_seed(0)
    weights = torch.randn(4, 3, requires_grad=True)
    inputs, targets = torch.randn(n_rows, 4), torch.randn(n_rows, 3)

    def gradient(group: WorkerGroup) -> torch.Tensor:
        mine = group.rows(n_rows)
        per_row = F.mse_loss(inputs[mine] @ weights, targets[mine], reduction="none").sum(dim=1)
        (grad,) = torch.autograd.grad(group.mean(per_row, n_rows), weights)
        return grad

    whole = gradient(distributed.SINGLE)
    averaged = (gradient(WorkerGroup(0, 2)) + gradient(WorkerGroup(1, 2))) / 2  # what DDP computes
    torch.testing.assert_close(averaged, whole, atol=1e-6, rtol=1e-6)
    assert WorkerGroup(1, 2).rows(n_rows).stop == n_rows and WorkerGroup(0, 2).rows(n_rows).start == 0


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def test_distributed_fit_without_torchrun_says_how_to_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    assert not distributed.launched()
    train = _tiny_train()
    with pytest.raises(DistributedError, match="python -m torch.distributed.run --standalone --nproc-per-node N"):
        BPRMF(dim=4, num_epochs=1, distributed=True, show_progress=False).fit(train)
    with pytest.raises(DataError, match="must be True or False"):
        JointModel(use_text=False, distributed="yes").fit(train)


def test_a_world_size_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", str(port))):
        monkeypatch.setenv(name, value)
    try:
        with pytest.raises(DistributedError, match="runs 1 processes but 2 were asked for"):
            distributed.setup(world_size=2, timeout_s=30)
        assert distributed.setup(world_size=1) == WorkerGroup(0, 1)  # the group already joined is reused
    finally:
        distributed.teardown()


def _tiny_train():
    import pandas as pd

    return pd.DataFrame({"user_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 1, 2, 0], "scenario": ["a"] * 5,
                         "timestamp": range(5)})
