"""Files on disk that are either complete and verified or not there: SHA-256 sums, atomic copies,
and folders of Parquet tables guarded by a manifest of their sums."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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
    try:
        write(Path(temporary))
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def copy_atomically(source: Path, target: Path) -> None:
    """Copy a file so that `target` is either the old file or the complete new one."""
    write_atomically(target, lambda temporary: shutil.copyfile(source, temporary))


def write_tables(folder: Path, tables: Mapping[str, pd.DataFrame], **about: object) -> None:
    """Write tables as Parquet plus a manifest into a new folder and swap it in place of `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        entries = {}
        for name, frame in tables.items():
            path = staging / f"{name}.parquet"
            frame.to_parquet(path, index=False)
            entries[name] = {"file": path.name, "rows": len(frame), "sha256": sha256_file(path)}
        manifest = {"format_version": FORMAT_VERSION, **about,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tables": entries}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_in(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace `folder` by `staging`; the old folder survives a failed swap."""
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    try:
        if folder.exists():
            os.replace(folder, retired)
        try:
            os.replace(staging, folder)
        except OSError:
            if retired.exists() and not folder.exists():
                os.replace(retired, folder)
            raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def tables_problem(folder: Path, names: Sequence[str]) -> str | None:
    """Why a folder of tables cannot be used as is, or None when its manifest verifies."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not built yet"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        version = manifest["format_version"]
        sums = {name: manifest["tables"][name]["sha256"] for name in names}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST} unreadable ({type(error).__name__})"
    if version != FORMAT_VERSION:
        return f"format {version} (this version writes {FORMAT_VERSION})"
    for name, expected in sums.items():
        path = folder / f"{name}.parquet"
        if not path.is_file():
            return f"{path.name} missing"
        if sha256_file(path) != expected:
            return f"{path.name}: SHA-256 mismatch with {MANIFEST} (corrupt or edited)"
    return None


def read_tables(folder: Path, names: Sequence[str]) -> list[pd.DataFrame]:
    """The named Parquet tables of a folder written by `write_tables`."""
    return [pd.read_parquet(Path(folder) / f"{name}.parquet") for name in names]
