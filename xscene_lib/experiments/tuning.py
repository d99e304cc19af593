"""Fair tuning: every top-k model with settings gets the same kind of search, judged on validation NDCG@10 only.

    result = tune("ml-100k", "age", "joint", n_trials=30)  # writes the [joint] table of configs/ml-100k-age.toml
    result.settings, result.best_value, result.config_path

Each trial draws settings from the model's search space (SEARCH_SPACES, the one place they are declared), fits the
model on split.train with early stopping on split.valid, and is scored by the validation NDCG@10 of the weights kept
(the early-stopping measure; a model that is not trained, such as ItemKNN, by the validation rows scored after
fitting); the test rows are dropped before anything else happens, so they are never read.
Optuna's TPE sampler proposes the settings, seeded by (seed, draw), where a trial's draw is the lowest number no
other finished, pruned or running trial holds: the same seed gives the same trials, and a trial cut short (an error,
or its process killed, which a missing heartbeat reveals after GRACE_S seconds) leaves its draw to the next one. A
median pruner stops a trial whose validation NDCG@10 after some epoch is below the median of the earlier trials
after that epoch; a trial whose loss diverges is pruned too. The study lives in SQLite (`<storage_dir>/<study>.db`),
so an interrupted search resumes where it stopped, to the trials an uninterrupted one runs: its finished and pruned
trials count toward n_trials. The best trial's settings go to the dataset's config (experiments.configs), which
`run_experiment` reads; nothing searches again.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from tqdm import tqdm  # plain text bars: readable in terminals, notebooks and the built site

from xscene_lib.data import loading as datasets
from xscene_lib.data.dataset import Dataset, Split
from xscene_lib.data.validation import DataError, check_flag, check_int
from xscene_lib.evaluation.metrics import ranking_metrics, target_ranks
from xscene_lib.experiments.configs import config_path, read_config_file, write_config
from xscene_lib.experiments.registry import ModelSpec, model_names, model_spec
from xscene_lib.experiments.runner import SMOKE_USERS, _dataset, _encoder_tag, _item_vectors
from xscene_lib.experiments.slices import domain_candidates
from xscene_lib.text.encoder import DEFAULT_MODEL
from xscene_lib.training.loop import TrainHistory, epoch_listener

METRIC = "ndcg@10"  # the objective, on the validation rows
DEFAULT_STORAGE = Path("results") / "tuning"
DIMS = (32, 64, 128)  # embedding widths tried
HEARTBEAT_S, GRACE_S = 30, 120  # a running trial beats this often; one silent for GRACE_S is failed
EPOCH_CAP = 200  # num_epochs of BPR-MF, the article's and the joint models in a search: early stopping ends them


def _bpr_space(trial: optuna.Trial) -> dict[str, Any]:
    """BPR-MF (BPRMF, SingleScenario): width, step size and the L2 penalty on the embeddings in the loss."""
    return {"dim": trial.suggest_categorical("dim", DIMS),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True),
            "reg": trial.suggest_float("reg", 1e-7, 1e-2, log=True), "num_epochs": EPOCH_CAP}


def _article_space(trial: optuna.Trial) -> dict[str, Any]:
    """The article's model keeps its architecture as written (width of the text vectors); its optimiser is tuned."""
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True), "num_epochs": EPOCH_CAP}


def _joint_space(trial: optuna.Trial) -> dict[str, Any]:
    """The joint model and its ablations: width, step size, weight decay and the softmax temperature."""
    return {"dim": trial.suggest_categorical("dim", DIMS),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
            "temperature": trial.suggest_float("temperature", 0.02, 0.5, log=True), "num_epochs": EPOCH_CAP}


def _sequential_space(trial: optuna.Trial) -> dict[str, Any]:
    """The sequential model (models/sequential.py): width, step size, weight decay and dropout."""
    return {"dim": trial.suggest_categorical("dim", DIMS),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5)}


