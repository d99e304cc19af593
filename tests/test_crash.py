"""Crash tests: processes killed (SIGKILL) at seeded random moments while they fetch a dataset or swap a table
folder; after each kill the next call must succeed and leave a verified result equal to the uninterrupted one,
with no stale staging copies. Bounded: a few kills per test, each test well under a minute."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import loading as datasets
from xscene_lib.data import store
from xscene_lib.text.cache import TextCacheWarning, VectorCache, text_hash
from tests.conftest import mirrors_holding

FETCH_KILLS = 8
SWAP_KILLS = 12
XSCENE = Path(sys.executable).with_name("xscene")


def _kill_at(command: list[str], env: dict[str, str], delay_s: float) -> bool:
    """Run a command and SIGKILL it after `delay_s`; whether it was still running (so really killed)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay_s)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def _stale(folder: Path) -> list[str]:
    """Staging copies of a table folder left beside it."""
    return sorted(p.name for p in folder.parent.glob(f".{folder.name}.*-*"))


def test_fetch_killed_at_random_moments_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not mirrors_holding("food_kitchen"):
        pytest.skip(f"set {datasets.MIRROR_ENV} to a folder holding food_kitchen/ (e.g. /work/shared/data)")
    sources = ("local", "mirror")
    started = time.monotonic()
    reference = datasets.fetch("food-kitchen", data_dir=tmp_path / "reference", sources=sources, verbose=False)
    full_s = time.monotonic() - started
    expected = store.read_tables(reference, datasets.TABLE_NAMES)
    rng = random.Random(14)
    killed = checked = 0
    data_dir = tmp_path / "data-0"
    for kill in range(FETCH_KILLS):
        if kill % 2 == 0:  # a first fetch into an empty folder; otherwise `--force` over a complete one
            data_dir = tmp_path / f"data-{kill}"
        env = {**os.environ, datasets.DATA_ENV: str(data_dir)}
        command = [str(XSCENE), "fetch", "food-kitchen", "--offline", *(["--force"] if kill % 2 else [])]
        killed += _kill_at(command, env, rng.uniform(0.5, 1.0 + 1.5 * full_s))
        cache = datasets.fetch("food-kitchen", data_dir=data_dir, sources=sources, verbose=False)
        assert store.tables_problem(cache, datasets.TABLE_NAMES) is None
        for got, want in zip(store.read_tables(cache, datasets.TABLE_NAMES), expected):
            pd.testing.assert_frame_equal(got, want)
        assert _stale(cache) == []
        checked += 1
    assert checked == FETCH_KILLS and killed >= FETCH_KILLS // 2  # most kills landed while it ran


SWAP_LOOP = """
import sys
import pandas as pd
from xscene_lib.data import store
tables = [{"left": pd.DataFrame({"a": range(k, k + 5000)}), "right": pd.DataFrame({"b": [str(k)] * 5000})}
          for k in (0, 1)]
print("ready", flush=True)
k = 0
while True:
    store.write_tables(sys.argv[1], tables[k % 2], dataset="loop")
    k += 1
"""


def test_table_swaps_killed_at_random_moments_leave_old_or_new(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "loop"
    rng = random.Random(4)
    states: set[int] = set()
    for _ in range(SWAP_KILLS):
        process = subprocess.Popen([sys.executable, "-c", SWAP_LOOP, str(folder)], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        store.recover(folder)
        if folder.exists():
            assert store.tables_problem(folder, ("left", "right")) is None
            left, right = store.read_tables(folder, ("left", "right"))
            first = int(left["a"].iloc[0])
            assert first in (0, 1) and right["b"].eq(str(first)).all() and len(left) == 5000
            states.add(first)
        assert _stale(folder) == []
    store.write_tables(folder, {"left": pd.DataFrame({"a": [7]}), "right": pd.DataFrame({"b": ["7"]})})
    assert store.tables_problem(folder, ("left", "right")) is None and _stale(folder) == []
    assert states  # at least one kill found a committed folder


def test_a_damaged_text_cache_shard_costs_only_its_vectors(tmp_path: Path) -> None:
    settings = {"model": "toy", "dim": 3}
    cache = VectorCache(tmp_path, settings)
    texts = [[f"first {i}" for i in range(4)], [f"second {i}" for i in range(5)]]
    for number, batch in enumerate(texts):
        cache.add([text_hash(t) for t in batch], np.full((len(batch), 3), number, dtype=np.float32))
    shards = sorted(cache.folder.glob("shard-*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    shards[0].write_bytes(shards[0].read_bytes()[:-20])  # damage the first shard only
    reopened = VectorCache(tmp_path, settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found, vectors = reopened.lookup([text_hash(t) for batch in texts for t in batch])
    assert [w.category for w in caught] == [TextCacheWarning]
    assert "dropping that shard's 4 vectors" in str(caught[0].message)
    assert found.tolist() == [False] * 4 + [True] * 5 and (vectors == 1).all()
    reopened.add([text_hash(t) for t in texts[0]], np.zeros((4, 3), dtype=np.float32))
    assert not shards[0].exists()
    assert VectorCache(tmp_path, settings).lookup([text_hash(t) for t in texts[0]])[0].all()
