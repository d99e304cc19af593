"""Benchmark: does a moving average of the weights make the sequential models' seeds agree, on validation?

Three seeds of one model end at test NDCG@10 that differ by more than the row noise (chapter 8's seed spread).
`SequentialModel(ema_decay=d)` validates and keeps an exponential moving average of its weights
(training/loop.py). This script fits each model with the dataset's tuned settings (configs/), once per seed and
per value of ema_decay ("none": no average), and scores the **validation** rows from the training rows alone
(`SequentialModel.set_history`), as early stopping did. The test rows are never read, so the choice it informs
is made on validation.

    python bench/weight_average.py --dataset ml-100k --scenarios age --models sasrec seq-joint

Output: bench/results/weight_average/<dataset>-<view>.csv, one row per fit (model, ema_decay, seed, validation
NDCG@10, epochs, seconds; a fit already there is not redone), and per (model, ema_decay) the mean, the std over
seeds with its 95% interval and the row noise (`intervals.seed_spread`) on screen.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from xscene_lib.data import loading as datasets
from xscene_lib.data.store import write_atomically
from xscene_lib.evaluation.intervals import seed_spread
from xscene_lib.evaluation.metrics import ranking_metrics, target_ranks
from xscene_lib.data.dataset import Split
from xscene_lib.experiments.configs import tuned_settings
from xscene_lib.experiments.registry import model_specs
from xscene_lib.experiments.runner import _item_vectors
from xscene_lib.experiments.slices import domain_candidates
from xscene_lib.text.encoder import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
NONE = "none"
KEPT = ["user_id", "item_id", "scenario", "recall@10", "ndcg@10"]  # the columns kept of each validation row


def fit_one(data: datasets.Dataset, split: Split, model: str, settings: dict, ema: str, seed: int,
            vectors: pd.DataFrame | None) -> pd.DataFrame:
    """Validation rows' NDCG@10 of one fit (these settings, this ema_decay and seed), with its epochs and time."""
    spec, = model_specs([model], "top-k")
    estimator = spec.build(seed, False, {**settings, "ema_decay": None if ema == NONE else float(ema)})
    started = time.perf_counter()
    estimator.fit(split.train, vectors if spec.needs_text else None, items=data.items["item_id"], valid=split.valid)
    seconds = time.perf_counter() - started
    estimator.set_history(split.train)  # score validation from the training rows, as early stopping did
    ranks = target_ranks(estimator, split.train, split.valid, candidates=domain_candidates(data))
    rows = ranking_metrics(ranks, ks=(10,))[KEPT]
    history = estimator.history_
    return rows.assign(model=f"{model} ema={ema}", seed=seed, fit_seconds=seconds, epochs_run=len(history.epochs),
                       best_epoch=history.best_epoch, best_valid=history.best_score)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--scenarios", default="age")
    parser.add_argument("--models", nargs="+", default=["sasrec", "seq-joint"])
    parser.add_argument("--ema", nargs="+", default=[NONE, "0.99"], help='ema_decay values; "none": no average')
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--only-report", action="store_true", help="fit nothing; summarise the stored fits")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    data = datasets.load(args.dataset, args.scenarios)
    out = HERE / "results" / "weight_average" / f"{data.name}-{data.view}.csv"
    needs_text = any(spec.needs_text for spec in model_specs(args.models, "top-k"))
    vectors = _item_vectors(data, DEFAULT_MODEL, None) if needs_text and not args.only_report else None
    split, tuned = data.split(), tuned_settings(data.name, data.view)
    for model in [] if args.only_report else args.models:
        for ema in args.ema:
            for seed in args.seeds:
                done = pd.read_csv(out) if out.is_file() else pd.DataFrame(columns=["model", "seed"])
                if ((done["model"] == f"{model} ema={ema}") & (done["seed"] == seed)).any():
                    continue
                rows = fit_one(data, split, model, tuned.get(model, {}), ema, seed, vectors)
                print(f"{model} ema={ema} seed {seed}: valid NDCG@10 {rows['ndcg@10'].mean():.4f}, best epoch "
                      f"{rows['best_epoch'].iloc[0]} of {rows['epochs_run'].iloc[0]}, "
                      f"{rows['fit_seconds'].iloc[0]:.0f} s", flush=True)
                done = pd.read_csv(out) if out.is_file() else None  # another process may have added fits
                both = rows if done is None else pd.concat([done, rows], ignore_index=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(out, lambda temporary: both.to_csv(temporary, index=False))
    if not out.is_file():
        print(f"no fits stored in {out}", file=sys.stderr)
        return 1
    stored = pd.read_csv(out)
    spread = seed_spread(stored, "ndcg@10").set_index("model").sort_index()
    epochs = stored.groupby(["model", "seed"])[["best_epoch", "epochs_run", "fit_seconds"]].first()
    print(spread[["seeds", "mean", "std", "std_low", "std_high", "row_noise"]].round(4).to_string())
    print(epochs.round(0).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
