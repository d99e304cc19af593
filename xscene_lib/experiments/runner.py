"""The experiment runner that the chapters and `xscene run` share.

dataset -> split -> item text vectors -> each (model, seed): fit, rank the test items, metrics
-> one tidy results table (per model, seed and scenario) and a manifest of what was run.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bars: readable in terminals, notebooks and the built site

from xscene_lib.data import loading as datasets
from xscene_lib.data import store
from xscene_lib.models.article import ArticleModel
from xscene_lib.models.baselines import ItemKNN, Popularity, TextZeroShot
from xscene_lib.models.bpr import BPRMF, SingleScenario
from xscene_lib.models.ctr import STAR, ClickModel, JointCTR, SharedBottom
from xscene_lib.models.ctr_protocol import click_through_split
from xscene_lib.data.dataset import Dataset, Split
from xscene_lib.data.validation import DataError
from xscene_lib.models.joint import JointModel
from xscene_lib.evaluation.metrics import ranking_metrics, sampled_ranks, summarise, target_ranks
from xscene_lib.experiments.provenance import PeakMemory, dataset_files, package_versions
from xscene_lib.models.base import Recommender
from xscene_lib.text.encoder import DEFAULT_MODEL, TextEncoder

# name -> factory(seed, smoke) of an unfitted model; smoke mode trains for one short epoch
MODELS: dict[str, Callable[[int, bool], Recommender]] = {
    "popularity": lambda seed, smoke: Popularity(),
    "itemknn": lambda seed, smoke: ItemKNN(),
    "bpr": lambda seed, smoke: BPRMF(seed=seed, show_progress=False, **_short(smoke)),
    "single-scenario": lambda seed, smoke: SingleScenario(seed=seed, show_progress=False, **_short(smoke)),
    "text-zero-shot": lambda seed, smoke: TextZeroShot(),
    "article": lambda seed, smoke: ArticleModel(seed=seed, show_progress=False, **_short(smoke)),
    "joint": lambda seed, smoke: JointModel(seed=seed, show_progress=False, **_short(smoke)),
    "joint-no-text": lambda seed, smoke: JointModel(use_text=False, seed=seed, show_progress=False, **_short(smoke)),
    "joint-no-id": lambda seed, smoke: JointModel(use_id=False, seed=seed, show_progress=False, **_short(smoke)),
    "joint-no-adaptation": lambda seed, smoke: JointModel(adaptation=None, seed=seed, show_progress=False,
                                                          **_short(smoke)),
}
# the click-through protocol (ml-1m, Scenario-Wise Rec): name -> factory(seed, smoke) of an unfitted model
CLICK_MODELS: dict[str, Callable[[int, bool], ClickModel]] = {
    "shared-bottom": lambda seed, smoke: SharedBottom(seed=seed, **_short(smoke)),
    "star": lambda seed, smoke: STAR(seed=seed, **_short(smoke)),
    "joint-ctr": lambda seed, smoke: JointCTR(seed=seed, **_short(smoke)),
    "joint-ctr-no-text": lambda seed, smoke: JointCTR(use_text=False, seed=seed, **_short(smoke)),
}
SMOKE_CLICKS = 20_000  # training rows kept in smoke mode (a tenth of that for valid and test)
KS = (10, 20)
COLD_MAX = 5  # a test item (user) with at most this many training interactions in its scenario is "cold"
# (baseline, candidate) pairs the book compares: the joint model against ID-only training, against itself
# without text, against one model per scenario, and against the article's model as written
COMPARISONS = (("bpr", "joint"), ("joint-no-text", "joint"), ("single-scenario", "joint"), ("article", "joint"))
SMOKE_USERS = 300  # users kept in smoke mode
SAMPLED_NEGATIVES = 999  # negatives per target in the sampled protocol of food-kitchen's origin
SAMPLED_KS = (1, 5, 10)  # its cut-offs: HR and NDCG at 1, 5 and 10


def _short(smoke: bool) -> dict[str, int]:
    """Training settings of smoke mode: one epoch."""
    return {"num_epochs": 1} if smoke else {}


@dataclass(frozen=True)
class Results:
    """A finished experiment: the summary table, the per-row metrics and where they are stored."""

    table: pd.DataFrame  # one row per (model, seed, scenario incl. "all"): metrics, fit seconds, peak MiB
    per_row: pd.DataFrame  # one row per (model, seed, test row): rank and metrics
    output_dir: Path


def run_experiment(dataset: str = "ml-100k", scenarios: str | None = None,
                   models: Sequence[str] = tuple(MODELS), seeds: int | Sequence[int] = 1, *,
                   smoke: bool = False, encoder: str = DEFAULT_MODEL, output_dir: str | Path = "results",
                   data_dir: str | Path | None = None, sources: Sequence[str] = datasets.SOURCES,
                   show_progress: bool = True) -> Results:
    """Fit and evaluate models on one dataset and scenario view over several seeds."""
    unknown = [name for name in models if name not in MODELS]
    if unknown or not models:
        raise DataError(f"unknown model(s) {unknown or '(none given)'}; choose from {list(MODELS)}")
    seed_list = _checked_seeds(seeds)
    data = datasets.load(dataset, scenarios, data_dir=data_dir, sources=sources, verbose=show_progress)
    split = _smoke_split(data.split(), SMOKE_USERS) if smoke else data.split()
    vectors = _item_vectors(data, encoder, data_dir) if any(_uses_text(m) for m in models) else None
    folder = Path(output_dir) / f"{data.name}-{data.view}{_encoder_tag(encoder)}{'-smoke' if smoke else ''}"
    runs = folder / "runs"
    pairs = [(name, seed) for name in models for seed in seed_list]
    started = time.perf_counter()
    bar = tqdm(pairs, desc=f"{data.name}/{data.view}", disable=not show_progress, unit="run")
    for name, seed in bar:
        bar.set_postfix(model=name, seed=seed)
        if store.tables_problem(runs / f"{name}-seed{seed}", ("per_row", "summary")) is None:
            continue  # finished in an earlier, interrupted run
        per_row, summary = _run_one(name, seed, smoke, data, split, vectors)
        store.write_tables(runs / f"{name}-seed{seed}", {"per_row": per_row, "summary": summary},
                           model=name, seed=seed)
    finished = [store.read_tables(runs / f"{name}-seed{seed}", ("per_row", "summary")) for name, seed in pairs]
    per_row = pd.concat([rows for rows, _ in finished], ignore_index=True)
    table = pd.concat([summary for _, summary in finished], ignore_index=True)
    _write_outputs(folder, _every_finished_run(runs), data, dataset, smoke, encoder, time.perf_counter() - started,
                   data_dir)
    return Results(table, per_row, folder)


def run_click_through(dataset: str = "ml-1m", scenarios: str | None = None,
                      models: Sequence[str] = tuple(CLICK_MODELS), seeds: int | Sequence[int] = 1, *,
                      smoke: bool = False, encoder: str = DEFAULT_MODEL, output_dir: str | Path = "results",
                      data_dir: str | Path | None = None, sources: Sequence[str] = datasets.SOURCES,
                      show_progress: bool = True) -> pd.DataFrame:
    """The click-through protocol: AUC and log loss per scenario of each model and seed (label rating > 3)."""
    unknown = [name for name in models if name not in CLICK_MODELS]
    if unknown or not models:
        raise DataError(f"unknown click-through model(s) {unknown or '(none given)'}; choose from {list(CLICK_MODELS)}")
    seed_list = _checked_seeds(seeds)
    data = datasets.load(dataset, scenarios, data_dir=data_dir, sources=sources, verbose=show_progress)
    vectors = _item_vectors(data, encoder, data_dir) if any(m.startswith("joint-ctr") and "no-text" not in m
                                                            for m in models) else None
    folder_name = f"{data.name}-{data.view}-click-through{_encoder_tag(encoder)}{'-smoke' if smoke else ''}"
    folder = Path(output_dir) / folder_name
    started = time.perf_counter()
    pairs = [(name, seed) for name in models for seed in seed_list]
    bar = tqdm(pairs, desc=f"{data.name}/{data.view} click-through", disable=not show_progress, unit="run")
    for name, seed in bar:
        bar.set_postfix(model=name, seed=seed)
        if store.tables_problem(folder / "runs" / f"{name}-seed{seed}", ("summary",)) is None:
            continue  # finished in an earlier, interrupted run
        split = click_through_split(data, seed=seed)  # the split is redrawn with each seed
        if smoke:
            split = Split(split.train.iloc[:SMOKE_CLICKS], split.valid.iloc[:SMOKE_CLICKS // 10],
                          split.test.iloc[:SMOKE_CLICKS // 10])
        model = CLICK_MODELS[name](seed, smoke)
        with PeakMemory() as memory:
            begun = time.perf_counter()
            model.fit(split.train, vectors if "no-text" not in name and name.startswith("joint") else None,
                      valid=split.valid)
            fit_seconds = time.perf_counter() - begun
        summary = model.evaluate(split.test).rename_axis("scenario").reset_index()
        summary = summary.assign(model=name, seed=seed, fit_seconds=fit_seconds, peak_mib=memory.peak_mib,
                                 run_seconds=time.perf_counter() - begun)  # fit and evaluation
        store.write_tables(folder / "runs" / f"{name}-seed{seed}", {"summary": summary}, model=name, seed=seed)
    table = pd.concat([store.read_tables(folder / "runs" / f"{name}-seed{seed}", ("summary",))[0]
                       for name, seed in pairs], ignore_index=True)
    _write_outputs(folder, _every_finished_run(folder / "runs"), data, dataset, smoke, encoder,
                   time.perf_counter() - started, data_dir)
    return table


def _checked_seeds(seeds: int | Sequence[int]) -> list[int]:
    """Seeds as a list: a count n means 0..n-1."""
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else list(seeds)
    if not seed_list or any(not isinstance(s, (int, np.integer)) or s < 0 for s in seed_list):
        raise DataError(f"seeds must be a positive count or a list of non-negative integers, got {seeds!r}")
    return seed_list


def _uses_text(name: str) -> bool:
    """Whether a model of the registry reads item text vectors."""
    return name in ("text-zero-shot", "article", "joint", "joint-no-id", "joint-no-adaptation")


def _smoke_split(split: Split, n_users: int) -> Split:
    """The split restricted to the first n_users test users (and their training rows)."""
    users = np.sort(split.test["user_id"].unique())[:n_users]
    keep = lambda frame: frame[frame["user_id"].isin(users)].reset_index(drop=True)  # noqa: E731
    return Split(keep(split.train), keep(split.valid), keep(split.test))


def _item_vectors(data: Dataset, encoder: str, data_dir: str | Path | None) -> pd.DataFrame:
    """The encoder's vector of every item's text, indexed by item_id (read from the text cache when there)."""
    cache = (Path(data_dir) if data_dir is not None else datasets.default_data_dir()) / "cache" / "text"
    vectors = TextEncoder(encoder, cache_dir=cache).encode(data.items["text"].tolist())  # (n_items, d)
    return pd.DataFrame(vectors, index=data.items["item_id"].to_numpy())


def _run_one(name: str, seed: int, smoke: bool, data: Dataset, split: Split,
             vectors: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit one model with one seed and evaluate it on the test rows: per-row and summary tables."""
    model = MODELS[name](seed, smoke)
    with PeakMemory() as memory:
        started = time.perf_counter()
        model.fit(split.train, vectors if _uses_text(name) else None, items=data.items["item_id"],
                  valid=split.valid)
        fit_seconds = time.perf_counter() - started
    seen = pd.concat([split.train, split.valid], ignore_index=True)  # excluded from the ranking at test time
    test = split.test.assign(scenario=pd.Categorical(split.test["scenario"], categories=data.scenarios))
    candidates = _domain_candidates(data)
    per_row = ranking_metrics(target_ranks(model, seen, test, candidates=candidates), ks=KS)
    if candidates is not None:
        per_row = _with_sampled_metrics(per_row, model, seen, test, candidates, seed)
    per_row = per_row.assign(model=name, seed=seed, scenario=per_row["scenario"].astype(str),
                             cold_item=_training_counts(split, "item_id") <= COLD_MAX,
                             cold_user=_training_counts(split, "user_id") <= COLD_MAX)
    summary = summarise(per_row.assign(scenario=test["scenario"]), by=("scenario",)).reset_index()
    summary = summary.assign(model=name, seed=seed, fit_seconds=fit_seconds, peak_mib=memory.peak_mib,
                             run_seconds=time.perf_counter() - started)  # fit and evaluation
    summary["scenario"] = summary["scenario"].astype(str)
    return per_row, summary


