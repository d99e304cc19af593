"""Benchmark: RecBole's models on our exact split, scored per scenario with our metrics (`make peers`).

The temporal leave-one-out split of `Dataset.split()` is written as RecBole atomic files (NAME.train.inter,
NAME.valid.inter, NAME.test.inter, read through `benchmark_filename`) plus NAME.item listing the whole item
catalogue, so RecBole ranks exactly our items: the items it knows are those of NAME.item and the three .inter
files, which here is the dataset's item table. Each model runs in RecBole's own environment (.venv-peers) through
bench/recbole_worker.py, which trains it, evaluates it with RecBole's full ranking (each user's train and valid
items left out) and writes the rank of every test interaction. The ranks are joined to the scenario of each test
row and averaged by `metrics.summarise`, and RecBole's own overall test metrics are checked against ours.
When the scenarios are item domains (food-kitchen), a test row is ranked against the items of its own domain,
as our models rank it (`slices.domain_candidates`); RecBole's own metrics rank every item, so the cross-check
is then reported but not applicable. RecBole's sequential models (SASRec, ...) get the same split as sequences
(`recbole_export.export_sequences`); their test rows are ranked without the user's train and valid items, as ours are.

    python bench/peer_recbole.py [--dataset ml-100k] [--scenarios age] [--models BPR ItemKNN LightGCN]
                                 [--epochs N] [--seed 2020] [--threads 1] [--replace]
                                 [--peer-python .venv-peers/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xscene_lib.data import loading as datasets
from xscene_lib.evaluation import metrics
from xscene_lib.data import Split
from xscene_lib.experiments.configs import config_path, read_config_file
from xscene_lib.experiments.slices import domain_candidates
from recbole_export import MAX_ITEM_LIST_LENGTH, SEQUENTIAL, export_for

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "bench" / "recbole_worker.py"
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
RESULTS = ROOT / "results" / "peers"
PEER_CONFIGS = ROOT / "configs" / "peers"  # settings chosen by bench/peer_tune.py, one file per dataset and view
SOURCES = ("local", "mirror", "fallback")
DEFAULT_EPOCHS = 300  # RecBole's cap on training epochs
KS = (10, 20)
TABLE_COLUMNS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20")
CHECKED = {"ndcg@10": "ndcg@10", "recall@10": "recall@10", "hit@10": "recall@10", "mrr@10": "mrr@10",
           "ndcg@20": "ndcg@20", "recall@20": "recall@20", "hit@20": "recall@20", "mrr@20": "mrr@20"}
TOLERANCE = 1e-3
STOPPING_STEP = {"LightGCN": 50}  # RecBole's default of 10 stops LightGCN far too early; others keep 10
WORKER_TIMEOUT_S = 3 * 3600
SEQUENCE_SETTINGS = {"alias_of_item_id": ["item_id_list"], "MAX_ITEM_LIST_LENGTH": MAX_ITEM_LIST_LENGTH,
                     "train_neg_sample_args": None}  # full-softmax cross-entropy, RecBole's default loss for SASRec


def training_epochs(asked: int | None, tuned: dict | None) -> int:
    """The epoch cap of a run: the one asked for, else the cap its search's trials had, else RecBole's default."""
    if asked is not None:
        return asked
    return int((tuned or {}).get("max_epochs", DEFAULT_EPOCHS))


def recbole_config(model: str, data_path: Path, checkpoints: Path, epochs: int, seed: int, gpu: bool = False) -> dict:
    """The RecBole settings of one run: our split as given, full ranking, metrics at 10 and 20, CPU (or GPU 0)."""
    columns = ["user_id", "item_id_list", "item_id"] if model in SEQUENTIAL else ["user_id", "item_id", "timestamp"]
    return {
        "data_path": str(data_path), "checkpoint_dir": str(checkpoints),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": columns, "item": ["item_id"]},
        **(SEQUENCE_SETTINGS if model in SEQUENTIAL else {}),
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": list(KS),
        "valid_metric": "NDCG@10", "metric_decimal_place": 8,
        "epochs": epochs, "stopping_step": STOPPING_STEP.get(model, 10),
        "seed": seed, "reproducibility": True, "use_gpu": gpu, "show_progress": False, "worker": 0,
    }


def tuned_settings(dataset: str, view: str, config_dir: Path = PEER_CONFIGS) -> dict[str, dict]:
    """The tuned tables of one dataset and view: RecBole model -> {"settings": ..., n_trials, ...}; {} if none."""
    path = config_path(dataset, view, config_dir=config_dir)
    return read_config_file(path) if path.is_file() else {}


def run_worker(peer_python: Path, model: str, name: str, config: dict, work: Path, threads: int,
               valid_only: bool = False) -> tuple[dict, pd.DataFrame | None, float]:
    """Train and test one model in RecBole's environment; its result.json, its ranks and the wall time
    (valid_only: train only, a tuning trial; no test metric and no ranks)."""
    config_file = work / f"{model}.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    out = work / f"out-{model}"
    command = [str(peer_python.absolute()), str(WORKER), "--model", model, "--dataset", name,
               "--config", str(config_file), "--out", str(out)] + (["--valid-only"] if valid_only else [])
    domains = Path(config["data_path"]) / "domains.csv"  # recbole_export.export() writes it for item domains
    if domains.is_file():
        command += ["--domains", str(domains), "--test-scenarios", str(domains.with_name("test_scenarios.csv"))]
    if model in SEQUENTIAL:  # RecBole's full ranking of a sequence leaves nothing out; ours leaves out what was seen
        command += ["--history", str(Path(config["data_path"]) / "history.csv")]  # from export_sequences()
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",  # RecBole loads its own checkpoint
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-25:])
        raise SystemExit(f"RecBole's {model} failed (exit {done.returncode}):\n{tail}")
    result = json.loads((out / "result.json").read_text())
    return result, None if valid_only else pd.read_csv(out / "ranks.csv"), wall_s


def with_scenarios(test: pd.DataFrame, ranks: pd.DataFrame, model: str) -> pd.DataFrame:
    """Our test rows with the worker's ranks joined on (user_id, item_id); rank counts ties as half."""
    joined = test[["user_id", "item_id", "scenario"]].merge(ranks, on=["user_id", "item_id"], how="left",
                                                            validate="one_to_one")
    if joined["higher"].isna().any() or len(ranks) != len(test):
        raise SystemExit(f"RecBole's {model} ranked {len(ranks):,} test interactions, ours are {len(test):,}; "
                         f"{int(joined['higher'].isna().sum()):,} of ours got no rank")
    joined["rank"] = 1.0 + joined["higher"] + joined["tied"] / 2.0
    joined["known"] = True
    joined.insert(0, "model", model)
    return joined


