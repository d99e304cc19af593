"""The on-disk cache of text vectors: one folder per encoder settings, holding verified shards that map
a text's SHA-256 to its vector, so that encoding new items only encodes what is new.

Layout of one settings folder (its name is a hash of the settings):

    settings.json     the settings the vectors were made with (model, weights fingerprint, pooling, ...)
    manifest.json     the committed shards with their row counts and SHA-256 sums, the vector size
    shard-*.parquet   columns text_hash (string) and vector (fixed-size list of float32)

Every file is written to a temporary name and moved into place; the manifest is the commit point, so a
shard it does not list is ignored. Writers hold a lock on the folder; after each commit, and when a reader
finds them, files the manifest does not list (retired or damaged shards, a killed writer's temporaries) are
removed. A folder whose settings or manifest fail their checks is reported in one
warning and rebuilt; a damaged shard is reported and only its vectors are dropped (encoded again when needed).

Sharded encoding (`xscene encode --shards N`): N processes each encode a contiguous share of the new texts
and write it as a part file (`write_part`, atomically) into a parts folder; `merge_parts` then checks that
the N parts are all there, from the same job, and adds their vectors to the cache in one shard, in the order
a single process would have written them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xscene_lib.data.store import directory_lock, sha256_file, write_atomically
from xscene_lib.data.validation import DataError

FORMAT_VERSION = 1
SETTINGS_FILE = "settings.json"
MANIFEST = "manifest.json"
MAX_SHARDS = 16  # more shards than this are merged into one on the next write


class PartsError(RuntimeError):
    """The parts of a sharded encoding do not make one whole; the message says what is wrong and what to do."""


class TextCacheWarning(UserWarning):
    """A text cache folder was corrupt or foreign and is being rebuilt."""


class _Unusable(Exception):
    """A cache folder that must not be read; the message says why."""


def text_hash(text: str) -> str:
    """The SHA-256 of a text's UTF-8 bytes, as hex: the cache key of its vector."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_key(settings: Mapping[str, object]) -> str:
    """The folder name of a settings mapping: a short hash of its canonical JSON."""
    canonical = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