def _sequential_text_space(trial: optuna.Trial) -> dict[str, Any]:
    """The sequential model with text and ids: also how often an item's id is dropped in training, how many
    whitened text components the adaptor reads (dim or all) and the weight of the text-only loss term."""
    settings = {**_sequential_space(trial), "id_dropout": trial.suggest_float("id_dropout", 0.0, 0.5)}
    if trial.suggest_categorical("text_components", ["dim", "all"]) == "all":  # "dim" is the default: left out
        settings["text_components"] = "all"
    return {**settings, "text_loss_weight": trial.suggest_float("text_loss_weight", 0.0, 1.0)}


def _itemknn_space(trial: optuna.Trial) -> dict[str, Any]:
    """Item k-nearest neighbours (not trained, but set): neighbours kept per item and the cosine's shrinkage."""
    return {"num_neighbours": trial.suggest_int("num_neighbours", 10, 500, log=True),
            "shrink": trial.suggest_float("shrink", 0.0, 2.0)}


# model name -> trial -> settings (constructor arguments); a top-k model without an entry cannot be tuned
SEARCH_SPACES: dict[str, Callable[[optuna.Trial], dict[str, Any]]] = {
    "itemknn": _itemknn_space, "bpr": _bpr_space, "single-scenario": _bpr_space, "article": _article_space,
    "joint": _joint_space, "joint-no-text": _joint_space, "joint-no-id": _joint_space,
    "joint-no-adaptation": _joint_space,
    "sasrec": _sequential_space, "seq-joint": _sequential_text_space, "seq-joint-no-text": _sequential_space,
}


@dataclass(frozen=True)
class TuningResult:
    """A finished search: the best settings, their validation NDCG@10, the trials and where things were written."""

    model: str
    settings: dict[str, Any]  # the best trial's constructor arguments
    best_value: float  # its validation NDCG@10
    trials: pd.DataFrame  # one row per trial of the study: number, draw, state, value, then one per setting
    n_trials: int  # trials spent in all, finished or pruned (a failed one is drawn again, so it does not count)
    new_trials: int  # trials run by this call (the rest were done by earlier, interrupted calls)
    study_name: str
    storage: str  # the study's SQLite URL
    config_path: Path


def tunable_models() -> list[str]:
    """The registered models that can be tuned: top-k models with a search space."""
    return [name for name in model_names("top-k") if name in SEARCH_SPACES]


def tune(dataset: str | Dataset, scenarios: str | None, model: str, n_trials: int, *, seed: int = 0,
         storage_dir: str | Path = DEFAULT_STORAGE, config_dir: str | Path | None = None, smoke: bool = False,
         encoder: str = DEFAULT_MODEL, data_dir: str | Path | None = None, sources: Sequence[str] = datasets.SOURCES,
         show_progress: bool = True) -> TuningResult:
    """Search `model`'s settings on one dataset and view for n_trials trials in all; write the best to its config."""
    spec = _tunable_spec(model)
    check_int("tune", "n_trials", n_trials, minimum=1, hint="the trials of the search in all, e.g. 30")
    check_int("tune", "seed", seed, minimum=0)
    check_flag("tune", "smoke", smoke)
    check_flag("tune", "show_progress", show_progress)
    data = _dataset(dataset, scenarios, data_dir, sources, show_progress)
    split = _tuning_split(data, smoke)
    vectors = _item_vectors(data, encoder, data_dir) if spec.needs_text else None
    candidates = domain_candidates(data)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{data.name}-{data.view}-{spec.name}"
                  f"{_encoder_tag(encoder) if spec.needs_text else ''}{'-smoke' if smoke else ''}")
    Path(storage_dir).mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(Path(storage_dir) / f'{name}.db').resolve()}"

    def objective(trial: optuna.Trial) -> float:
        settings = SEARCH_SPACES[spec.name](trial)
        trial.set_user_attr("settings", settings)
        estimator = spec.build(seed, smoke, settings)
        with _reporting_epochs(trial):
            try:
                estimator.fit(split.train, vectors, items=data.items["item_id"], valid=split.valid)
            except FloatingPointError as error:  # the loss diverged: these settings are hopeless
                raise optuna.TrialPruned(str(error)) from error
        return _valid_ndcg(estimator, split, candidates)

    study, new_trials = seeded_search(objective, n_trials, study_name=name, storage=storage, seed=seed,
                                      pruner=optuna.pruners.MedianPruner(), label=f"tuning {spec.name}",
                                      show_progress=show_progress)
    best = best_trial(study, storage)
    path = config_path(data.name, data.view, smoke=smoke, config_dir=config_dir)
    config = read_config_file(path) if path.is_file() else {}
    config[spec.name] = {"n_trials": spent_trials(study), "best_valid_ndcg_at_10": float(best.value), "seed": seed,
                         "date": datetime.date.today().isoformat(), "study": name,
                         **({"encoder": str(encoder)} if spec.needs_text else {}),
                         "settings": dict(best.user_attrs["settings"])}
    write_config(path, config)
    return TuningResult(spec.name, dict(best.user_attrs["settings"]), float(best.value), _trials_table(study),
                        spent_trials(study), new_trials, name, storage, path)


