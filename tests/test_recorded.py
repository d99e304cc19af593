"""Recorded experiments: committed runs read back, verified, and refused with a clear error when they are not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import DataError, Dataset
from xscene_lib.experiments import RECORDED_DIR, recorded_experiment, run_experiment
from xscene_lib.experiments.runner import SMOKE_USERS

MODELS = ["popularity", "itemknn"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A full (not smoke) run of two fast models with two seeds on tiny frames, and its folder."""
    rng = np.random.default_rng(0)
    users, per_user = np.repeat(np.arange(30), 6), 6
    interactions = pd.DataFrame({"user_id": users, "item_id": np.concatenate(
        [rng.choice(20, size=per_user, replace=False) for _ in range(30)]),
        "scenario": rng.choice(["app", "web"], size=len(users)), "timestamp": np.tile(np.arange(per_user), 30)})
    items = pd.DataFrame({"item_id": np.arange(20), "text": [f"item {i}" for i in range(20)]})
    data = Dataset.from_frames(interactions, items, name="tiny")
    results = run_experiment(data, models=MODELS, seeds=2, output_dir=tmp_path_factory.mktemp("recorded"),
                             show_progress=False)
    return results.output_dir, results


def test_a_recorded_experiment_reads_back_what_was_run(recorded) -> None:
    folder, live = recorded
    read = recorded_experiment(folder, MODELS, seeds=2)
    pd.testing.assert_frame_equal(read.table, live.table)
    pd.testing.assert_frame_equal(read.per_row, live.per_row)
    assert read.scenarios == live.scenarios == ("app", "web")
    assert recorded_experiment(folder, ["itemknn"]).table["model"].unique().tolist() == ["itemknn"]


def test_a_missing_run_or_folder_says_how_to_make_it(recorded, tmp_path: Path) -> None:
    folder, _ = recorded
    with pytest.raises(DataError, match=r"'bpr', seed 0 .*not built yet.*make recorded"):
        recorded_experiment(folder, ["popularity", "bpr"])
    with pytest.raises(DataError, match="no recorded experiment in .*make recorded"):
        recorded_experiment(tmp_path / "nowhere", MODELS)
    for bad, message in (([], "non-empty list"), ("popularity", "non-empty list")):
        with pytest.raises(DataError, match=message):
            recorded_experiment(folder, bad)
    with pytest.raises(DataError, match="seeds"):
        recorded_experiment(folder, MODELS, seeds=0)


def test_an_edited_run_or_a_smoke_manifest_is_refused(recorded, tmp_path: Path) -> None:
    folder, _ = recorded
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    per_row = copy / "runs" / "itemknn-seed1" / "per_row.csv"
    frame = pd.read_csv(per_row)
    frame.assign(rank=frame["rank"] + 1).to_csv(per_row, index=False)  # a quietly different number
    with pytest.raises(DataError, match="'itemknn', seed 1"):
        recorded_experiment(copy, MODELS, seeds=2)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"smoke": True}))
    with pytest.raises(DataError, match="smoke run"):
        recorded_experiment(copy, ["popularity"])
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not the manifest"):
        recorded_experiment(copy, ["popularity"])


CHAPTER_8 = [("ml-1m-age", ["popularity", "itemknn", "bpr", "text-zero-shot", "joint", "sasrec", "seq-joint-no-text",
                            "seq-joint"]),
             ("food-kitchen-domain", ["popularity", "itemknn", "bpr", "text-zero-shot", "sasrec", "seq-joint-no-text",
                                      "seq-joint"]),
             ("ml-100k-age", ["sasrec", "seq-joint-no-text", "seq-joint"])]


@pytest.mark.parametrize("folder, models", CHAPTER_8)
def test_the_committed_records_of_chapter_8_verify(folder: str, models: list[str]) -> None:
    results = recorded_experiment(ROOT / RECORDED_DIR / folder, models)
    assert set(results.table["model"]) == set(models) and (results.table["seed"] == 0).all()
    assert results.per_row["user_id"].nunique() > SMOKE_USERS  # the whole test set, not a smoke run's users


def test_make_recorded_fits_with_the_book_kernels_settings() -> None:
    from xscene_lib.execution import KERNEL_ENVIRONMENT
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("KERNEL_SETTINGS"))
    settings = dict(pair.split("=") for pair in line.split(":=", 1)[1].split())
    assert settings == {k: v for k, v in KERNEL_ENVIRONMENT.items() if k not in ("TQDM_DISABLE", "PYTHONWARNINGS")}


def test_chapter_8_reads_the_models_that_make_recorded_fits() -> None:
    cell = next(c for c in json.loads((ROOT / "notebooks" / "results.ipynb").read_text())["cells"]
                if "parameters" in c["metadata"].get("tags", []))
    parameters: dict = {}
    exec("".join(cell["source"]), parameters)
    recipe = (ROOT / "Makefile").read_text().split("\nrecorded:", 1)[1].split("\n\n", 1)[0]
    fitted = [line.split("--models", 1)[1].split() for line in recipe.splitlines() if "--models" in line]
    read = [parameters[name] for name in ("ml1m_models", "food_models", "seq_models")]
    assert read == [m for _, m in CHAPTER_8]
    assert fitted == [*read[:2], [*read[2], "text-zero-shot"]]  # ml-100k: zero-shot too, for quality.py's cold items
    seeds = [int(line.split("--seeds", 1)[1].split()[0]) for line in recipe.splitlines() if "--seeds" in line]
    assert seeds == [parameters["ml1m_seeds"], parameters["food_seeds"], parameters["seeds"]]
    assert parameters["recorded"] is True


def test_the_committed_records_are_plain_text() -> None:
    files = [path for path in (ROOT / RECORDED_DIR).rglob("*") if path.is_file()
             and not any(part.startswith(".") for part in path.relative_to(ROOT / RECORDED_DIR).parts)]  # not claims
    assert files and all(path.suffix in (".csv", ".json") for path in files), \
        sorted({path.suffix for path in files} - {".csv", ".json"})
