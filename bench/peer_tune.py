"""Benchmark: tune RecBole's models on our split with the trial budget our models get (`make peer-tune`).

    python bench/peer_tune.py --dataset ml-100k --scenarios age --models BPR LightGCN --trials 10

Each trial draws a RecBole model's settings from its search space (SEARCH_SPACES: the same widths, step sizes and
weight decays as our models' spaces in xscene_lib.experiments.tuning, plus the model's own knobs), trains it in
RecBole's environment on the exported train rows (bench/recbole_export.py) with RecBole's early stopping on
the validation rows, and is scored by its best validation NDCG@10 as RecBole measures it. The worker runs with
--valid-only, so no test metric is ever computed during a search. Optuna's TPE sampler is seeded by (seed, draw),
by the search loop of `xscene tune` (`tuning.seeded_search`); the study lives in SQLite, so an interrupted
search resumes to the trials an uninterrupted one runs (a trial cut short leaves its draw to the next). There
is no pruning: a trial runs in another process, so each runs to its own early stop.

The best settings of each model go to configs/peers/<dataset>-<view>.toml (the format of our configs, with the
trial budget, the trials' epoch cap and the validation score); `bench/peer_recbole.py` reads that file and runs
each model listed there with its tuned settings and that cap on the test rows, once.

Validation caveats: RecBole's validation of a sequential model ranks the user's earlier items too, and on item-domain
scenarios it ranks every item, not only the domain's; the final test ranking (peer_recbole.py) does neither.
"""

from __future__ import annotations

import argparse
import datetime
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from peer_recbole import DEFAULT_EPOCHS, PEER_CONFIGS, PEER_PYTHON, ROOT, SOURCES, recbole_config, run_worker
from recbole_export import SEQUENTIAL, export_for
from xscene_lib.data import loading as datasets
from xscene_lib.experiments.configs import config_path, read_config_file, write_config
from xscene_lib.experiments.tuning import best_trial, seeded_search, spent_trials

STORAGE = ROOT / "results" / "tuning" / "peers"
DIMS = (32, 64, 128)  # the widths our models' searches try
VALID_METRIC = "ndcg@10"  # RecBole's key for its NDCG@10
HEADER = ("# RecBole's settings chosen on validation NDCG@10 by bench/peer_tune.py (`make peer-tune`), one table per\n"
          "# model; bench/peer_recbole.py (`make peers`) runs each model listed here with them.\n")


def _bpr_space(trial: optuna.Trial) -> dict[str, Any]:
    """RecBole's BPR: width, step size and weight decay (our BPR-MF's space; RecBole has no separate L2 term)."""
    return {"embedding_size": trial.suggest_categorical("embedding_size", DIMS),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True)}


def _lightgcn_space(trial: optuna.Trial) -> dict[str, Any]:
    """RecBole's LightGCN: width, step size, propagation layers and its L2 weight on the batch's embeddings."""
    return {"embedding_size": trial.suggest_categorical("embedding_size", DIMS),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "n_layers": trial.suggest_int("n_layers", 1, 4),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True)}


def _itemknn_space(trial: optuna.Trial) -> dict[str, Any]:
    """RecBole's ItemKNN: neighbours kept per item and the shrinkage of the cosine."""
    return {"k": trial.suggest_int("k", 10, 500, log=True),
            "shrink": trial.suggest_float("shrink", 0.0, 2.0)}


def _sasrec_space(trial: optuna.Trial) -> dict[str, Any]:
    """RecBole's SASRec: our sequential model's space (width, step size, weight decay, one dropout for both kinds);
    the feed-forward width stays 4 x the hidden width, as in RecBole's defaults (64 -> 256)."""
    width = trial.suggest_categorical("hidden_size", DIMS)
    learning_rate = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)  # drawn in our space's order, so
    weight_decay = trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True)  # a seeded trial draws our values
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    return {"hidden_size": width, "inner_size": 4 * width, "learning_rate": learning_rate,
            "weight_decay": weight_decay, "hidden_dropout_prob": dropout, "attn_dropout_prob": dropout}


# RecBole model -> trial -> its settings (RecBole config keys)
SEARCH_SPACES: dict[str, Callable[[optuna.Trial], dict[str, Any]]] = {
    "BPR": _bpr_space, "LightGCN": _lightgcn_space, "ItemKNN": _itemknn_space, "SASRec": _sasrec_space,
}


