"""Training speed and memory of BPR-MF, the joint, the sequential and the click-through models (age scenarios).

For each (dataset, model) a fresh Python process loads the data (and, for the joint model, the item text
vectors), then fits with early stopping on validation NDCG@10 at the model's default settings. Reported:

- s/epoch: mean wall-clock seconds of an epoch, its validation included;
- epochs: epochs run, and the best (kept) epoch; early stopping ends the run `patience` epochs after it;
- fit s: wall-clock seconds of the whole fit (set-up, training, validation);
- peak MiB: growth of the process's peak resident memory during the fit (getrusage ru_maxrss in the fresh
  process, minus the resident memory just before fit; covers torch, numpy and Python alike). tracemalloc is
  left off because it slows the training loop it would measure.

Targets: BPR-MF converges on ml-100k within 15 s in total; the joint model takes at most 60 s an epoch on
ml-1m; the sequential models (sasrec; seq-joint: with text) at most 20 s an epoch on ml-1m at max_length 50 and
200; each click-through model (shared-bottom, star, joint-ctr, joint-ctr-no-text; ml-1m only, the
click-through split of seed 2022, early stopping on validation AUC) fits in at most 80 s, the time the
Scenario-Wise Rec benchmark's own SharedBottom took on this machine (its code is not on PyPI, so it cannot be
timed in the same run; the figure is the one recorded with the project's peer notes). The last line gives
each measured figure as a ratio to its target (below 1 meets it).

The sequential models run `--epochs` epochs (default 2) at `--lengths` (default 50 200), without early stopping,
and their row also gives `x ref`: the epoch's seconds over those of a plain matmul reference timed in the same
process just before the fit, three (N, 64) x (64, n_items) products per batch of the same sizes as the full
softmax's forward and backward (N: the positions with a target in a batch, averaged over an epoch). The softmax
needs those FLOPs whatever its implementation, so `x ref` is the epoch's cost in units of its unavoidable part,
and it moves much less with the machine's load than the seconds do.

    python bench/train_speed.py                       # everything (ml-1m joint model: several minutes)
    python bench/train_speed.py --datasets ml-100k    # quicker
    python bench/train_speed.py --threads 2 --datasets ml-1m --models shared-bottom star joint-ctr   # idle machine

On a machine whose cores other processes also use, torch's OpenMP threads spin while they wait for each
other and an epoch can take ten times longer; OMP_WAIT_POLICY=PASSIVE (set before Python starts) or
--threads 1 avoids that. On an idle machine leave the policy unset: PASSIVE makes every small operation wait for
a sleeping thread, and the click-through models' 2-thread fits take twice as long with it (bench/README.md). The
table says how many threads ran and the policy in force.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

MODELS = ("bpr", "joint", "sasrec", "seq-joint", "shared-bottom", "star", "joint-ctr", "joint-ctr-no-text")
SEQUENTIAL = ("sasrec", "seq-joint")
CLICK_THROUGH = ("shared-bottom", "star", "joint-ctr", "joint-ctr-no-text")  # ml-1m only
BENCHMARK_SHAREDBOTTOM_S = 80.0  # the benchmark's SharedBottom fit on this machine, one thread (peer notes)
DATASETS = ("ml-100k", "ml-1m")
SOURCES = ("local", "mirror", "fallback")
TARGETS = {("bpr", "ml-100k"): ("fit_s", 15.0), ("joint", "ml-1m"): ("s_per_epoch", 60.0),
           ("sasrec", "ml-1m"): ("s_per_epoch", 20.0), ("seq-joint", "ml-1m"): ("s_per_epoch", 20.0),
           **{(name, "ml-1m"): ("fit_s", BENCHMARK_SHAREDBOTTOM_S) for name in CLICK_THROUGH}}


def item_vectors(dataset) -> tuple[object, str]:
    """The items' text vectors from xscene_lib.text.encoder, or random vectors (and why) when that fails."""
    import numpy as np
    import pandas as pd

    started = time.perf_counter()
    try:
        from xscene_lib.text import TextEncoder

        encoder = TextEncoder(show_progress=False)
        values = encoder.encode(dataset.items["text"].tolist())
        how = f"{encoder.model} ({values.shape[1]} d, {time.perf_counter() - started:.0f} s incl. cache)"
    except Exception as error:  # any failure of the encoder: fall back, and say so in the table
        values = np.random.default_rng(0).normal(size=(len(dataset.items), 384)).astype(np.float32)
        how = f"RANDOM 384 d (text encoder failed: {type(error).__name__}: {str(error)[:80]})"
    return pd.DataFrame(values, index=dataset.items["item_id"].to_numpy()), how


