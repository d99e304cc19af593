"""Files on disk that are either complete and verified or not there: SHA-256 sums, atomic copies,
and folders of tables (Parquet, or CSV for results kept in git) guarded by a manifest of their sums.

A folder of tables is replaced under a lock on its parent folder (released by the system when its holder
dies) by two renames: the old folder to `.NAME.old-*`, the staged one (`.NAME.new-*`) to NAME. A process killed at
any point leaves NAME complete, or missing with a verified copy beside it; `recover` (run before every
write and by `datasets.fetch`) puts back the newest verified copy and removes the stale ones. Created files
and folders get the permissions the umask allows, as with `open` and `mkdir`. `build_missing` lets several
processes that need the same folders share their building, each folder built once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

try:
    import fcntl
except ImportError:  # not on Windows: writers are then not serialised
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLE_FORMATS = ("parquet", "csv")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Write a file through `write(temporary_path)` so that `target` is the old file or the complete new one."""
    target = Path(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())
    try:
        write(Path(temporary))
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def copy_atomically(source: Path, target: Path) -> None:
    """Copy a file so that `target` is either the old file or the complete new one."""
    write_atomically(target, lambda temporary: shutil.copyfile(source, temporary))


def write_tables(folder: Path, tables: Mapping[str, pd.DataFrame], *, table_format: str = "parquet",
                 **about: object) -> None:
    """Write tables (as Parquet or CSV) plus a manifest into a new folder and swap it in place of `folder`."""
    if table_format not in TABLE_FORMATS:
        raise ValueError(f"table_format must be one of {TABLE_FORMATS}, got {table_format!r}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        _recover_locked(folder)
        _write_and_swap(folder, tables, table_format, about)


def _write_and_swap(folder: Path, tables: Mapping[str, pd.DataFrame], table_format: str,
                    about: Mapping[str, object]) -> None:
    """Stage the tables and their manifest beside `folder`, then swap them in (the caller holds the lock)."""
    staging = _new_folder(folder, "new")
    try:
        entries = {}
        for name, frame in tables.items():
            path = staging / f"{name}.{table_format}"
            entry = {"file": path.name, "rows": len(frame)}
            if table_format == "csv":
                entry["dtypes"] = _write_csv(frame, path)
            else:
                frame.to_parquet(path, index=False)
            entries[name] = {**entry, "sha256": sha256_file(path)}
        manifest = {"format_version": FORMAT_VERSION, **about,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tables": entries}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_in(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_csv(frame: pd.DataFrame, path: Path) -> dict[str, str]:
    """Write a frame as CSV that reads back to equal values; returns its column types for the manifest."""
    dtypes = {}
    for column, dtype in frame.dtypes.items():
        dtype = dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype  # its values' type
        if not isinstance(column, str) or dtype.kind not in "biufOTM":
            raise ValueError(f"column {column!r} ({dtype}) cannot be stored as CSV; store this table as Parquet")
        dtypes[column] = "str" if dtype.kind in "OT" else str(dtype)
    frame.to_csv(path, index=False, na_rep="", lineterminator="\n")  # floats in repr: exact when read back
    return dtypes


def _read_csv(path: Path, dtypes: Mapping[str, str]) -> pd.DataFrame:
    """A CSV table written by `_write_csv`, with the column types its manifest records."""
    dates = [column for column, dtype in dtypes.items() if dtype.startswith("datetime64")]
    frame = pd.read_csv(path, dtype={c: d for c, d in dtypes.items() if c not in dates}, parse_dates=dates,
                        date_format="ISO8601", keep_default_na=False, na_values=[""])
    return frame.astype({column: dtypes[column] for column in dates})


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace `folder` by `staging`; the old folder survives a failed swap."""
    retired = _new_folder(folder, "old")
    try:
        if folder.exists():
            os.replace(folder, retired)
        try:
            os.replace(staging, folder)
        except BaseException:  # an interrupt too: the old folder goes back before `retired` is removed
            if retired.exists() and not folder.exists():
                os.replace(retired, folder)
            raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def recover(folder: Path) -> None:
    """Finish or undo a swap that a killed process left half done, and remove stale staging copies."""
    folder = Path(folder)
    if not folder.parent.is_dir() or not _stale_copies(folder):
        return
    with _locked(folder):
        _recover_locked(folder)


def _recover_locked(folder: Path) -> None:
    """`recover` for a caller holding the lock: every other writer's copy is then stale."""
    copies = sorted(_stale_copies(folder), key=lambda path: path.stat().st_mtime, reverse=True)
    if not folder.exists():
        complete = [copy for copy in copies if copy.is_dir() and _verifies(copy)]
        if complete:
            os.replace(complete[0], folder)
            copies.remove(complete[0])
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)


def _stale_copies(folder: Path) -> list[Path]:
    """The `.NAME.old-*` and `.NAME.new-*` folders beside `folder`."""
    return [path for kind in ("old", "new") for path in folder.parent.glob(f".{folder.name}.{kind}-*")]


def _verifies(folder: Path) -> bool:
    """Whether a folder holds a manifest whose every table is there with its recorded sum."""
    try:
        names = list(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["tables"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return tables_problem(folder, names) is None


def _locked(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on the folder holding `folder` for the duration of the block."""
    return directory_lock(folder.parent)


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on an existing directory for the duration of the block."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def claimed(folder: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the claim on building `folder` for the block; yields False (at once) if another holds it and not wait.

    The claim is an exclusive lock on the file `.NAME.claim` beside `folder`, released by the system when its
    holder dies, so two processes never build the same folder at the same time.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield True
        return
    descriptor = os.open(folder.parent / f".{folder.name}.claim", os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


def build_missing(folders: Sequence[Path], ready: Callable[[Path], bool], build: Callable[[Path], object]) -> None:
    """Build each folder that is not `ready`, sharing the work with other processes that need the same folders.

    A folder another process is building is left for later, so two processes that need the same folders build
    different ones; a process waits only when every folder it still needs is being built elsewhere.
    """
    left = list(folders)
    while left:
        for folder in left:
            with claimed(folder, wait=False) as mine:
                if mine:
                    recover(folder)  # a swap a killed process left half done, stale copies
                    if not ready(folder):
                        build(folder)
                    left.remove(folder)
                    break
        else:  # every folder left is being built by another process: wait for the first one
            with claimed(left[0]):
                pass


def _new_folder(folder: Path, kind: str) -> Path:
    """An empty `.NAME.<kind>-*` folder beside `folder`, with the permissions the umask allows."""
    created = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{kind}-", dir=folder.parent))
    os.chmod(created, 0o777 & ~_umask())
    return created


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def tables_problem(folder: Path, names: Sequence[str]) -> str | None:
    """Why a folder of tables cannot be used as is, or None when its manifest verifies."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not built yet"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        version = manifest["format_version"]
        entries = {name: _entry(manifest, name) for name in names}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST} unreadable ({type(error).__name__})"
    if version != FORMAT_VERSION:
        return f"format {version} (this version writes {FORMAT_VERSION})"
    for entry in entries.values():
        path = folder / entry["file"]
        if not path.is_file():
            return f"{path.name} missing"
        if sha256_file(path) != entry["sha256"]:
            return f"{path.name}: SHA-256 mismatch with {MANIFEST} (corrupt or edited)"
    return None


def _entry(manifest: Mapping, name: str) -> dict:
    """A table's manifest entry, its file name checked to be a plain name of a known format."""
    entry = dict(manifest["tables"][name])
    file, sha = entry.setdefault("file", f"{name}.parquet"), entry["sha256"]
    if not isinstance(sha, str) or file not in {f"{name}.{kind}" for kind in TABLE_FORMATS}:
        raise ValueError(f"table {name!r}: file {file!r} is not {name}.parquet or {name}.csv")
    return entry


def read_tables(folder: Path, names: Sequence[str]) -> list[pd.DataFrame]:
    """The named tables of a folder written by `write_tables` (checked with `tables_problem` by the caller)."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    frames = []
    for name in names:
        entry = _entry(manifest, name)
        path = Path(folder) / entry["file"]
        frames.append(_read_csv(path, entry["dtypes"]) if path.suffix == ".csv" else pd.read_parquet(path))
    return frames
