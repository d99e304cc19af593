"""Each chapter's key numbers: recorded by its notebook, collected from the executed copies, checked against a record.

A notebook's last cell passes its ``key_numbers`` dict to `record_key_numbers`, saying beside each figure how
far it may move (`tolerances`) and which figures a smoke run reproduces exactly as a full run does
(`same_in_smoke`: counts of the full dataset, say). The record travels in the executed notebook as a hidden
glued output; `collect_key_numbers` reads it back from every executed copy, and `compare_key_numbers` names
each figure that drifted from the book's record (book/key_numbers.json, written by a full run) beyond its
tolerance. A smoke run compares only the figures marked ``smoke`` in the record.

A tolerance is ``"exact"``, ``"abs X"`` (|new - recorded| <= X), ``"rel X"`` (<= X * |recorded|) or
``"not checked"`` (wall times: kept for the reader, never compared). Unstated, a figure holding a float is
checked to ``"abs 0.01"`` (metrics), any other (counts, names, verdicts) exactly. Texts and flags inside
a figure are always compared exactly, and dicts and lists must keep their keys and lengths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xscene_lib.data.store import write_atomically
from xscene_lib.data.validation import DataError, check_number

GLUE_NAME = "key_numbers"
EXACT, NOT_CHECKED, FLOAT_DEFAULT = "exact", "not checked", "abs 0.01"
TOLERANCE_FORMS = "a tolerance is 'exact', 'abs X', 'rel X' (X >= 0) or None (not checked)"
KEY_NUMBERS_FILE = "key_numbers.json"


def _plain(value: object) -> object:
    """numpy scalars and arrays as the JSON types they hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise DataError(f"key numbers must be numbers, texts, flags, lists or dicts of them; got {type(value).__name__}"
                    f" {value!r}: convert it (int(...), float(...), str(...)) before recording")


