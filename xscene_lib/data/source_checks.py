"""The checks a source's raw files and parsed tables must pass before they are cached: checksums (SHA-256 or
those pinned by others), ids and links, the published counts, the text encoding and `Dataset.from_frames`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import xscene_lib.data.store as store
from xscene_lib.data.dataset import Dataset
from xscene_lib.data.formats import RawFormat, Tables
from xscene_lib.data.registry import DatasetSpec, Pin
from xscene_lib.data.scenarios import assign_scenarios
from xscene_lib.data.validation import DataError


class SourceFailed(Exception):
    """One source could not provide usable files; `bad` marks files that were there but unusable."""

    def __init__(self, reason: str, bad: bool = False) -> None:
        super().__init__(reason)
        self.bad = bad



def check_pins(path: Path, pins: Sequence[Pin]) -> None:
    """SourceFailed unless the file has every checksum pinned for it."""
    for pin in pins:
        digest = hashlib.new(pin.algorithm)
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != pin.hexdigest:
            raise SourceFailed(f"{path.name} from {show(path)}: {pin.algorithm.upper()} mismatch (expected "
                                f"{pin.hexdigest} as pinned by {pin.source}, got {digest.hexdigest()}): an edited, "
                                f"re-packed or damaged copy", bad=True)


def check_sum(path: Path, expected: str | None) -> str:
    """The SHA-256 of a file; SourceFailed when it differs from the expected one."""
    actual = store.sha256_file(path)
    if expected is not None and actual != expected:
        raise SourceFailed(f"{path.name} from {show(path)}: SHA-256 mismatch "
                            f"(expected {expected}, got {actual})", bad=True)
    return actual


def _counts(tables: Tables) -> dict[str, int]:
    """The counts that are compared with the published ones."""
    interactions, items, users = tables
    counts = {"interactions": len(interactions), "users": len(users), "items": len(items),
              "rated items": interactions["item_id"].nunique()}
    if "domain" in items.columns:
        counts.update({f"{domain} items": int(n) for domain, n in items["domain"].value_counts().items()})
    if "split" in interactions.columns:
        for split in ("valid", "test"):
            counts[f"{split} users"] = interactions.loc[interactions["split"] == split, "user_id"].nunique()
    return counts


def check_tables(spec: DatasetSpec, tables: Tables, folder: Path) -> None:
    """Check the parsed tables' ids, links and counts; SourceFailed says what is off."""
    interactions, items, users = tables
    problems = [f"{what} repeat" for what, column in (("item ids", items["item_id"]), ("user ids", users["user_id"]))
                if column.duplicated().any()]
    problems += [f"interactions name {what} missing from the {what.split()[0]} table"
                 for what, ids, known in (("items", interactions["item_id"], items["item_id"]),
                                          ("users", interactions["user_id"], users["user_id"]))
                 if not ids.isin(known).all()]
    if (items["text"].str.strip() == "").any():
        problems.append("an item has empty text")
    counts = _counts(tables)
    problems += [f"{key} {counts.get(key, 0):,} (published: {value:,})"
                 for key, value in spec.expected.items() if counts.get(key) != value]
    if problems:
        raise SourceFailed(f"files from {show(folder)} do not match the published dataset: "
                            f"{'; '.join(problems)}", bad=True)


def check_encoding(spec: DatasetSpec, raw_format: RawFormat, tables: Tables, folder: Path) -> None:
    """SourceFailed when item texts read as latin-1 are really UTF-8 (mojibake such as "MisÃ©rables")."""
    if not spec.latin1_files.intersection(raw_format.files):
        return
    garbled = [text for text in tables.items["text"] if _is_mojibake(text)]
    if garbled:
        raise SourceFailed(f"{', '.join(raw_format.files)} from {show(folder)}: {len(garbled):,} item text(s) "
                            f"are UTF-8 where the published files are latin-1, e.g. {garbled[0][:60]!r} (a re-encoded "
                            f"copy; use the original GroupLens zip)", bad=True)


def _is_mojibake(text: str) -> bool:
    """Whether a text decoded as latin-1 reads as valid UTF-8 with non-ASCII characters."""
    if text.isascii():
        return False
    try:
        text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return False
    return True


def check_dataset(spec: DatasetSpec, tables: Tables, folder: Path) -> None:
    """SourceFailed unless the tables pass `Dataset.from_frames`, as `load` will build them."""
    interactions, items, users = tables
    try:
        scenario = assign_scenarios(spec.name, spec.default_view, interactions, items, users)
        Dataset.from_frames(interactions.assign(scenario=scenario), items, users, name=spec.name,
                            view=spec.default_view)
    except DataError as error:
        raise SourceFailed(f"files from {show(folder)} fail the dataset checks: {error}", bad=True) from None



def show(path: Path) -> str:
    """A path relative to the current folder when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