def _with_sampled_metrics(per_row: pd.DataFrame, model: Recommender, seen: pd.DataFrame, test: pd.DataFrame,
                          candidates: dict[str, list[int]], seed: int) -> pd.DataFrame:
    """The per-row metrics with the sampled protocol's rank and metrics added, prefixed `sampled_`."""
    sampled = ranking_metrics(sampled_ranks(model, seen, test, n_negatives=SAMPLED_NEGATIVES, candidates=candidates,
                                            seed=seed), ks=SAMPLED_KS)
    columns = ["rank"] + [column for column in sampled.columns if "@" in str(column)]
    return per_row.join(sampled[columns].add_prefix("sampled_"))


def _training_counts(split: Split, key: str) -> np.ndarray:
    """For each test row, the training interactions of its item (or user) in its scenario. shape: (n_test,)."""
    counts = split.train.astype({"scenario": str}).groupby([key, "scenario"]).size()
    rows = pd.MultiIndex.from_frame(split.test[[key, "scenario"]].astype({"scenario": str}))
    return counts.reindex(rows).fillna(0).to_numpy()


def _domain_candidates(data: Dataset) -> dict[str, list[int]] | None:
    """Items of each domain when scenarios are item domains (food-kitchen): a target competes in its domain."""
    if "domain" not in data.items.columns or set(data.scenarios) != set(data.items["domain"]):
        return None
    return {domain: group.tolist() for domain, group in data.items.groupby("domain")["item_id"]}


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