def cross_check(model: str, recbole_test: dict[str, float], ranked: pd.DataFrame) -> pd.DataFrame:
    """RecBole's overall test metrics beside ours, from our tie rule and from RecBole's own top-k order."""
    ours = metrics.ranking_metrics(ranked, KS)
    in_order = ranked.assign(rank=np.where(ranked["topk_position"] > 0, ranked["topk_position"], max(KS) + 1.0))
    theirs_order = metrics.ranking_metrics(in_order, KS)
    rows = [{"model": model, "metric": metric, "recbole": recbole_test[metric],
             "ours (ties half)": ours[column].mean(), "ours (RecBole's order)": theirs_order[column].mean()}
            for metric, column in CHECKED.items()]
    table = pd.DataFrame(rows)
    table["diff ties half"] = table["ours (ties half)"] - table["recbole"]
    table["diff RecBole's order"] = table["ours (RecBole's order)"] - table["recbole"]
    return table


def per_scenario(ranked: pd.DataFrame, scenarios: list[str]) -> pd.DataFrame:
    """Our summary of one model's ranks: a row per scenario and one for all test rows."""
    summary = metrics.summarise(metrics.ranking_metrics(ranked, KS), by="scenario").reset_index()
    summary["scenario"] = summary["scenario"].astype("str")
    order = {name: place for place, name in enumerate([*scenarios, metrics.OVERALL])}
    summary = summary.sort_values("scenario", key=lambda s: s.map(order)).reset_index(drop=True)
    summary.insert(0, "model", ranked["model"].iloc[0])
    return summary[["model", "scenario", *TABLE_COLUMNS, "rows"]]


