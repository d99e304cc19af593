"""Tuned settings in committed, human-readable TOML files: `configs/<dataset>-<view>.toml`, one table per model.

    [joint]
    n_trials = 30                  # the search's trial budget
    best_valid_ndcg_at_10 = 0.0871 # the best trial's validation NDCG@10
    seed = 0
    date = "2025-06-01"

    [joint.settings]               # constructor arguments of the model (experiments.registry.ModelSpec.build)
    dim = 128
    learning_rate = 0.00231

`xscene tune` (experiments.tuning) writes them; `run_experiment` builds each model listed with its settings.
A smoke-mode search writes `<dataset>-<view>-smoke.toml`, so a quick check never replaces tuned settings.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xscene_lib.data import store
from xscene_lib.data.validation import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_ENV = "XSCENE_CONFIGS"  # a folder of configs to use instead of the checkout's configs/
HEADER = ("# Tuned settings: one table per model, written by `xscene tune` (xscene_lib.experiments.tuning).\n"
          "# `run_experiment` and the book build each model listed here with its settings; edit by tuning again.\n")


def default_config_dir() -> Path:
    """Where configs live: $XSCENE_CONFIGS, else the checkout's configs/."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    return Path(__file__).resolve().parents[2] / "configs"  # xscene_lib/experiments/ -> the checkout


def config_path(dataset: str, view: str, *, smoke: bool = False, config_dir: str | Path | None = None) -> Path:
    """The config file of one dataset and scenario view (of smoke-mode searches with smoke=True)."""
    for name, value in (("dataset", dataset), ("view", view)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{name} must be a non-empty string naming the config, got {value!r}")
    folder = default_config_dir() if config_dir is None else Path(config_dir)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{view}")
    return folder / f"{stem}{'-smoke' if smoke else ''}.toml"


def read_config(dataset: str, view: str, *, smoke: bool = False, config_dir: str | Path | None = None
                ) -> dict[str, dict[str, Any]]:
    """The tuned settings of one dataset and view: model name -> {"settings": {...}, n_trials, seed, ...}."""
    return read_config_file(config_path(dataset, view, smoke=smoke, config_dir=config_dir))


def tuned_settings(dataset: str, view: str, *, config_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Model name -> the settings its search chose for this dataset and view; {} when it has no config."""
    path = config_path(dataset, view, config_dir=config_dir)
    return {model: table["settings"] for model, table in read_config_file(path).items()} if path.is_file() else {}


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The model tables of one config file; a DataError when it is missing or not a config."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no config {str(path)!r}; write it with `xscene tune` (one search per model)")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise DataError(f"config {str(path)!r} cannot be read as TOML ({error}); fix it or tune again") from error
    for model, table in config.items():
        if not isinstance(table, dict) or not isinstance(table.get("settings"), dict):
            raise DataError(f"config {str(path)!r}: [{model}] lacks a [{model}.settings] table of constructor "
                            f"arguments; fix it or tune again")
    return config


def write_config(path: str | Path, config: Mapping[str, Mapping[str, Any]], header: str = HEADER) -> None:
    """Write model tables (each with a `settings` table of plain values) as TOML, atomically, after `header`."""
    path = Path(path)
    lines = [header]
    for model, table in config.items():
        if not isinstance(table, Mapping) or not isinstance(table.get("settings"), Mapping):
            raise DataError(f"config table {model!r} must be a mapping with a `settings` mapping, got {table!r}")
        lines.append(f"[{_key(model)}]")
        lines += [f"{_key(name)} = {_value(value)}" for name, value in table.items() if name != "settings"]
        lines.append(f"\n[{_key(model)}.settings]")
        lines += [f"{_key(name)} = {_value(value)}" for name, value in table["settings"].items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_atomically(path, lambda temporary: temporary.write_text("\n".join(lines), encoding="utf-8"))


def _key(name: object) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)


def _value(value: object) -> str:
    """A TOML value of a bool, integer, float or string."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "nan"
        return repr(number) if math.isfinite(number) else ("-inf" if number < 0 else "inf")
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's basic-string escapes
    raise DataError(f"config values must be booleans, integers, floats or strings, got {value!r}")
