"""bench/peer_recbole.py's side that runs without RecBole: the exported files (bench/recbole_export.py) and the
merge with an earlier record."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from xscene_lib.data import Dataset

ROOT = Path(__file__).resolve().parents[1]


def _load_bench(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


export = _load_bench("recbole_export")  # peer_recbole imports it by name, as it does when run from bench/
peers = _load_bench("peer_recbole")


@pytest.fixture
def tiny() -> Dataset:
    """User 1 has five films in order, user 2 three (two at the same time, kept in their row order)."""
    interactions = pd.DataFrame({
        "user_id": [1, 1, 1, 1, 1, 2, 2, 2],
        "item_id": [10, 11, 12, 13, 14, 20, 21, 22],
        "scenario": "a",
        "timestamp": [1, 2, 3, 4, 5, 7, 7, 9],
    })
    items = pd.DataFrame({"item_id": [10, 11, 12, 13, 14, 20, 21, 22, 30], "text": "t"})
    return Dataset.from_frames(interactions, items, name="tiny", view="age")


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_sequences_hold_the_last_items_before_each_target(tiny: Dataset, tmp_path: Path) -> None:
    split = tiny.split()
    export.export_sequences(tiny, split, tmp_path, "tiny-seq", length=2)
    folder = tmp_path / "tiny-seq"
    header = ["user_id:token", "item_id_list:token_seq", "item_id:token"]
    train, valid, test = (_read(folder / f"tiny-seq.{part}.inter") for part in ("train", "valid", "test"))
    assert list(train.columns) == list(valid.columns) == list(test.columns) == header
    # user 1 trains on 10, 11, 12: two targets; user 2 has one training film, so no target
    assert train.values.tolist() == [["1", "10", "11"], ["1", "10 11", "12"]]
    assert sorted(valid.values.tolist()) == [["1", "11 12", "13"], ["2", "20", "21"]]
    assert sorted(test.values.tolist()) == [["1", "12 13", "14"], ["2", "20 21", "22"]]
    catalogue = _read(folder / "tiny-seq.item")
    assert catalogue["item_id:token"].tolist() == [str(item) for item in tiny.items["item_id"]]
    seen = pd.read_csv(tmp_path / "history.csv")
    assert sorted(map(tuple, seen.values.tolist())) == [(1, 10), (1, 11), (1, 12), (1, 13), (2, 20), (2, 21)]


def test_a_sequence_is_never_longer_than_asked(tiny: Dataset, tmp_path: Path) -> None:
    export.export_sequences(tiny, tiny.split(), tmp_path, "s", length=1)
    test = _read(tmp_path / "s" / "s.test.inter")
    assert sorted(test.values.tolist()) == [["1", "13", "14"], ["2", "21", "22"]]


def test_sequential_models_read_the_sequences_and_general_ones_the_interactions(tmp_path: Path) -> None:
    sasrec = peers.recbole_config("SASRec", tmp_path, tmp_path, epochs=5, seed=1)
    bpr = peers.recbole_config("BPR", tmp_path, tmp_path, epochs=5, seed=1)
    assert sasrec["load_col"]["inter"] == ["user_id", "item_id_list", "item_id"]
    assert sasrec["alias_of_item_id"] == ["item_id_list"] and sasrec["train_neg_sample_args"] is None
    assert sasrec["MAX_ITEM_LIST_LENGTH"] == export.MAX_ITEM_LIST_LENGTH
    assert bpr["load_col"]["inter"] == ["user_id", "item_id", "timestamp"] and "alias_of_item_id" not in bpr
    assert not sasrec["use_gpu"] and peers.recbole_config("SASRec", tmp_path, tmp_path, 5, 1, gpu=True)["use_gpu"]


def _record(stem: Path, split_sizes: dict, models: list[str]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"model": models, "scenario": "all", "ndcg@10": 0.5}).to_csv(stem.with_suffix(".csv"), index=False)
    manifest = {"split": split_sizes, "models": {model: {"epochs_run": 1} for model in models},
                "cross_check": {"rows": [{"model": model} for model in models]}}
    stem.with_suffix(".json").write_text(json.dumps(manifest))


def test_a_new_run_keeps_the_other_models_of_the_same_split(tiny: Dataset, tmp_path: Path) -> None:
    split = tiny.split()
    sizes = {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)}
    stem = tmp_path / "tiny-age"
    _record(stem, sizes, ["BPR", "ItemKNN"])
    kept, _ = peers.earlier_models(stem, split, running={"ItemKNN", "SASRec"})
    assert list(kept) == ["BPR"]
    assert peers.kept_rows(stem.with_suffix(".csv"), kept)["model"].tolist() == ["BPR"]
    assert peers.earlier_models(tmp_path / "nothing-here", split, running=set())[0] == {}


def test_a_record_of_another_split_is_not_merged(tiny: Dataset, tmp_path: Path) -> None:
    split = tiny.split()
    stem = tmp_path / "tiny-age"
    _record(stem, {"train": 1, "valid": 1, "test": 1}, ["BPR"])
    with pytest.raises(SystemExit, match="another split.*--replace"):
        peers.earlier_models(stem, split, running={"SASRec"})
