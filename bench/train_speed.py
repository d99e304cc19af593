"""Training speed and memory of BPR-MF and the joint model on ml-100k and ml-1m (age scenarios), on this machine.

For each (dataset, model) a fresh Python process loads the data (and, for the joint model, the item text
vectors), then fits with early stopping on validation NDCG@10 at the model's default settings. Reported:

- s/epoch: mean wall-clock seconds of an epoch, its validation included;
- epochs: epochs run, and the best (kept) epoch; early stopping ends the run `patience` epochs after it;
- fit s: wall-clock seconds of the whole fit (set-up, training, validation);
- peak MiB: growth of the process's peak resident memory during the fit (getrusage ru_maxrss in the fresh
  process, minus the resident memory just before fit; covers torch, numpy and Python alike). tracemalloc is
  left off because it slows the training loop it would measure.

Targets: BPR-MF converges on ml-100k within 15 s in total; the joint model takes at most 60 s an epoch on
ml-1m. The last line gives each measured figure as a ratio to its target (below 1 meets it).

    python bench/train_speed.py                       # everything (ml-1m joint model: several minutes)
    python bench/train_speed.py --datasets ml-100k    # quicker
    OMP_WAIT_POLICY=PASSIVE python bench/train_speed.py --threads 2

On a machine whose cores other processes also use, torch's OpenMP threads spin while they wait for each
other and an epoch can take ten times longer; OMP_WAIT_POLICY=PASSIVE (set before Python starts) or
--threads 1 avoids that. The table says how many threads ran and the policy in force.
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

MODELS = ("bpr", "joint")
DATASETS = ("ml-100k", "ml-1m")
SOURCES = ("local", "mirror", "fallback")
TARGETS = {("bpr", "ml-100k"): ("fit_s", 15.0), ("joint", "ml-1m"): ("s_per_epoch", 60.0)}


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


def measure_one(model_name: str, dataset_name: str, threads: int | None) -> dict[str, object]:
    """Fit one model on one dataset in this process and measure it."""
    import psutil
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from xscene_lib.data import loading as datasets
    from xscene_lib.models import BPRMF
    from xscene_lib.models import JointModel

    dataset = datasets.load(dataset_name, "age", sources=SOURCES, verbose=False)
    split = dataset.split()
    vectors, how = item_vectors(dataset) if model_name == "joint" else (None, "-")
    model = BPRMF(show_progress=False) if model_name == "bpr" else JointModel(show_progress=False)
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes on Linux
    started = time.perf_counter()
    model.fit(split.train, vectors, items=dataset.items["item_id"], valid=split.valid)
    fit_s = time.perf_counter() - started
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    epochs = model.history_.frame
    return {"dataset": dataset_name, "model": model_name, "interactions": len(split.train), "vectors": how,
            "threads": torch.get_num_threads(), "epochs": len(epochs), "best_epoch": model.history_.best_epoch,
            "s_per_epoch": float(epochs["seconds"].mean()), "fit_s": fit_s,
            "peak_mib": (peak_after - rss_before) / 2**20, "peak_is_bound": peak_after == peak_before,
            "best_valid_ndcg10": model.history_.best_score}


def run_all(models: list[str], names: list[str], threads: int | None) -> list[dict[str, object]]:
    """Measure every (dataset, model) in its own fresh process, one after the other."""
    rows = []
    for dataset_name in names:
        for model_name in models:
            command = [sys.executable, __file__, "--one", model_name, dataset_name]
            done = subprocess.run(command + ([] if threads is None else ["--threads", str(threads)]),
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{model_name} on {dataset_name} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  measured {model_name} on {dataset_name}", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict[str, object]], load_at_start: float) -> None:
    """Print the table, the vectors used, and the last line of figures against the targets."""
    print(f"{'dataset':8} {'model':6} {'train rows':>10} {'threads':>7} {'s/epoch':>8} {'epochs':>6} "
          f"{'best':>4} {'fit s':>7} {'peak MiB':>9} {'valid NDCG@10':>13}")
    for row in rows:
        peak = f"{'<=' if row['peak_is_bound'] else ''}{row['peak_mib']:.0f}"
        print(f"{row['dataset']:8} {row['model']:6} {row['interactions']:>10,} {row['threads']:>7} "
              f"{row['s_per_epoch']:>8.2f} {row['epochs']:>6} {row['best_epoch']:>4} {row['fit_s']:>7.1f} "
              f"{peak:>9} {row['best_valid_ndcg10']:>13.4f}")
    for row in rows:
        if row["model"] == "joint":
            print(f"item vectors for {row['dataset']}: {row['vectors']}")
    print(f"machine: {os.cpu_count()} cores, load average {load_at_start:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    figures = []
    for (model, dataset), (key, target) in TARGETS.items():
        for row in rows:
            if (row["model"], row["dataset"]) == (model, dataset):
                ratio = row[key] / target
                figures.append(f"{model} {dataset} {key} {row[key]:.1f} / target {target:.0f} = {ratio:.2f}")
    print("figures: " + ("; ".join(figures) if figures else "no targeted (model, dataset) pair was measured"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "DATASET"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        print(json.dumps(measure_one(*arguments.one, arguments.threads)))
        return
    load_at_start = os.getloadavg()[0]
    report(run_all(arguments.models, arguments.datasets, arguments.threads), load_at_start)


if __name__ == "__main__":
    main()