def _has_float(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


def parse_tolerance(tolerance: str | None) -> tuple[str, float]:
    """A tolerance as (kind, bound): ("exact", 0), ("abs", X), ("rel", X) or ("not checked", 0); None is not checked."""
    if tolerance is None or tolerance == NOT_CHECKED:
        return NOT_CHECKED, 0.0
    if tolerance == EXACT:
        return EXACT, 0.0
    kind, _, bound = str(tolerance).partition(" ")
    if kind not in ("abs", "rel"):
        raise DataError(f"{TOLERANCE_FORMS}, got {tolerance!r}")
    value: float | str
    try:
        value = float(bound)
    except ValueError:
        value = bound  # not a number: check_number says so, showing the text
    check_number(None, f"X of tolerance {tolerance!r}", value, minimum=0, hint=TOLERANCE_FORMS)
    return kind, float(value)


class _Json(str):
    """The glued record as JSON text: it shows as itself, so the executed notebook keeps JSON, not a repr."""

    def __repr__(self) -> str:
        return str(self)


def record_key_numbers(numbers: Mapping[str, object], tolerances: Mapping[str, str | None] | None = None,
                       same_in_smoke: Sequence[str] = ()) -> None:
    """Record a chapter's key numbers with their tolerances for the book's check (a hidden output) and print them."""
    if not isinstance(numbers, Mapping) or not all(isinstance(key, str) for key in numbers):
        raise DataError(f"numbers must be a dict with text keys, got {type(numbers).__name__}")
    values = json.loads(json.dumps(dict(numbers), default=_plain, allow_nan=True))
    tolerances = dict(tolerances or {})
    unknown = sorted(key for key in [*tolerances, *same_in_smoke] if key not in values)
    if unknown:
        raise DataError(f"tolerances/same_in_smoke name {unknown}, which are not key numbers ({sorted(values)})")
    for tolerance in tolerances.values():
        parse_tolerance(tolerance)
    record = {key: {"value": value,
                    "tolerance": (tolerances[key] or NOT_CHECKED) if key in tolerances
                    else FLOAT_DEFAULT if _has_float(value) else EXACT,
                    "smoke": key in same_in_smoke} for key, value in values.items()}
    from myst_nb import glue

    glue(GLUE_NAME, _Json(json.dumps(record, ensure_ascii=False)), display=False)
    print(json.dumps(values, ensure_ascii=False))


def collect_key_numbers(executed: Sequence[str | Path]) -> dict[str, dict]:
    """The recorded key numbers of each executed notebook, by notebook name; a notebook without any is left out."""
    found: dict[str, dict] = {}
    for path in map(Path, executed):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for output in cell.get("outputs", []):
                if output.get("metadata", {}).get("scrapbook", {}).get("name") == GLUE_NAME:
                    text = next(value for mime, value in output["data"].items() if mime.endswith("text/plain"))
                    found[path.stem] = json.loads("".join(text))
    return found


def save_key_numbers(executed: Sequence[str | Path], path: str | Path, smoke: bool) -> dict[str, dict]:
    """Collect the executed notebooks' key numbers and write them, with the run's mode, to `path`; return them."""
    found = collect_key_numbers(executed)
    text = json.dumps({"mode": "smoke" if smoke else "full", "notebooks": found}, indent=1, ensure_ascii=False)
    write_atomically(Path(path), lambda target: target.write_text(text + "\n", encoding="utf-8"))
    return found


def _differences(path: str, recorded: object, new: object, kind: str, bound: float) -> list[str]:
    """Where `new` differs from `recorded` beyond the tolerance, as "path: recorded R, now N" lines."""
    if isinstance(recorded, dict) and isinstance(new, dict):
        lines = [f"{path}[{key!r}]: recorded {recorded[key]!r}, now missing" for key in recorded if key not in new]
        lines += [f"{path}[{key!r}]: not recorded, now {new[key]!r}" for key in new if key not in recorded]
        for key in recorded.keys() & new.keys():
            lines += _differences(f"{path}[{key!r}]", recorded[key], new[key], kind, bound)
        return lines
    if isinstance(recorded, list) and isinstance(new, list) and len(recorded) == len(new):
        return [line for index, (r, n) in enumerate(zip(recorded, new))
                for line in _differences(f"{path}[{index}]", r, n, kind, bound)]
    numbers = all(type(v) in (int, float) for v in (recorded, new))  # JSON values: a flag's type is bool, not int
    if numbers and kind != EXACT:
        allowed = bound if kind == "abs" else bound * abs(recorded)
        same = abs(new - recorded) <= allowed or (math.isnan(recorded) and math.isnan(new))
    else:
        same = recorded == new or (numbers and math.isnan(recorded) and math.isnan(new))
    return [] if same else [f"{path}: recorded {recorded!r}, now {new!r}"]


def compare_key_numbers(recorded: Mapping[str, dict], found: Mapping[str, dict], smoke: bool) -> list[str]:
    """Each figure of `found` (by notebook) that drifted from `recorded` beyond the recorded tolerance, named.

    A full run (`smoke` False) must reproduce every recorded notebook and figure and add none; a smoke run
    compares only the figures the record marks ``smoke``.
    """
    problems = [] if smoke else [f"{name}: notebook not in the record" for name in found if name not in recorded]
    for name, figures in recorded.items():
        new = found.get(name)
        if new is None:
            problems.append(f"{name}: no key numbers in this run (recorded: {sorted(figures)})")
            continue
        if not smoke:
            problems += [f"{name}: {key}: not recorded, now {new[key]['value']!r}" for key in new if key not in figures]
        for key, figure in figures.items():
            if smoke and not figure.get("smoke"):
                continue
            kind, bound = parse_tolerance(figure["tolerance"])
            if key not in new:
                problems.append(f"{name}: {key}: recorded {figure['value']!r}, now missing")
            elif kind != NOT_CHECKED:
                problems += [f"{name}: {line} (tolerance {figure['tolerance']})"
                             for line in _differences(key, figure["value"], new[key]["value"], kind, bound)]
    return problems


def check_key_numbers(found: Mapping[str, dict], record: str | Path, smoke: bool, written: str | Path) -> str:
    """Compare a run's key numbers with the `record` file; a full run without one writes it. Returns what was done.

    Raises `DataError` listing every drifted figure (notebook, key, recorded and new value); `written` is the
    file holding this run's numbers, which replaces the record when a change is intended.
    """
    record = Path(record)
    if not record.exists():
        if smoke:
            return f"key numbers not checked: no record at {record} yet (a full `make book` writes it)"
        text = json.dumps({"mode": "full", "notebooks": dict(found)}, indent=1, ensure_ascii=False) + "\n"
        write_atomically(record, lambda path: path.write_text(text, encoding="utf-8"))
        return f"key numbers not checked: there was no record; this full run's are now the record, {record}"
    recorded = json.loads(record.read_text(encoding="utf-8"))
    if recorded.get("mode") != "full":
        raise DataError(f"{record} holds mode {recorded.get('mode')!r}; the record must come from a full run")
    problems = compare_key_numbers(recorded["notebooks"], found, smoke)
    if problems:
        raise DataError(f"{len(problems)} key number(s) drifted from {record} ({'smoke' if smoke else 'full'} run):\n  "
                        + "\n  ".join(problems) + f"\nif the change is intended, copy {written} over {record}"
                        + (" after a full run" if smoke else ""))
    compared = "the figures marked smoke" if smoke else "all figures"
    return f"key numbers match {record} ({compared}, within their tolerances)"