def softmax_reference(train, length: int, batch_size: int, n_batches: int = 6) -> float:
    """Seconds of the full softmax's matmuls over one epoch of the sequential model: three products a batch of
    (N, 64) by (64, n_items), N the mean number of positions with a target in a batch, timed on n_batches."""
    import math

    import torch

    targets = train.groupby("user_id").size().to_numpy() - 1  # (n_users,) transitions of each user
    targets = targets[targets > 0]
    per_epoch = float((targets / -(-targets // length)).sum())  # one window a user, drawn uniformly
    batches = math.ceil(len(targets) / batch_size)
    n_rows = round(per_epoch / batches)
    hidden, table = torch.randn(n_rows, 64), torch.randn(train["item_id"].nunique(), 64)
    started = time.perf_counter()
    for _ in range(n_batches):
        logits = hidden @ table.T  # (N, n_items), the forward product
        logits @ table, logits.T @ hidden  # the two of the backward pass
    return (time.perf_counter() - started) / n_batches * batches


def measure_one(model_name: str, dataset_name: str, threads: int | None, length: int = 50,
                epochs: int = 2) -> dict[str, object]:
    """Fit one model on one dataset in this process and measure it (length, epochs: sequential models only)."""
    import psutil
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from xscene_lib.data import loading as datasets
    from xscene_lib.models import BPRMF
    from xscene_lib.models import JointModel
    from xscene_lib.models import SequentialModel

    dataset = datasets.load(dataset_name, "age", sources=SOURCES, verbose=False)
    vectors, how = item_vectors(dataset) if model_name in ("joint", "seq-joint", "joint-ctr") else (None, "-")
    if model_name in CLICK_THROUGH:
        return measure_click_through(model_name, dataset, vectors, how)
    split = dataset.split()
    if model_name in SEQUENTIAL:  # as experiments/registry.py builds them, for a fixed number of epochs
        model = SequentialModel(max_length=length, num_epochs=epochs, patience=epochs, show_progress=False,
                                use_text=model_name == "seq-joint", adaptation="film" if vectors is not None else None)
        reference = softmax_reference(split.train, length, model.batch_size)
    else:
        model = BPRMF(show_progress=False) if model_name == "bpr" else JointModel(show_progress=False)
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes on Linux
    started = time.perf_counter()
    model.fit(split.train, vectors, items=dataset.items["item_id"], valid=split.valid)
    fit_s = time.perf_counter() - started
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if model_name in SEQUENTIAL:
        reference = (reference + softmax_reference(split.train, length, model.batch_size)) / 2  # before and after
    epochs = model.history_.frame
    return {"dataset": dataset_name, "model": model_name, "interactions": len(split.train), "vectors": how,
            "length": length if model_name in SEQUENTIAL else None,
            "x_ref": float(epochs["seconds"].mean()) / reference if model_name in SEQUENTIAL else None,
            "threads": torch.get_num_threads(), "epochs": len(epochs), "best_epoch": model.history_.best_epoch,
            "s_per_epoch": float(epochs["seconds"].mean()), "fit_s": fit_s,
            "peak_mib": (peak_after - rss_before) / 2**20, "peak_is_bound": peak_after == peak_before,
            "best_valid": model.history_.best_score}


def measure_click_through(model_name: str, dataset, vectors, how: str) -> dict[str, object]:
    """Fit one click-through model on the benchmark's protocol (split seed 2022) and measure it."""
    import psutil
    import torch

    from xscene_lib.experiments.registry import model_spec
    from xscene_lib.models.ctr_protocol import click_through_split

    split = click_through_split(dataset, seed=2022)
    model = model_spec(model_name, "click-through").build(seed=2022, smoke=False)
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes on Linux
    started = time.perf_counter()
    model.fit(split.train, vectors, valid=split.valid)
    fit_s = time.perf_counter() - started
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    epochs = model.history_.frame
    return {"dataset": dataset.name, "model": model_name, "interactions": len(split.train), "vectors": how,
            "length": None, "x_ref": None, "threads": torch.get_num_threads(), "epochs": len(epochs),
            "best_epoch": model.history_.best_epoch, "s_per_epoch": float(epochs["seconds"].mean()), "fit_s": fit_s,
            "peak_mib": (peak_after - rss_before) / 2**20, "peak_is_bound": peak_after == peak_before,
            "best_valid": model.history_.best_score,
            "test_auc": float(model.evaluate(split.test).loc["all", "auc"])}


def run_all(models: list[str], names: list[str], threads: int | None, lengths: list[int],
            epochs: int) -> list[dict[str, object]]:
    """Measure every (dataset, model, length) in its own fresh process, one after the other."""
    rows = []
    for dataset_name in names:
        for model_name in [m for m in models if dataset_name == "ml-1m" or m not in CLICK_THROUGH]:
            for length in lengths if model_name in SEQUENTIAL else [lengths[0]]:
                command = [sys.executable, __file__, "--one", model_name, dataset_name, "--length", str(length),
                           "--epochs", str(epochs)]
                done = subprocess.run(command + ([] if threads is None else ["--threads", str(threads)]),
                                      capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{model_name} on {dataset_name} failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  measured {model_name} on {dataset_name}", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict[str, object]], load_at_start: float) -> None:
    """Print the table, the vectors used, and the last line of figures against the targets."""
    print(f"{'dataset':8} {'model':17} {'length':>6} {'train rows':>10} {'threads':>7} {'s/epoch':>8} {'x ref':>6} "
          f"{'epochs':>6} {'best':>4} {'fit s':>7} {'peak MiB':>9} {'best valid':>10} {'test AUC':>8}")
    for row in rows:
        peak = f"{'<=' if row['peak_is_bound'] else ''}{row['peak_mib']:.0f}"
        length, ratio = row.get("length"), row.get("x_ref")
        print(f"{row['dataset']:8} {row['model']:17} {'-' if length is None else length:>6} {row['interactions']:>10,} "
              f"{row['threads']:>7} {row['s_per_epoch']:>8.2f} {'-' if ratio is None else f'{ratio:.2f}':>6} "
              f"{row['epochs']:>6} {row['best_epoch']:>4} {row['fit_s']:>7.1f} {peak:>9} "
              f"{row['best_valid']:>10.4f} {row.get('test_auc', float('nan')):>8.4f}")
    print("best valid: NDCG@10 of top-k models, AUC of click-through models; test AUC: click-through models only")
    for row in rows:
        if row["model"] in ("joint", "seq-joint", "joint-ctr"):
            print(f"item vectors for {row['dataset']}: {row['vectors']}")
    print(f"machine: {os.cpu_count()} cores, load average {load_at_start:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    figures = []
    for (model, dataset), (key, target) in TARGETS.items():
        for row in rows:
            if (row["model"], row["dataset"]) == (model, dataset):
                ratio = row[key] / target
                at = "" if row.get("length") is None else f" L={row['length']}"
                reference = "" if row.get("x_ref") is None else f" ({row['x_ref']:.2f} x ref)"
                figures.append(f"{model} {dataset}{at} {key} {row[key]:.1f} / target {target:.0f} = {ratio:.2f}"
                               f"{reference}")
    print("figures: " + ("; ".join(figures) if figures else "no targeted (model, dataset) pair was measured"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[50, 200], help="sequential models' max_length")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each sequential model (no early stopping)")
    parser.add_argument("--length", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "DATASET"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        print(json.dumps(measure_one(*arguments.one, arguments.threads, arguments.length, arguments.epochs)))
        return
    load_at_start = os.getloadavg()[0]
    report(run_all(arguments.models, arguments.datasets, arguments.threads, arguments.lengths, arguments.epochs),
           load_at_start)


if __name__ == "__main__":
    main()
