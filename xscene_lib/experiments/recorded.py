"""Experiments recorded by an earlier `xscene run` and committed, read back without refitting.

A grid too slow for the book's build (chapter 8's ml-1m and food-kitchen top-k runs, its sequential models on
ml-100k) is run once by `make recorded`, which calls `xscene run ... --output bench/results/recorded` under the
book's kernel settings, and its folder is committed. A chapter reads it with `recorded_experiment` and says on
the page that the numbers are recorded, and by which command. Every (model, seed) run is checked against the
SHA-256 sums of its manifest before it is used, so an edited or truncated file is an error, not a silently
different number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from xscene_lib.data import store
from xscene_lib.data.validation import DataError, check_positive_int
from xscene_lib.experiments.runner import Results

RECORDED_DIR = Path("bench") / "results" / "recorded"  # relative to the repository root
HOW = "produce it with `make recorded` (or run the grid live with `xscene run`)"


def recorded_experiment(folder: str | Path, models: Sequence[str], seeds: int = 1) -> Results:
    """The recorded runs of `models` with seeds 0..seeds-1 in a folder written by `run_experiment`."""
    check_positive_int("recorded_experiment", "seeds", seeds)
    if isinstance(models, str) or not models:
        raise DataError(f"recorded_experiment(models=...) must be a non-empty list of model names, got {models!r}")
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise DataError(f"no recorded experiment in {folder} (no manifest.json there); {HOW}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        scenarios, smoke = tuple(manifest["scenarios"]), manifest["smoke"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not the manifest of an experiment ({error!r}); {HOW}") from error
    if smoke:
        raise DataError(f"{folder} holds a smoke run (300 users, one epoch), not a recorded experiment; {HOW}")
    finished = []
    for model in models:
        for seed in range(seeds):
            run = folder / "runs" / f"{model}-seed{seed}"
            problem = store.tables_problem(run, ("per_row", "summary"))
            if problem is not None:
                raise DataError(f"recorded run {model!r}, seed {seed} in {folder}: {problem}; {HOW}")
            finished.append(store.read_tables(run, ("per_row", "summary")))
    per_row = pd.concat([rows for rows, _ in finished], ignore_index=True)
    table = pd.concat([summary for _, summary in finished], ignore_index=True)
    return Results(table, per_row, folder, scenarios)