def _every_finished_run(runs: Path) -> pd.DataFrame:
    """The summary rows of every verified (model, seed) run in a folder, whichever call produced it."""
    folders = sorted(p for p in runs.iterdir() if p.is_dir() and store.tables_problem(p, ("summary",)) is None)
    return pd.concat([store.read_tables(p, ("summary",))[0] for p in folders], ignore_index=True)


def _write_outputs(folder: Path, table: pd.DataFrame, data: Dataset, dataset: str, smoke: bool, encoder: str,
                   seconds: float, data_dir: str | Path | None) -> None:
    """Write the table of every finished run (Parquet and CSV) and the manifest, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    store.write_tables(folder / "table", {"results": table}, dataset=dataset, view=data.view)
    store.write_atomically(folder / "results.csv", lambda path: table.to_csv(path, index=False))
    manifest = {
        "dataset": data.name, "view": data.view, "scenarios": data.scenarios,
        "models": sorted(table["model"].unique()), "seeds": sorted(int(s) for s in table["seed"].unique()),
        "smoke": smoke, "encoder": str(encoder), "wall_seconds": round(seconds, 2),
        # summed over every (model, seed) run, including runs finished by earlier, interrupted invocations
        "run_seconds_total": round(float(table.groupby(["model", "seed"])["run_seconds"].first().sum()), 2)
        if "run_seconds" in table else None,
        "fit_seconds": table.groupby("model")["fit_seconds"].first().round(3).to_dict(),
        "peak_mib": table.groupby("model")["peak_mib"].max().round(1).to_dict(),
        "dataset_files": dataset_files(data.name, data_dir),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "packages": package_versions(),
    }
    store.write_atomically(folder / "manifest.json", lambda path: path.write_text(
        json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8"))