def write_outputs(stem: Path, table: pd.DataFrame, ranks: pd.DataFrame, manifest: dict) -> list[Path]:
    """The table as CSV (and Parquet where pyarrow is there), the per-row ranks, and the manifest."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = [stem.with_suffix(".csv"), stem.parent / f"{stem.name}.ranks.csv", stem.with_suffix(".json")]
    table.to_csv(written[0], index=False)
    ranks.to_csv(written[1], index=False)
    written[2].write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        table.to_parquet(stem.with_suffix(".parquet"), index=False)
        written.append(stem.with_suffix(".parquet"))
    except ImportError:
        pass
    return written


def earlier_models(stem: Path, split: Split, running: set[str]) -> tuple[dict[str, dict], pd.DataFrame]:
    """The manifest entries and cross-check rows of the models an earlier run at `stem` recorded on this same
    split, bar those run now."""
    manifest_file = stem.with_suffix(".json")
    if not manifest_file.is_file():
        return {}, pd.DataFrame()
    manifest = json.loads(manifest_file.read_text())
    sizes = {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)}
    if manifest.get("split") != sizes:
        raise SystemExit(f"{manifest_file} was recorded on another split ({manifest.get('split')}, now {sizes}); "
                         f"move it away or pass --replace")
    kept = {model: {"threads": manifest.get("threads"), **entry}  # records before per-model threads: the run's
            for model, entry in manifest["models"].items() if model not in running}
    checks = pd.DataFrame(manifest["cross_check"]["rows"])
    return kept, checks[checks["model"].isin(list(kept))]


def kept_rows(path: Path, kept: dict[str, dict]) -> pd.DataFrame:
    """The rows of a recorded table (scores or ranks) that belong to the kept models."""
    frame = pd.read_csv(path, dtype={"model": str, "scenario": str})
    return frame[frame["model"].isin(list(kept))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=datasets.available())
    parser.add_argument("--scenarios", default=None, help="the scenario view (default: the dataset's usual one)")
    parser.add_argument("--models", nargs="+", default=["BPR", "ItemKNN", "LightGCN"],
                        help="RecBole models that have full_sort_predict: general ones, or the sequential ones "
                             "named in SEQUENTIAL (e.g. SASRec)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="most training epochs (default: the cap of the model's search in configs/peers/, "
                             f"else RecBole's default, {DEFAULT_EPOCHS})")
    parser.add_argument("--seed", type=int, default=2020, help="RecBole's seed (its default: 2020)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per model; these models are small, and two threads ran far slower "
                             "than one on a busy 2-core machine")
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON, help="the Python of RecBole's venv")
    parser.add_argument("--gpu", action="store_true", help="train on GPU 0 (RecBole's use_gpu; PyTorch with CUDA)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the table and its manifest")
    parser.add_argument("--defaults", action="store_true",
                        help="RecBole's default settings even where configs/peers/ has tuned ones (bench/peer_tune.py)")
    parser.add_argument("--replace", dest="keep_others", action="store_false",
                        help="write only the models run now (default: keep the other models already recorded in "
                             "--out for this dataset and view, on the same split)")
    options = parser.parse_args()
    if not options.peer_python.is_file():
        raise SystemExit(f"RecBole's environment is missing ({options.peer_python}): run make peers")
    if (options.epochs is not None and options.epochs <= 0) or options.threads <= 0:
        raise SystemExit(f"--epochs and --threads must be positive integers, got {options.epochs} and "
                         f"{options.threads}")

    ds = datasets.load(options.dataset, options.scenarios, sources=SOURCES, verbose=False)
    split = ds.split()
    name = f"xscene-{ds.name}-{ds.view}"  # not RecBole's own "ml-100k", whose bundled settings would apply
    within_domain = domain_candidates(ds) is not None  # export() then writes the domains; the worker ranks within
    only_held_out = ~ds.items["item_id"].isin(split.train["item_id"])
    print(f"{ds!r}\n{split!r}; exported to RecBole as {name}.{{train,valid,test}}.inter + {name}.item "
          f"({len(ds.items):,} items, {int(only_held_out.sum()):,} of them never in train)")

    tuned = {} if options.defaults else tuned_settings(ds.name, ds.view)
    results: dict[str, dict] = {}
    summaries, ranked_rows, checks = [], [], []
    with tempfile.TemporaryDirectory(prefix="xscene-peers-") as scratch:
        work = Path(scratch)
        export_for(ds, split, work / "data", name, options.models)
        for model in options.models:
            epochs = training_epochs(options.epochs, tuned.get(model))
            config = {**recbole_config(model, work / "data", work / "saved", epochs, options.seed, options.gpu),
                      **tuned.get(model, {}).get("settings", {})}
            print(f"{model}: training and testing in RecBole's environment"
                  + (f" with its tuned settings ({tuned[model]['n_trials']} trials)" if model in tuned else "")
                  + " ...", flush=True)
            files = f"{name}-seq" if model in SEQUENTIAL else name
            result, ranks, wall_s = run_worker(options.peer_python, model, files, config, work, options.threads)
            if result["items"] != len(ds.items):
                raise SystemExit(f"RecBole's item set has {result['items']:,} items, our catalogue "
                                 f"{len(ds.items):,}; the candidate sets differ")
            ranked = with_scenarios(split.test, ranks, model)
            summaries.append(per_scenario(ranked, ds.scenarios))
            ranked_rows.append(ranked)
            checks.append(cross_check(model, result["test"], ranked))
            config = {key: value for key, value in config.items() if key not in ("data_path", "checkpoint_dir")}
            capped = result["epochs_run"] >= result["max_epochs"] > 1
            results[model] = {**result, "wall_s": wall_s, "config": config, "threads": options.threads,
                              "tuned": {key: value for key, value in tuned[model].items() if key != "settings"}
                              if model in tuned else None,
                              "stopped_by": "epoch cap" if capped else "one pass" if result["max_epochs"] == 1
                              else "early stopping"}
            print(f"{model}: {result['epochs_run']} epoch(s), best {result['best_epoch']}, "
                  f"fit {result['fit_s']:.1f} s, wall {wall_s:.1f} s"
                  + (" - stopped by the --epochs cap, not by early stopping" if capped else ""))

    table = pd.concat(summaries, ignore_index=True)
    check = pd.concat(checks, ignore_index=True)
    ranks = pd.concat(ranked_rows, ignore_index=True)
    stem = options.out / f"{ds.name}-{ds.view}"
    kept, kept_checks = earlier_models(stem, split, set(results)) if options.keep_others else ({}, None)
    if kept:  # the other models of an earlier run on the same split stay in the record
        print("kept from the earlier run: " + ", ".join(kept))
        table = pd.concat([kept_rows(stem.with_suffix(".csv"), kept), table], ignore_index=True)
        ranks = pd.concat([kept_rows(stem.parent / f"{stem.name}.ranks.csv", kept), ranks], ignore_index=True)
        check = pd.concat([kept_checks, check], ignore_index=True)
        results = {**kept, **results}
    comparable = check[~check["model"].isin(SEQUENTIAL)]  # RecBole's own sequential ranking leaves nothing out
    worst_ties_half = float(comparable["diff ties half"].abs().max()) if len(comparable) else None
    worst_order = float(comparable["diff RecBole's order"].abs().max()) if len(comparable) else None
    first = results[options.models[0]]
    manifest = {
        "dataset": ds.name, "view": ds.view, "scenarios": ds.scenarios,
        "split": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
        "items": len(ds.items), "items_never_in_train": int(only_held_out.sum()),
        "ranking": "within the test row's domain" if within_domain else "every item",
        "recbole": first["recbole"], "torch": first["torch"], "seed": options.seed,
        "threads": options.threads,
        "models": {model: {key: result.get(key) for key in ("config", "tuned", "epochs_run", "best_epoch", "stopped_by",
                                                             "threads", "fit_s", "test_s", "wall_s", "valid", "test")}
                   for model, result in results.items()},
        "cross_check": {"tolerance": TOLERANCE, "max_abs_diff_ties_half": worst_ties_half,
                        "max_abs_diff_recbole_order": worst_order,
                        "rows": check.to_dict(orient="records")},
    }
    written = write_outputs(stem, table, ranks, manifest)

    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(f"\nRecBole {first['recbole']} on our split, our metrics (full ranking, ties counted as half):")
        print(table.to_string(index=False))
        print("\nCross-check: RecBole's own test metrics against ours from the same ranks "
              "(hit@k and recall@k compare with our recall@k)")
        print(check.to_string(index=False, float_format="{:.6f}".format))
    if SEQUENTIAL.intersection(results):
        print("\nRecBole's own metrics of sequential models rank the user's train and valid items too, ours leave them "
              "out: the cross-check leaves those models out")
    if within_domain:
        print("\nRecBole's own metrics rank every item, ours only the items of the test row's domain: the cross-check "
              "does not apply here")
    elif worst_ties_half is not None:
        verdict = "agree" if worst_ties_half <= TOLERANCE else "DIFFER"
        print(f"\nlargest difference {worst_ties_half:.2e} with ties as half, {worst_order:.2e} with RecBole's "
              f"top-k order: the definitions {verdict} within {TOLERANCE:g}")
    print("wrote " + ", ".join(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
                               for path in written))
    overall = table[table["scenario"] == metrics.OVERALL].set_index("model")["ndcg@10"]
    print("figures: NDCG@10 (all) " + ", ".join(f"{model} {value:.4f}" for model, value in overall.items()))


if __name__ == "__main__":
    main()
