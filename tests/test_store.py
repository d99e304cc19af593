"""Verified table folders: written whole, checked against their manifest, never half-replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from xscene_lib.data import store

NAMES = ("left", "right")


def _tables(offset: int = 0) -> dict[str, pd.DataFrame]:
    return {"left": pd.DataFrame({"a": [1 + offset, 2 + offset]}), "right": pd.DataFrame({"b": ["x", "y"]})}


def test_written_tables_verify_and_read_back(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "toy"
    store.write_tables(folder, _tables(), dataset="toy")
    assert store.tables_problem(folder, NAMES) is None
    left, right = store.read_tables(folder, NAMES)
    assert left["a"].tolist() == [1, 2] and right["b"].tolist() == ["x", "y"]
    manifest = json.loads((folder / store.MANIFEST).read_text())
    assert manifest["dataset"] == "toy" and manifest["tables"]["left"]["rows"] == 2
    assert [p.name for p in folder.parent.iterdir()] == ["toy"]  # no staging folders left behind


def test_rewrite_replaces_the_whole_folder(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    store.write_tables(folder, _tables())
    store.write_tables(folder, _tables(offset=10))
    assert store.read_tables(folder, NAMES)[0]["a"].tolist() == [11, 12]


@pytest.mark.parametrize("damage, expected", [
    (lambda f: (f / "left.parquet").write_bytes((f / "left.parquet").read_bytes()[:-5]), "SHA-256 mismatch"),
    (lambda f: (f / "right.parquet").unlink(), "right.parquet missing"),
    (lambda f: (f / store.MANIFEST).write_text("{not json"), "unreadable"),
    (lambda f: (f / store.MANIFEST).write_text(json.dumps({"format_version": 0, "tables": {
        n: {"sha256": ""} for n in NAMES}})), "format 0"),
])
def test_damage_is_reported(tmp_path: Path, damage, expected: str) -> None:
    folder = tmp_path / "toy"
    store.write_tables(folder, _tables())
    damage(folder)
    assert expected in store.tables_problem(folder, NAMES)


def test_a_failing_write_keeps_the_old_folder(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    store.write_tables(folder, _tables())
    with pytest.raises(Exception):
        store.write_tables(folder, {"left": pd.DataFrame({"a": [object()]})})  # Parquet cannot hold it
    assert store.tables_problem(folder, NAMES) is None
    assert store.read_tables(folder, NAMES)[0]["a"].tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]


def test_copy_atomically_leaves_no_temporary_files(tmp_path: Path) -> None:
    source, target = tmp_path / "source.txt", tmp_path / "target.txt"
    source.write_text("new")
    target.write_text("old")
    store.copy_atomically(source, target)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.txt", "target.txt"]
    assert store.sha256_file(target) == "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437"
