"""Verified table folders: written whole, checked against their manifest, never half-replaced."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
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


def test_csv_tables_read_back_equal_with_their_types(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "user_id": pd.array(["007", "NA", "a,b \"c\"", None], dtype="str"),  # ids that CSV parsing would mangle
        "when": pd.to_datetime(["2020-01-01", "2021-02-03 04:05:06", None, "2020-01-01"], format="ISO8601"),
        "score": [0.1 + 0.2, np.nan, 1e-300, -2.5], "rating": np.array([0.1, 0.2, 0.3, 4.0], dtype="float32"),
        "known": [True, False, True, True], "count": pd.array([1, None, 3, 4], dtype="Int64"),
        "rank": np.array([1, 2, 3, 2**62], dtype="int64")})
    store.write_tables(tmp_path / "toy", {"rows": frame}, table_format="csv", model="m")
    assert store.tables_problem(tmp_path / "toy", ["rows"]) is None
    assert (tmp_path / "toy" / "rows.csv").is_file() and not (tmp_path / "toy" / "rows.parquet").exists()
    (back,) = store.read_tables(tmp_path / "toy", ["rows"])
    pd.testing.assert_frame_equal(back, frame, check_exact=True)


def test_a_csv_table_edited_or_unknown_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    store.write_tables(folder, _tables(), table_format="csv")
    (folder / "left.csv").write_text("a\n1\n3\n")  # a quietly different number
    assert "left.csv: SHA-256 mismatch" in store.tables_problem(folder, NAMES)
    manifest = json.loads((folder / store.MANIFEST).read_text())
    manifest["tables"]["right"]["file"] = "../elsewhere.csv"
    (folder / store.MANIFEST).write_text(json.dumps(manifest))
    assert "unreadable" in store.tables_problem(folder, ["right"])
    with pytest.raises(ValueError, match="table_format"):
        store.write_tables(folder, _tables(), table_format="xlsx")
    with pytest.raises(ValueError, match="as Parquet"):
        store.write_tables(folder, {"left": pd.DataFrame({"a": [1 + 2j]})}, table_format="csv")
    store.write_tables(folder, {"left": pd.DataFrame({"a": pd.Categorical([3, 1])})}, table_format="csv")
    assert store.read_tables(folder, ["left"])[0]["a"].tolist() == [3, 1]  # a categorical's values


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


# --- crash safety: a swap cut short, concurrent writers, permissions -----------------------------


def _half_swapped(tmp_path: Path, new_complete: bool) -> Path:
    """The state a kill between the two renames of a swap leaves: no folder, an old and a new copy beside it."""
    folder = tmp_path / "cache" / "toy"
    store.write_tables(folder, _tables(), dataset="toy")
    store.write_tables(tmp_path / "staged", _tables(offset=10), dataset="toy")
    os.replace(folder, folder.with_name(".toy.old-abc123"))
    os.replace(tmp_path / "staged", folder.with_name(".toy.new-def456"))
    if not new_complete:
        (folder.with_name(".toy.new-def456") / store.MANIFEST).unlink()  # killed while staging
    return folder


@pytest.mark.parametrize("new_complete, first", [(True, 11), (False, 1)])
def test_recover_restores_a_verified_copy_and_cleans_up(tmp_path: Path, new_complete: bool, first: int) -> None:
    folder = _half_swapped(tmp_path, new_complete)
    store.recover(folder)
    assert store.tables_problem(folder, NAMES) is None
    assert store.read_tables(folder, NAMES)[0]["a"].tolist()[0] == first
    assert [p.name for p in folder.parent.iterdir()] == ["toy"]


def test_the_next_write_cleans_up_after_a_killed_one(tmp_path: Path) -> None:
    folder = _half_swapped(tmp_path, new_complete=False)
    store.write_tables(folder, _tables(offset=5), dataset="toy")
    assert store.read_tables(folder, NAMES)[0]["a"].tolist() == [6, 7]
    assert [p.name for p in folder.parent.iterdir()] == ["toy"]


def test_an_interrupt_between_the_renames_keeps_the_old_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "toy"
    store.write_tables(folder, _tables(), dataset="toy")
    real_replace, calls = os.replace, []

    def interrupted(source, target) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, target)
    monkeypatch.setattr(store.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_tables(folder, _tables(offset=10), dataset="toy")
    monkeypatch.undo()
    assert store.read_tables(folder, NAMES)[0]["a"].tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]


def test_concurrent_writers_all_succeed(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for _ in range(5):
                store.write_tables(folder, _tables(offset), dataset="toy")
        except BaseException as error:  # noqa: BLE001 (collected for the assertion below)
            errors.append(error)
    threads = [threading.Thread(target=write, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and store.tables_problem(folder, NAMES) is None
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]


def test_created_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        store.write_tables(tmp_path / "toy", _tables(), dataset="toy")
        store.copy_atomically(tmp_path / "toy" / store.MANIFEST, tmp_path / "copy.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "toy").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "toy" / store.MANIFEST).stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "copy.json").stat().st_mode) == 0o640


def _build_in_child(folders: list[str], log: str, go: str) -> None:
    """A second process: wait for the signal, then build the folders that are missing (sharing with the parent)."""
    import time as _time

    while not Path(go).exists():
        _time.sleep(0.01)

    def build(folder: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"child {folder.name}\n")
        _time.sleep(0.3)
        store.write_tables(folder, {"t": pd.DataFrame({"who": ["child"]})})

    store.build_missing([Path(f) for f in folders], lambda f: store.tables_problem(f, ("t",)) is None, build)


def test_two_processes_share_the_folders_they_both_need(tmp_path: Path) -> None:
    """Two processes that need the same six folders build each exactly once, both of them doing some."""
    import multiprocessing
    import time

    folders = [tmp_path / "runs" / f"run-{k}" for k in range(6)]
    log, go = tmp_path / "log.txt", tmp_path / "go"
    child = multiprocessing.get_context("spawn").Process(target=_build_in_child,
                                                          args=([str(f) for f in folders], str(log), str(go)))
    child.start()

    def build(folder: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"parent {folder.name}\n")
        time.sleep(0.3)
        store.write_tables(folder, {"t": pd.DataFrame({"who": ["parent"]})})

    go.touch()
    store.build_missing(folders, lambda f: store.tables_problem(f, ("t",)) is None, build)
    child.join(60)
    assert child.exitcode == 0
    built = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for _, name in built) == [f.name for f in folders]  # each folder built once
    assert {who for who, _ in built} == {"parent", "child"}  # and the work was shared
    for folder in folders:  # every folder complete, by whoever built it
        assert store.tables_problem(folder, ("t",)) is None


def test_a_claimed_folder_is_skipped_without_waiting_and_built_once_free(tmp_path: Path) -> None:
    """A folder whose claim another holder has is left for later; the builder waits only when nothing else is left."""
    busy, free = tmp_path / "busy", tmp_path / "free"
    order: list[str] = []
    holder = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.claimed(busy):
            holder.set()
            release.wait(10)
            store.write_tables(busy, {"t": pd.DataFrame({"x": [1]})})

    thread = threading.Thread(target=hold)
    thread.start()
    holder.wait(10)
    with store.claimed(busy, wait=False) as mine:
        assert mine is False  # held elsewhere: told at once

    def build(folder: Path) -> None:
        order.append(folder.name)
        if folder == free:
            release.set()  # the other holder finishes "busy" while this one builds "free"
        store.write_tables(folder, {"t": pd.DataFrame({"x": [2]})})

    store.build_missing([busy, free], lambda f: store.tables_problem(f, ("t",)) is None, build)
    thread.join(10)
    assert order == ["free"]  # "busy" was built by its holder, not a second time