class VectorCache:
    """Vectors stored under one settings key; read whole and verified on first use, grown shard by shard."""

    def __init__(self, root: Path, settings: Mapping[str, object]) -> None:
        self.settings = json.loads(json.dumps({"format_version": FORMAT_VERSION, **settings}, sort_keys=True))
        self.folder = Path(root) / settings_key(self.settings)
        self._index: dict[str, int] | None = None  # text hash -> row of self._vectors
        self._vectors = np.zeros((0, 0), dtype=np.float32)  # (N, d)
        self._shards: list[dict[str, object]] = []

    def lookup(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Which hashes are cached and their vectors; shape: found (n,) bool, vectors (n_found, d)."""
        index = self._loaded()
        rows = np.array([index.get(h, -1) for h in hashes], dtype=np.int64)  # (n,)
        found = rows >= 0
        return found, self._vectors[rows[found]]

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store new vectors as one more shard (or merge all shards when there are too many)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
        if len(hashes) != len(vectors) or vectors.ndim != 2:
            raise DataError(f"add() needs one vector per hash, got {len(hashes)} hashes and shape {vectors.shape}")
        index = self._loaded()
        if index and self._vectors.shape[1] != vectors.shape[1]:
            self._rebuild(f"holds {self._vectors.shape[1]}-d vectors, the encoder makes {vectors.shape[1]}-d")
            index = self._loaded()
        fresh: list[int] = []  # positions in `hashes` of vectors not cached yet
        for position, h in enumerate(hashes):
            if h not in index:
                index[h] = len(self._vectors) + len(fresh)
                fresh.append(position)
        if not fresh:
            return
        self._vectors = np.concatenate([self._vectors.reshape(-1, vectors.shape[1]), vectors[fresh]])  # (N, d)
        self.folder.mkdir(parents=True, exist_ok=True)
        with directory_lock(self.folder):
            if not (self.folder / SETTINGS_FILE).is_file():
                write_atomically(self.folder / SETTINGS_FILE, lambda path: path.write_text(
                    json.dumps(self.settings, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
            if len(self._shards) < MAX_SHARDS:
                shard = self._write_shard([hashes[i] for i in fresh], vectors[fresh])
            else:
                self._vectors = self._vectors[list(index.values())]
                self._index = {h: row for row, h in enumerate(index)}
                self._shards, shard = [], self._write_shard(list(self._index), self._vectors)
            self._shards.append(shard)
            manifest = {"format_version": FORMAT_VERSION, "dim": int(self._vectors.shape[1]), "dtype": "float32",
                        "shards": self._shards}
            write_atomically(self.folder / MANIFEST, lambda path: path.write_text(
                json.dumps(manifest, indent=2) + "\n", encoding="utf-8"))
            self._remove_unlisted()

    # --- reading and checking ---------------------------------------------------------------

    def _loaded(self) -> dict[str, int]:
        """The hash index, reading and verifying the folder on first use (rebuilding it when unusable)."""
        if self._index is None:
            try:
                self._read()
            except _Unusable as problem:
                self._rebuild(str(problem))
            if self._unlisted():
                with directory_lock(self.folder):
                    self._remove_unlisted()
        assert self._index is not None
        return self._index

    def _unlisted(self) -> list[Path]:
        """Files in the folder that the committed manifest does not list (stale once no writer runs)."""
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
            listed = {SETTINGS_FILE, MANIFEST, *(str(shard["file"]) for shard in manifest["shards"])}
        except (OSError, ValueError, KeyError, TypeError):
            return []  # nothing committed (or unreadable: _read rebuilds it); leave the folder alone
        return [path for path in self.folder.iterdir() if path.name not in listed and path.is_file()]

    def _remove_unlisted(self) -> None:
        """Remove retired or damaged shards and a killed writer's temporaries; the caller holds the lock."""
        for path in self._unlisted():
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a read-only cache keeps them; readers ignore them
                pass

    def _read(self) -> None:
        """Load every committed shard; raise _Unusable for a foreign or corrupt folder."""
        self._index, self._vectors, self._shards = {}, np.zeros((0, 0), dtype=np.float32), []
        if not (self.folder / MANIFEST).is_file():
            if (self.folder / SETTINGS_FILE).is_file():
                self._check_settings()
            return  # nothing committed yet
        self._check_settings()
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
            version, dim, dtype = manifest["format_version"], int(manifest["dim"]), manifest["dtype"]
            shards = [{"file": str(s["file"]), "rows": int(s["rows"]), "sha256": str(s["sha256"])}
                      for s in manifest["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise _Unusable(f"{MANIFEST} unreadable ({type(error).__name__})") from error
        if version != FORMAT_VERSION or dtype != "float32" or dim < 1:
            raise _Unusable(f"{MANIFEST} says format {version}, dtype {dtype}, dim {dim} "
                            f"(this version writes format {FORMAT_VERSION}, float32)")
        parts, kept = [], []
        for shard in shards:
            try:
                parts.append(_read_shard(self.folder, shard, dim))
                kept.append(shard)
            except _Unusable as problem:  # costs only this shard's vectors: they are encoded again
                warnings.warn(f"text cache {self.folder}: {problem}; dropping that shard's {shard['rows']:,} "
                              f"vectors", TextCacheWarning, stacklevel=5)
        hashes = [h for part_hashes, _ in parts for h in part_hashes]
        vectors = np.concatenate([v for _, v in parts]) if parts else np.zeros((0, dim), np.float32)  # (N, d)
        self._index = {}
        for row, h in enumerate(hashes):
            self._index.setdefault(h, row)
        self._vectors, self._shards = vectors, kept

    def _check_settings(self) -> None:
        """Raise _Unusable unless settings.json holds exactly this cache's settings."""
        try:
            stored = json.loads((self.folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise _Unusable(f"{SETTINGS_FILE} missing or unreadable ({type(error).__name__})") from error
        if stored != self.settings:
            changed = sorted(k for k in {*stored, *self.settings} if stored.get(k) != self.settings.get(k))
            raise _Unusable(f"{SETTINGS_FILE} belongs to other settings (differs in {', '.join(changed)})")

    def _rebuild(self, problem: str) -> None:
        """Report why the folder is unusable in one line, remove it and start empty."""
        warnings.warn(f"text cache {self.folder}: {problem}; rebuilding it", TextCacheWarning, stacklevel=4)
        if self.folder.exists():
            retired = self.folder.with_name(f".{self.folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.folder, retired)
            shutil.rmtree(retired, ignore_errors=True)
        self._index, self._vectors, self._shards = {}, np.zeros((0, 0), dtype=np.float32), []

    def _write_shard(self, hashes: Sequence[str], vectors: np.ndarray) -> dict[str, object]:
        """Write one shard atomically and return its manifest entry."""
        dim = vectors.shape[1]
        table = pa.table({"text_hash": pa.array(hashes, type=pa.string()),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)})
        path = self.folder / f"shard-{uuid.uuid4().hex[:16]}.parquet"
        write_atomically(path, lambda temporary: pq.write_table(table, temporary))
        return {"file": path.name, "rows": len(hashes), "sha256": sha256_file(path)}


def _read_shard(folder: Path, shard: Mapping[str, object], dim: int) -> tuple[list[str], np.ndarray]:
    """The hashes and vectors of one verified shard; shape: vectors (rows, dim)."""
    path = folder / str(shard["file"])
    if not path.is_file():
        raise _Unusable(f"{path.name} missing")
    if sha256_file(path) != shard["sha256"]:
        raise _Unusable(f"{path.name}: SHA-256 mismatch with {MANIFEST} (corrupt or edited)")
    try:
        table = pq.read_table(path)
        column_type = table.schema.field("vector").type
        hashes = table.column("text_hash").to_pylist()
    except (OSError, KeyError, pa.ArrowException) as error:
        raise _Unusable(f"{path.name} unreadable ({type(error).__name__})") from error
    if (not isinstance(column_type, pa.FixedSizeListType) or column_type.value_type != pa.float32()
            or column_type.list_size != dim):
        raise _Unusable(f"{path.name} holds {column_type}, expected {dim} float32 values per vector")
    vectors = table.column("vector").combine_chunks()
    if len(hashes) != shard["rows"] or vectors.null_count or vectors.flatten().null_count:
        raise _Unusable(f"{path.name}: {len(hashes)} rows, some missing (manifest says {shard['rows']})")
    return hashes, vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


# --- sharded encoding: parts written by several processes, merged into the cache ----------------------


def part_name(shard: int, n_shards: int) -> str:
    """The file name of part `shard` (0-based) of a job of n_shards parts."""
    return f"part-{shard:04d}-of-{n_shards:04d}.parquet"


def write_part(folder: Path, shard: int, n_shards: int, cache: VectorCache, hashes: Sequence[str],
               vectors: np.ndarray) -> Path:
    """Write one process's share of a sharded encoding, atomically; shape: vectors (len(hashes), d)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
    table = pa.table({"text_hash": pa.array(list(hashes), type=pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])})
    about = {"shard": shard, "n_shards": n_shards, "settings": cache.folder.name}
    table = table.replace_schema_metadata({"xscene_part": json.dumps(about)})
    path = Path(folder) / part_name(shard, n_shards)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temporary: pq.write_table(table, temporary))
    return path


def merge_parts(folder: Path, n_shards: int, cache: VectorCache, hashes: Sequence[str]) -> None:
    """Add the vectors of the n_shards parts in `folder` to `cache`, in the order of `hashes`."""
    folder = Path(folder)
    vectors: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path)
        about = json.loads((table.schema.metadata or {}).get(b"xscene_part", b"{}"))
        if about.get("n_shards") != n_shards:
            raise PartsError(f"{path} was written by a job of {about.get('n_shards')} processes, not {n_shards} "
                             f"(world size mismatch); delete {folder} and encode again with one --shards value")
        if about.get("settings") != cache.folder.name:
            raise PartsError(f"{path} holds vectors of other encoder settings; delete {folder} and encode again")
        rows = table.column("vector").combine_chunks()
        values = rows.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), -1)  # (rows, d)
        vectors.update(zip(table.column("text_hash").to_pylist(), values))
    missing = [shard for shard in range(n_shards) if not (folder / part_name(shard, n_shards)).is_file()]
    if missing:
        raise PartsError(f"part(s) {missing} of {n_shards} are missing in {folder}: the process(es) encoding them "
                         f"did not finish; run the sharded encoding again")
    absent = [h for h in hashes if h not in vectors]
    if absent:
        raise PartsError(f"the parts in {folder} lack {len(absent)} of the {len(hashes)} texts to merge; they "
                         f"belong to another job: delete {folder} and encode again")
    if hashes:
        cache.add(list(hashes), np.stack([vectors[h] for h in hashes]))  # (n, d)
