"""Several processes working as one, with PyTorch's own stack: torchrun starts them, torch.distributed joins
them into a process group, DistributedDataParallel (DDP) keeps their model copies equal.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m xscene_lib.experiments.scaling_demo

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in every process it starts; `setup`
reads them and joins the group (gloo for CPU tensors, NCCL for CUDA tensors when GPUs exist), with a timeout
so that a process waiting on a stopped or stalled peer fails instead of waiting forever. The group stays
joined until `teardown()`, so one script can train several models. `torchrun(...)` starts such a job from
Python (as `xscene encode --shards N` does) and raises with each process's last words when one fails.

How a batch is split, so that W processes compute the update one process would (up to float summation order):
every process draws the same whole batch of n rows from the same seeded generator and computes the loss of
its own contiguous rows (`WorkerGroup.rows`), scaled to W/n times their sum (`WorkerGroup.mean`). DDP
averages the gradients over the W processes, which gives (1/n) * the sum over all n rows: the gradient of the
whole batch's mean loss. The processes then take the same Adam step from the same weights.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from xscene_lib.data.validation import check_positive_int

DEFAULT_TIMEOUT_S = 300  # longest wait of one collective operation (a validation pass runs inside one)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A multi-process job cannot start or go on; the message says which process and what to do."""


def share(n: int, rank: int, world_size: int) -> slice:
    """Process `rank`'s contiguous part of n things split over world_size processes (sizes differ by <= 1)."""
    if not 0 <= rank < world_size:
        raise DistributedError(f"rank {rank} is outside 0..{world_size - 1}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


@dataclass(frozen=True)
class WorkerGroup:
    """This process's place among the processes of a job; rank 0 of 1 when running alone."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports: rank 0."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether there are other processes to agree with."""
        return self.world_size > 1

    def rows(self, n_rows: int) -> slice:
        """This process's contiguous rows of a batch of n_rows drawn alike by every process."""
        return share(n_rows, self.rank, self.world_size)

    def mean(self, values: torch.Tensor, n_rows: int) -> torch.Tensor:
        """This process's part of the mean over all n_rows; DDP's average over processes completes it.

        shape: values (b,), the rows of `rows(n_rows)` -> ().
        """
        if not self.is_distributed:
            return values.mean()
        return values.sum() / self.divisor(n_rows)

    def divisor(self, n_rows: int) -> float:
        """What a sum over this process's rows is divided by to be its part of the batch mean."""
        return n_rows if not self.is_distributed else n_rows / self.world_size

    def wrap(self, module: torch.nn.Module, loss: Callable[[Any], torch.Tensor]) -> Callable[[Any], torch.Tensor]:
        """`loss` run through DDP so that backward() averages the gradients of `module` over processes."""
        if not self.is_distributed:
            return loss
        from torch.nn.parallel import DistributedDataParallel

        # buffers (the frozen text) are equal everywhere and never change: not sent again at every step
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # torch >= 2.13
        no_buffer_sync = {"forward_sync_buffers" if newer else "broadcast_buffers": False}
        # DDP starts by broadcasting rank 0's weights and checks that every process holds the same shapes
        return DistributedDataParallel(_LossOf(module, loss), **no_buffer_sync)

    def sum(self, value: float) -> float:
        """The sum of `value` over all processes."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def from_main(self, compute: Callable[[], float]) -> float:
        """`compute()` run on rank 0 only and sent to every process, so decisions made from it agree."""
        if not self.is_distributed:
            return compute()
        tensor = torch.tensor([compute() if self.is_main else 0.0], dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def check_same(self, value: int, what: str) -> None:
        """Raise DistributedError unless every process holds the same `value` of `what`."""
        if not self.is_distributed:
            return
        values = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(values, torch.tensor([value], dtype=torch.int64))
        seen = [int(v.item()) for v in values]
        if len(set(seen)) > 1:
            raise DistributedError(f"the processes disagree on {what}: {seen} (rank 0, 1, ...); every process "
                                   f"must see the same data, settings and checkpoint folder")


SINGLE = WorkerGroup()


class _LossOf(torch.nn.Module):
    """A module whose forward is the training loss of `module`: what DDP wraps, so its hooks see every step."""

    def __init__(self, module: torch.nn.Module, loss: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.loss = loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss(batch)


def launched() -> bool:
    """Whether this process was started by torchrun (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def setup(*, world_size: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> WorkerGroup:
    """Join the process group that torchrun's environment describes (or the one already joined)."""
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; install the standard torch wheel")
    if not dist.is_initialized():
        missing = [name for name in TORCHRUN_ENV if name not in os.environ]
        if missing:
            raise DistributedError(f"distributed=True needs the environment torchrun sets ({', '.join(missing)} "
                                   f"missing); launch the script with: python -m torch.distributed.run "
                                   f"--standalone --nproc-per-node N your_script.py, or use distributed=False")
        # gloo carries CPU tensors; with GPUs, NCCL carries CUDA tensors in the same group
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    group = WorkerGroup(dist.get_rank(), dist.get_world_size())
    if world_size is not None and world_size != group.world_size:
        raise DistributedError(f"this job runs {group.world_size} processes but {world_size} were asked for; "
                               f"launch with --nproc-per-node {world_size}")
    return group


def teardown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_collective_failure(error: BaseException) -> bool:
    """Whether an error comes from an exchange between processes (a peer stopped, or a timeout)."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(sign in text for sign in ("gloo", "NCCL", "Connection closed",
                                                                               "Timed out", "timed out"))


def collective_failure(error: BaseException, group: WorkerGroup) -> DistributedError:
    """A clear error for a collective operation that failed because another process stopped or stalled."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DistributedError(f"process {group.rank} of {group.world_size}: another process of the job stopped (its "
                            f"own error is in its output) or did not answer within the timeout, so this one stops "
                            f"too ({first_line})")


def torchrun(arguments: Sequence[str], n_processes: int, *, timeout_s: float = 3_600,
             env: dict[str, str] | None = None) -> str:
    """Run `python -m torch.distributed.run --standalone --nproc-per-node N ARGUMENTS`; its output, or raise."""
    check_positive_int("torchrun", "n_processes", n_processes)
    with tempfile.TemporaryDirectory(prefix="xscene-torchrun-") as logs:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n_processes}",
                   f"--log-dir={logs}", "--redirects=3", *arguments]  # each process's output in its own file
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout_s)
            failure = None if process.returncode == 0 else f"failed (exit status {process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # torchrun and the processes it started: their own session
            output, failure = process.communicate()[0], f"did not finish within {timeout_s} s and was stopped"
        if failure is None:
            return output + "".join(path.read_text(errors="replace") for path in sorted(Path(logs).rglob("*.log")))
        said = [f"rank {path.parent.name}: {_last_lines(path)}" for path in sorted(Path(logs).rglob("stderr.log"))]
        raise DistributedError(f"torchrun --nproc-per-node={n_processes} {' '.join(arguments)} {failure}; what each "
                               f"process said last:\n" + "\n".join(said or [_last_lines_of(output)]))


def _last_lines(path: Path, count: int = 1) -> str:
    """The last non-blank line(s) of a log file: with a traceback, the error itself."""
    return _last_lines_of(path.read_text(errors="replace"), count)


def _last_lines_of(text: str, count: int = 3) -> str:
    """The last non-blank lines of a text, joined with " | "."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "(nothing)"