def seeded_search(objective: Callable[[optuna.Trial], float], n_trials: int, *, study_name: str, storage: str,
                  seed: int, pruner: optuna.pruners.BasePruner | None = None, label: str = "tuning",
                  show_progress: bool = True) -> tuple[optuna.Study, int]:
    """Run the trials still missing from a seeded, resumable search that maximises `objective`; the study and
    the number of trials run by this call (bench/peer_tune.py drives RecBole's searches with it too)."""
    with _quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's
        beating = optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        study = optuna.create_study(storage=beating, study_name=study_name, direction="maximize",
                                    load_if_exists=True, pruner=pruner)
        _check_same_seed(study, seed, storage)
        done = spent_trials(study)
        bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=label, unit="trial", disable=not show_progress)
        for _ in range(n_trials - done):
            optuna.storages.fail_stale_trials(study)  # trials whose process was killed free their draws
            draw = next_draw(study)
            study.sampler = optuna.samplers.TPESampler(seed=_trial_seed(seed, draw))
            study.optimize(_holding(objective, draw), n_trials=1)
            bar.update(1)
            bar.set_postfix(best=round(_best_value(study), 4))
        bar.close()
    return study, max(n_trials - done, 0)


def next_draw(study: optuna.Study) -> int:
    """The lowest draw that no finished, pruned or running trial of the study holds."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    held = {_draw(trial) for trial in study.get_trials(deepcopy=False, states=states)}
    return next(draw for draw in itertools.count() if draw not in held)


def _draw(trial: optuna.trial.FrozenTrial) -> int:
    """The draw that seeded a trial; a trial from before draws were recorded was seeded by its number."""
    return trial.user_attrs.get("draw", trial.number)


def _holding(objective: Callable[[optuna.Trial], float], draw: int) -> Callable[[optuna.Trial], float]:
    """The objective, run by a trial that first records the draw its sampler was seeded with."""
    def held(trial: optuna.Trial) -> float:
        trial.set_user_attr("draw", draw)
        return objective(trial)
    return held


def _tunable_spec(model: str) -> ModelSpec:
    """The registry entry of a model that can be tuned; a DataError naming the tunable ones otherwise."""
    spec = model_spec(model, "top-k")
    if spec.name not in SEARCH_SPACES and not spec.trainable:
        raise DataError(f"model {model!r} is not trained and has no settings to tune; tune one of "
                        f"{tunable_models()}")
    if spec.name not in SEARCH_SPACES:
        raise DataError(f"model {model!r} has no search space; add one to xscene_lib.experiments.tuning."
                        f"SEARCH_SPACES or tune one of {tunable_models()}")
    return spec


def _tuning_split(data: Dataset, smoke: bool) -> Split:
    """Train and validation rows (in smoke mode of the SMOKE_USERS smallest validation user ids); no test rows."""
    split = data.split()
    train, valid = split.train, split.valid
    if smoke:
        users = np.sort(valid["user_id"].unique())[:SMOKE_USERS]
        train = train[train["user_id"].isin(users)].reset_index(drop=True)
        valid = valid[valid["user_id"].isin(users)].reset_index(drop=True)
    if valid.empty:
        raise DataError(f"dataset {data.name!r} has no validation rows to tune on; users need at least three "
                        f"interactions (train, validation, test)")
    return Split(train, valid, valid.iloc[:0])


def _valid_ndcg(model: Any, split: Split, candidates: dict[str, list[int]] | None) -> float:
    """Validation NDCG@10 of the kept weights, as early stopping measured it (models/fitting.validation_ndcg).

    A model that trains once per scenario gets the mean of its scenarios' scores weighted by their validation
    rows. A model without a training history is scored after fitting, training items left out. (A fitted model
    may fold the validation rows into its users' histories, so scoring them after fitting could flatter it.)
    """
    history = getattr(model, "history_", None)
    if isinstance(history, TrainHistory):
        return float(history.best_score)
    scenarios = getattr(model, "scenarios_", None)
    if isinstance(history, list) and all(isinstance(h, TrainHistory) for h in history) \
            and scenarios is not None and len(history) == len(scenarios):
        rows = split.valid["scenario"].astype("str").value_counts()
        weights = [rows.get(name, 0) for name in scenarios]
        return float(np.average([h.best_score for h in history], weights=weights))
    ranks = target_ranks(model, split.train, split.valid, candidates=candidates)
    return float(ranking_metrics(ranks, ks=(10,))[METRIC].mean())


def _reporting_epochs(trial: optuna.Trial) -> contextlib.AbstractContextManager[None]:
    """While a model fits, report each validated epoch's score to the trial and prune it when told.

    A model that trains once per scenario reports its epochs one scenario after the other, as further steps.
    """
    steps = itertools.count()

    def report(record: dict[str, float]) -> None:
        if "valid" not in record:
            return
        value, step = record["valid"], next(steps)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation {METRIC} {value:.4f} after epoch {step + 1} is below "
                                     f"the median of earlier trials")

    return epoch_listener(report)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines off (the progress bar says it), restored afterwards."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _trial_seed(seed: int, draw: int) -> int:
    """The sampler's seed for draw `draw` of a search seeded `seed`: the same in a resumed search."""
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def _check_same_seed(study: optuna.Study, seed: int, storage: str) -> None:
    """Record the seed of a new study; a DataError when resuming one that was run with another seed."""
    recorded = study.user_attrs.get("seed")
    if recorded is None:
        study.set_user_attr("seed", seed)
    elif recorded != seed:
        raise DataError(f"the study in {storage} was run with seed={recorded}; resume it with seed={recorded} or "
                        f"pass another storage_dir to start a search with seed={seed}")


def spent_trials(study: optuna.Study) -> int:
    """Trials that count toward the budget: finished or pruned (not those an interruption left failed)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _best_value(study: optuna.Study) -> float:
    """The best validation score so far, NaN before the first finished trial."""
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max((trial.value for trial in finished), default=float("nan"))


def best_trial(study: optuna.Study, storage: str) -> optuna.trial.FrozenTrial:
    """The finished trial with the highest validation score; a DataError when every trial was pruned."""
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not finished:
        raise DataError(f"no trial of the study in {storage} finished (all pruned or failed); run more trials or "
                        f"check that the model trains on this data")
    return max(finished, key=lambda trial: (trial.value, -trial.number))


def _trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, draw (what seeded it), state, value and its settings."""
    return pd.DataFrame([{"number": trial.number, "draw": _draw(trial),
                          "state": trial.state.name, "value": trial.value, **trial.user_attrs.get("settings", {})}
                         for trial in study.get_trials(deepcopy=False)])
