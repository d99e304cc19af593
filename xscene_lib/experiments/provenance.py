"""What a result was computed with: package versions, the dataset's file sums, and peak memory of a block.

The experiment runner writes these into each results manifest; the book's reproducibility page shows the
versions of the run that produced it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import psutil

from xscene_lib.data import loading as datasets
from xscene_lib.data import store

RESULT_PACKAGES = ("xscene", "torch", "transformers", "numpy", "pandas", "scipy", "scikit-learn")


def package_versions(names: Sequence[str] = RESULT_PACKAGES) -> dict[str, str]:
    """The installed version of each named distribution ("not installed" where absent)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def dataset_files(name: str, data_dir: str | Path | None = None) -> dict:
    """The SHA-256 sums of a dataset's raw files, as recorded in its cache manifest ({} before a fetch)."""
    root = Path(data_dir) if data_dir is not None else datasets.default_data_dir()
    try:
        return json.loads((root / "cache" / name / store.MANIFEST).read_text())["raw_files"]
    except (OSError, ValueError, KeyError):
        return {}


class PeakMemory:
    """Peak resident memory above the starting level while the block runs, sampled every 50 ms (`peak_mib`)."""

    def __enter__(self) -> PeakMemory:
        self._process, self._stop = psutil.Process(), threading.Event()
        self._start = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mib = (self._peak - self._start) / 2**20