def tune_peer(model: str, n_trials: int, *, run_trial: Callable[[dict[str, Any]], dict], study_name: str,
              storage_dir: Path, seed: int = 0, show_progress: bool = True) -> optuna.Study:
    """Run the trials of `model`'s search still missing from its study; run_trial(settings) returns the
    worker's result.json (its "valid" metrics, epochs run and best epoch)."""
    space = SEARCH_SPACES[model]

    def objective(trial: optuna.Trial) -> float:
        settings = space(trial)
        trial.set_user_attr("settings", settings)
        try:
            result = run_trial(settings)
        except SystemExit as error:  # the worker failed: diverged settings are hopeless, anything else stops the search
            if "nan" not in str(error).lower():
                raise
            raise optuna.TrialPruned(f"the training loss diverged: {settings}") from error
        trial.set_user_attr("epochs_run", result["epochs_run"])
        trial.set_user_attr("best_epoch", result["best_epoch"])
        return float(result["valid"][VALID_METRIC])

    storage_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(storage_dir / f'{study_name}.db').resolve()}"
    study, _ = seeded_search(objective, n_trials, study_name=study_name, storage=storage, seed=seed,
                             label=f"tuning RecBole {model}", show_progress=show_progress)
    return study


def record_best(path: Path, model: str, study: optuna.Study, seed: int, max_epochs: int) -> dict[str, Any]:
    """Write the best trial's settings and the trials' epoch cap into the model's table of the peers' config file;
    that table (`bench/peer_recbole.py` trains with the same cap)."""
    best = best_trial(study, study.study_name)
    config = read_config_file(path) if path.is_file() else {}
    config[model] = {"n_trials": spent_trials(study), "best_valid_ndcg_at_10": float(best.value), "seed": seed,
                     "max_epochs": max_epochs,
                     "best_epoch": best.user_attrs["best_epoch"], "epochs_run": best.user_attrs["epochs_run"],
                     "date": datetime.date.today().isoformat(), "study": study.study_name,
                     "settings": dict(best.user_attrs["settings"])}
    write_config(path, config, header=HEADER)
    return config[model]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=datasets.available())
    parser.add_argument("--scenarios", default=None, help="the scenario view (default: the dataset's usual one)")
    parser.add_argument("--models", nargs="+", default=["BPR", "ItemKNN", "LightGCN"], choices=sorted(SEARCH_SPACES))
    parser.add_argument("--trials", type=int, required=True, help="trials per model in all, e.g. 10")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help="most training epochs a trial (RecBole's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler (RecBole's own seed stays 2020)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each trial")
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON, help="the Python of RecBole's venv")
    parser.add_argument("--gpu", action="store_true", help="train on GPU 0 (RecBole's use_gpu; PyTorch with CUDA)")
    parser.add_argument("--storage", type=Path, default=STORAGE, help="folder of the SQLite studies")
    parser.add_argument("--configs", type=Path, default=PEER_CONFIGS, help="folder of the peers' tuned configs")
    options = parser.parse_args()
    if not options.peer_python.is_file():
        raise SystemExit(f"RecBole's environment is missing ({options.peer_python}): run make peers")
    if min(options.trials, options.epochs, options.threads) <= 0 or options.seed < 0:
        raise SystemExit("--trials, --epochs and --threads must be positive integers and --seed at least 0")

    ds = datasets.load(options.dataset, options.scenarios, sources=SOURCES, verbose=False)
    split = ds.split()
    name = f"xscene-{ds.name}-{ds.view}"
    path = config_path(ds.name, ds.view, config_dir=options.configs)
    with tempfile.TemporaryDirectory(prefix="xscene-peer-tune-") as scratch:
        work = Path(scratch)
        export_for(ds, split, work / "data", name, options.models)
        for model in options.models:
            files = f"{name}-seq" if model in SEQUENTIAL else name

            def run_trial(settings: dict[str, Any], model: str = model, files: str = files) -> dict:
                config = {**recbole_config(model, work / "data", work / "saved", options.epochs, 2020, options.gpu),
                          **settings}
                result, _, _ = run_worker(options.peer_python, model, files, config, work, options.threads,
                                          valid_only=True)
                return result

            study_name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{ds.name}-{ds.view}-recbole-{model}")
            study = tune_peer(model, options.trials, run_trial=run_trial, study_name=study_name,
                              storage_dir=options.storage, seed=options.seed)
            table = record_best(path, model, study, options.seed, options.epochs)
            print(f"{model}: best validation NDCG@10 {table['best_valid_ndcg_at_10']:.4f} after "
                  f"{table['n_trials']} trials, best epoch {table['best_epoch']} of {table['epochs_run']}: "
                  f"{table['settings']}", flush=True)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
