"""The experiment runner that the chapters and `xscene run` share.

dataset -> split -> item text vectors -> each (model, seed): fit, rank the test items, metrics
-> one tidy results table (per model, seed and scenario) and a manifest of what was run.
The dataset is a registered name or a Dataset of your own (`Dataset.from_frames`, `frames.read_frames`);
the models are names of `registry` (`registry.model_names()`).

Every finished (model, seed) pair is written to `output_dir/runs/` at once, atomically, so an
interrupted run resumes from the pairs already done. The per-row metrics stay available for
paired bootstrap intervals (xscene_lib.evaluation.intervals).

When the scenarios are item domains (food-kitchen), a target is ranked against every item of its own domain,
and the per-row metrics also hold the origin paper's sampled protocol: the target against SAMPLED_NEGATIVES
random negatives from its domain (`metrics.sampled_ranks`), as `sampled_rank` and `sampled_<metric>@k` for k in
SAMPLED_KS. Sampled metrics are never lower than the full-ranking ones and are reported only for comparison with
published numbers; the full ranking is the stricter measure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bars: readable in terminals, notebooks and the built site

from xscene_lib.data import loading as datasets, store
from xscene_lib.models.ctr_protocol import click_through_split
from xscene_lib.data.dataset import Dataset, Split
from xscene_lib.data.validation import DataError, check_int, check_positive_int
from xscene_lib.evaluation.metrics import ranking_metrics, sampled_ranks, summarise, target_ranks
from xscene_lib.experiments.configs import config_path, read_config_file, tuned_settings
from xscene_lib.experiments.frames import frames_digest
from xscene_lib.experiments.provenance import PeakMemory, dataset_files, package_versions
from xscene_lib.experiments.registry import ModelSpec, model_names, model_specs
from xscene_lib.experiments.slices import cold_flags, domain_candidates
from xscene_lib.models.base import Recommender
from xscene_lib.text.encoder import DEFAULT_MODEL, TextEncoder

SMOKE_CLICKS = 20_000  # training rows kept in smoke mode (a tenth of that for valid and test)
KS = (10, 20)
# (baseline, candidate) pairs the book compares: the joint model against ID-only training, against itself
# without text, against one model per scenario, and against the article's model as written
COMPARISONS = (("bpr", "joint"), ("joint-no-text", "joint"), ("single-scenario", "joint"), ("article", "joint"))
SMOKE_USERS = 300  # users kept in smoke mode
RESULTS_FORMAT = "csv"  # runs and tables are small, and `make recorded` keeps them in git as plain text
SAMPLED_NEGATIVES = 999  # negatives per target in the sampled protocol of food-kitchen's origin
SAMPLED_KS = (1, 5, 10)  # its cut-offs: HR and NDCG at 1, 5 and 10


@dataclass(frozen=True)
class Results:
    """A finished experiment: the summary table, the per-row metrics and where they are stored."""

    table: pd.DataFrame  # one row per (model, seed, scenario incl. "all"): metrics, fit seconds, peak MiB
    per_row: pd.DataFrame  # one row per (model, seed, test row): rank and metrics
    output_dir: Path
    scenarios: tuple[str, ...] = ()  # the dataset's scenarios in their own order (for tables: in_scenario_order)


def run_experiment(dataset: str | Dataset = "ml-100k", scenarios: str | None = None,
                   models: Sequence[str] | None = None, seeds: int | Sequence[int] = 1, *,
                   smoke: bool = False, per_scenario: bool = False, encoder: str = DEFAULT_MODEL,
                   output_dir: str | Path = "results", data_dir: str | Path | None = None,
                   sources: Sequence[str] = datasets.SOURCES, show_progress: bool = True,
                   config: bool | str | Path = True) -> Results:
    """Fit and evaluate top-k models on one dataset (a registered name or a Dataset) over several seeds.

    models=None runs every top-k model of the registry (`registry.model_names("top-k")`). The split is the
    temporal leave-last-out per user, or per user and scenario with per_scenario=True (its own results folder).
    config=True builds each model that configs/<dataset>-<view>.toml lists with its tuned settings (`xscene tune`),
    the others with their defaults; a path names another config file; False uses every model's defaults.
    """
    specs = model_specs(model_names("top-k") if models is None else models, "top-k")
    seed_list = _checked_seeds(seeds, "run_experiment")
    data = _dataset(dataset, scenarios, data_dir, sources, show_progress)
    tuned_from, tuned = _tuned_settings(config, data)
    split = data.split(per_scenario=per_scenario)
    split = split.first_test_users(SMOKE_USERS) if smoke else split
    vectors = _item_vectors(data, encoder, data_dir) if any(spec.needs_text for spec in specs) else None
    tags = f"{'-per-scenario' if per_scenario else ''}{_encoder_tag(encoder)}{'-smoke' if smoke else ''}"
    folder = Path(output_dir) / f"{data.name}-{data.view}{tags}"
    runs = folder / "runs"
    pairs = [(spec, seed) for spec in specs for seed in seed_list]
    started = time.perf_counter()
    wanted = {runs / f"{spec.name}-seed{seed}": (spec, seed) for spec, seed in pairs}
    bar = tqdm(total=len(pairs), desc=f"{data.name}/{data.view}", disable=not show_progress, unit="run")

    def finished_here(folder: Path) -> bool:  # by an earlier, interrupted call or another process, same settings
        done = store.tables_problem(folder, ("per_row", "summary")) is None \
            and _run_settings(folder) == tuned.get(wanted[folder][0].name)
        bar.update(done)
        return done

    def build(folder: Path) -> None:
        (spec, seed), settings = wanted[folder], tuned.get(wanted[folder][0].name)
        bar.set_postfix(model=spec.name, seed=seed)
        per_row, summary = _run_one(spec, seed, smoke, data, split, vectors, settings)
        store.write_tables(folder, {"per_row": per_row, "summary": summary}, table_format=RESULTS_FORMAT,
                           model=spec.name, seed=seed, settings=settings)
        bar.update()

    store.build_missing(list(wanted), finished_here, build)  # each (model, seed) run once, shared between processes
    bar.close()
    finished = [store.read_tables(runs / f"{spec.name}-seed{seed}", ("per_row", "summary")) for spec, seed in pairs]
    per_row = pd.concat([rows for rows, _ in finished], ignore_index=True)
    table = pd.concat([summary for _, summary in finished], ignore_index=True)
    _write_outputs(folder, _every_finished_run(runs), data, isinstance(dataset, str), smoke, encoder,
                   time.perf_counter() - started, data_dir, per_scenario=per_scenario,
                   config=None if tuned_from is None else str(tuned_from), model_settings=_settings_of_runs(runs))
    return Results(table, per_row, folder, tuple(data.scenarios))


def run_click_through(dataset: str | Dataset = "ml-1m", scenarios: str | None = None,
                      models: Sequence[str] | None = None, seeds: int | Sequence[int] = 1, *,
                      smoke: bool = False, encoder: str = DEFAULT_MODEL, output_dir: str | Path = "results",
                      data_dir: str | Path | None = None, sources: Sequence[str] = datasets.SOURCES,
                      show_progress: bool = True) -> pd.DataFrame:
    """The click-through protocol: AUC and log loss per scenario of each model and seed (label rating > 3).

    `dataset` is a registered name or a Dataset with ratings; models=None runs every click-through model.
    """
    specs = model_specs(model_names("click-through") if models is None else models, "click-through")
    seed_list = _checked_seeds(seeds, "run_click_through")
    data = _dataset(dataset, scenarios, data_dir, sources, show_progress)
    vectors = _item_vectors(data, encoder, data_dir) if any(spec.needs_text for spec in specs) else None
    folder_name = f"{data.name}-{data.view}-click-through{_encoder_tag(encoder)}{'-smoke' if smoke else ''}"
    folder = Path(output_dir) / folder_name
    started = time.perf_counter()
    pairs = [(spec, seed) for spec in specs for seed in seed_list]
    wanted = {folder / "runs" / f"{spec.name}-seed{seed}": (spec, seed) for spec, seed in pairs}
    bar = tqdm(total=len(pairs), desc=f"{data.name}/{data.view} click-through", disable=not show_progress, unit="run")

    def finished_here(run: Path) -> bool:  # by an earlier, interrupted call or another process
        done = store.tables_problem(run, ("summary",)) is None
        bar.update(done)
        return done

    def build(run: Path) -> None:
        spec, seed = wanted[run]
        bar.set_postfix(model=spec.name, seed=seed)
        split = click_through_split(data, seed=seed)  # the split is redrawn with each seed
        if smoke:
            split = Split(split.train.iloc[:SMOKE_CLICKS], split.valid.iloc[:SMOKE_CLICKS // 10],
                          split.test.iloc[:SMOKE_CLICKS // 10])
        model = spec.factory(seed, smoke)
        with PeakMemory() as memory:
            begun = time.perf_counter()
            model.fit(split.train, vectors if spec.needs_text else None, valid=split.valid)
            fit_seconds = time.perf_counter() - begun
        summary = model.evaluate(split.test).rename_axis("scenario").reset_index()
        summary = summary.assign(model=spec.name, seed=seed, fit_seconds=fit_seconds, peak_mib=memory.peak_mib,
                                 run_seconds=time.perf_counter() - begun, **_epochs(model))  # fit and evaluation
        store.write_tables(run, {"summary": summary}, table_format=RESULTS_FORMAT, model=spec.name, seed=seed)
        bar.update()

    store.build_missing(list(wanted), finished_here, build)  # each (model, seed) run once, shared between processes
    bar.close()
    table = pd.concat([store.read_tables(folder / "runs" / f"{spec.name}-seed{seed}", ("summary",))[0]
                       for spec, seed in pairs], ignore_index=True)
    _write_outputs(folder, _every_finished_run(folder / "runs"), data, isinstance(dataset, str), smoke, encoder,
                   time.perf_counter() - started, data_dir)
    return table


def _checked_seeds(seeds: int | Sequence[int], owner: str) -> list[int]:
    """Seeds as a list: a count n means 0..n-1."""
    hint = "seeds is a count n (seeds 0..n-1) or a non-empty list of non-negative integers"
    if isinstance(seeds, str) or not isinstance(seeds, (Sequence, np.ndarray)):  # a count
        check_positive_int(owner, "seeds", seeds, hint=hint)
        return list(range(seeds))
    seed_list = list(seeds)
    if not seed_list:
        raise DataError(f"{owner}(seeds={seeds!r}) runs nothing; {hint}")
    for position, seed in enumerate(seed_list):
        check_int(owner, f"seeds[{position}]", seed, minimum=0, hint=hint)
    return seed_list


def _dataset(dataset: str | Dataset, scenarios: str | None, data_dir: str | Path | None, sources: Sequence[str],
             verbose: bool) -> Dataset:
    """The Dataset given, or the registered dataset of that name under the scenario view (fetched if needed)."""
    if isinstance(dataset, Dataset):
        if scenarios is not None:
            raise DataError(f"scenarios={scenarios!r} picks a view of a registered dataset; a Dataset has its "
                            f"scenarios already: pass scenarios=None (keep some with dataset.filter(scenarios=[...]))")
        return dataset
    if not isinstance(dataset, str):
        raise DataError(f"dataset must be a registered name ({', '.join(datasets.available())}) or a Dataset "
                        f"(Dataset.from_frames), got {type(dataset).__name__}")
    return datasets.load(dataset, scenarios, data_dir=data_dir, sources=sources, verbose=verbose)


def _tuned_settings(config: bool | str | Path, data: Dataset) -> tuple[Path | None, dict[str, dict]]:
    """The config file used (None: defaults only) and its settings per model name."""
    if config is False:
        return None, {}
    if config is True:
        path = config_path(data.name, data.view)
        return (path, tuned_settings(data.name, data.view)) if path.is_file() else (None, {})
    if isinstance(config, (str, Path)):
        path = Path(config)
    else:
        raise DataError(f"run_experiment(config={config!r}) must be True (the dataset's tuned config when there is "
                        f"one), False (every model's defaults) or the path of a config file")
    return path, {model: table["settings"] for model, table in read_config_file(path).items()}


def _run_settings(folder: Path) -> dict | None:
    """The settings a stored (model, seed) run was built with (None: the model's defaults)."""
    try:
        return json.loads((folder / store.MANIFEST).read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError):
        return None


def _settings_of_runs(runs: Path) -> dict[str, dict | None]:
    """Model name -> the settings of its verified runs in a folder (None: defaults), for the manifest."""
    folders = sorted(p for p in runs.iterdir() if _is_run(p))
    return {json.loads((p / store.MANIFEST).read_text(encoding="utf-8"))["model"]: _run_settings(p) for p in folders}


def _item_vectors(data: Dataset, encoder: str, data_dir: str | Path | None) -> pd.DataFrame:
    """The encoder's vector of every item's text, indexed by item_id (read from the text cache when there)."""
    cache = (Path(data_dir) if data_dir is not None else datasets.default_data_dir()) / "cache" / "text"
    vectors = TextEncoder(encoder, cache_dir=cache).encode(data.items["text"].tolist())  # (n_items, d)
    return pd.DataFrame(vectors, index=data.items["item_id"].to_numpy())


def _run_one(spec: ModelSpec, seed: int, smoke: bool, data: Dataset, split: Split,
             vectors: pd.DataFrame | None, settings: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit one model with one seed (and settings, else its defaults) and evaluate it on the test rows."""
    model = spec.build(seed, smoke, settings)
    with PeakMemory() as memory:
        started = time.perf_counter()
        model.fit(split.train, vectors if spec.needs_text else None, items=data.items["item_id"],
                  valid=split.valid)
        fit_seconds = time.perf_counter() - started
    seen = pd.concat([split.train, split.valid], ignore_index=True)  # excluded from the ranking at test time
    test = split.test.assign(scenario=pd.Categorical(split.test["scenario"], categories=data.scenarios))
    candidates = domain_candidates(data)
    per_row = ranking_metrics(target_ranks(model, seen, test, candidates=candidates), ks=KS)
    if candidates is not None:
        per_row = _with_sampled_metrics(per_row, model, seen, test, candidates, seed)
    cold = cold_flags(split)
    per_row = per_row.assign(model=spec.name, seed=seed, scenario=per_row["scenario"].astype(str),
                             cold_item=cold["cold_item"].to_numpy(), cold_user=cold["cold_user"].to_numpy())
    summary = summarise(per_row.assign(scenario=test["scenario"]), by=("scenario",)).reset_index()
    summary = summary.assign(model=spec.name, seed=seed, fit_seconds=fit_seconds, peak_mib=memory.peak_mib,
                             run_seconds=time.perf_counter() - started, **_epochs(model))  # fit and evaluation
    summary["scenario"] = summary["scenario"].astype(str)
    return per_row, summary


def _epochs(model: object) -> dict[str, float]:
    """Epochs run and the (1-based) epoch kept; NaN if not trained or not validated; of parts, the largest."""
    parts = getattr(model, "history_", [])
    parts = parts if isinstance(parts, list) else [parts]
    best, runs = max([p.best_epoch for p in parts], default=-1), max([len(p.epochs) for p in parts], default=np.nan)
    return {"epochs_run": runs, "best_epoch": best if best >= 1 else np.nan}


def _with_sampled_metrics(per_row: pd.DataFrame, model: Recommender, seen: pd.DataFrame, test: pd.DataFrame,
                          candidates: dict[str, list[int]], seed: int) -> pd.DataFrame:
    """The per-row metrics with the sampled protocol's rank and metrics added, prefixed `sampled_`."""
    sampled = ranking_metrics(sampled_ranks(model, seen, test, n_negatives=SAMPLED_NEGATIVES, candidates=candidates,
                                            seed=seed), ks=SAMPLED_KS)
    columns = ["rank"] + [column for column in sampled.columns if "@" in str(column)]
    return per_row.join(sampled[columns].add_prefix("sampled_"))


def compare(results: Results, pairs: Sequence[tuple[str, str]] = COMPARISONS, metric: str = "ndcg@10",
            n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap intervals (over users) of candidate - baseline, per scenario and on cold slices."""
    from xscene_lib.evaluation.intervals import paired_bootstrap

    present = set(results.per_row["model"])
    tables = []
    for baseline, candidate in pairs:
        if not {baseline, candidate} <= present:
            continue
        per_row = results.per_row
        slices = [("all", per_row)] + [(f"cold {what}s", per_row[per_row[f"cold_{what}"]])
                                       for what in ("item", "user") if f"cold_{what}" in per_row]
        for slice_name, rows in slices:
            if rows.empty:
                continue
            table = paired_bootstrap(rows, metric, baseline, candidate, n_resamples=n_resamples, seed=seed)
            tables.append(table.assign(baseline_model=baseline, candidate_model=candidate, slice=slice_name,
                                       metric=metric))
    if not tables:
        raise DataError(f"none of the pairs {list(pairs)} has both models in the results; run them first")
    return pd.concat(tables, ignore_index=True)


def _encoder_tag(encoder: str) -> str:
    """A folder-name suffix for a non-default encoder ("" for the default), so results never mix encoders."""
    if str(encoder) == DEFAULT_MODEL:
        return ""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(encoder)).name)[:40]
    return f"-{readable}-{hashlib.sha256(str(encoder).encode()).hexdigest()[:8]}"


def _is_run(folder: Path) -> bool:
    """Whether a folder in runs/ is a verified (model, seed) run, not a staging copy (`.NAME.new-*`) beside one."""
    return folder.is_dir() and not folder.name.startswith(".") and store.tables_problem(folder, ("summary",)) is None


def _every_finished_run(runs: Path) -> pd.DataFrame:
    """The summary rows of every verified (model, seed) run in a folder, whichever call produced it."""
    folders = sorted(p for p in runs.iterdir() if _is_run(p))
    return pd.concat([store.read_tables(p, ("summary",))[0] for p in folders], ignore_index=True)


def _write_outputs(folder: Path, table: pd.DataFrame, data: Dataset, registered: bool, smoke: bool, encoder: str,
                   seconds: float, data_dir: str | Path | None, **settings: object) -> None:
    """Write the table of every finished run (verified, and as results.csv) and the manifest, each atomically.

    A registered dataset is identified by its raw files' sums, a Dataset given as frames by a digest of its rows.
    """
    store.write_tables(folder / "table", {"results": table}, table_format=RESULTS_FORMAT, dataset=data.name,
                       view=data.view)
    store.write_atomically(folder / "results.csv", lambda path: table.to_csv(path, index=False))
    manifest = {
        "dataset": data.name, "view": data.view, "scenarios": data.scenarios,
        "models": sorted(table["model"].unique()), "seeds": sorted(int(s) for s in table["seed"].unique()),
        "smoke": smoke, **settings, "encoder": str(encoder), "wall_seconds": round(seconds, 2),
        # summed over every (model, seed) run, including runs finished by earlier, interrupted invocations
        "run_seconds_total": round(float(table.groupby(["model", "seed"])["run_seconds"].first().sum()), 2)
        if "run_seconds" in table else None,
        "fit_seconds": table.groupby("model")["fit_seconds"].first().round(3).to_dict(),
        "peak_mib": table.groupby("model")["peak_mib"].max().round(1).to_dict(),
        "dataset_source": "registry" if registered else "frames",
        "dataset_files": dataset_files(data.name, data_dir) if registered else {},
        "dataset_sha256": None if registered else frames_digest(data),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "packages": package_versions(),
    }
    store.write_atomically(folder / "manifest.json", lambda path: path.write_text(
        json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8"))
