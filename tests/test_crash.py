"""Crash tests: processes killed (SIGKILL) at seeded random moments while they fetch a dataset, swap a table
folder, run experiments (`xscene run`) or encode texts into the text cache; after each kill the next call must
succeed and leave a verified result equal to the uninterrupted one, with no stale staging copies. Bounded: a few
kills per test, each test well under a minute."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import loading as datasets
from xscene_lib.data import store
from xscene_lib.data.synthetic import synthetic
from xscene_lib.text.cache import TextCacheWarning, VectorCache, text_hash
from xscene_lib.text.encoder import TextEncoder
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
    reference = datasets.fetch("food-kitchen", data_dir=tmp_path / "reference", sources=sources, verbose=False)
    expected = store.read_tables(reference, datasets.TABLE_NAMES)
    started = time.monotonic()  # an uninterrupted fetch as the command runs it: start-up and imports included
    subprocess.run([str(XSCENE), "fetch", "food-kitchen", "--offline"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, datasets.DATA_ENV: str(tmp_path / "timed")})
    full_s = time.monotonic() - started
    rng = random.Random(14)
    killed = checked = 0
    data_dir = tmp_path / "data-0"
    for kill in range(FETCH_KILLS):
        if kill % 2 == 0:  # a first fetch into an empty folder; otherwise `--force` over a complete one
            data_dir = tmp_path / f"data-{kill}"
        env = {**os.environ, datasets.DATA_ENV: str(data_dir)}
        command = [str(XSCENE), "fetch", "food-kitchen", "--offline", *(["--force"] if kill % 2 else [])]
        killed += _kill_at(command, env, rng.uniform(0.1, 0.9) * full_s)  # inside the command's run time
        cache = datasets.fetch("food-kitchen", data_dir=data_dir, sources=sources, verbose=False)
        assert store.tables_problem(cache, datasets.TABLE_NAMES) is None
        for got, want in zip(store.read_tables(cache, datasets.TABLE_NAMES), expected):
            pd.testing.assert_frame_equal(got, want)
        assert _stale(cache) == []
        checked += 1
    assert checked == FETCH_KILLS and killed >= 2  # kills that landed while it ran (load varies the timing)


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


# --- `xscene run` and text encoding, killed at random moments ------------------------------------------------------
# Each job is a fork of one server process that has imported the library once, so a kill costs the job's own time
# rather than the seconds torch and the models take to import; the job runs `cli.main` (or an encoding script)
# exactly as a fresh process would. The server kills its child itself, so no reaped process id is ever signalled.
RUN_KILLS = 8
ENCODE_KILLS = 6
ENCODE_TEXTS = 120
ENCODE_CHUNK = 7  # one encode() call, hence one committed shard, per chunk: more chunks than cache.MAX_SHARDS
TIMING_COLUMNS = ["fit_seconds", "peak_mib", "run_seconds"]
RUN_TABLES = ("per_row", "summary")

JOB_SERVER = """
import json, os, signal, sys, time
import numpy as np
import xscene_lib.cli as cli
import xscene_lib.experiments.runner  # what `xscene run` imports, imported once: every job is a fork
import transformers
transformers.AutoModel, transformers.AutoTokenizer, transformers.BertModel, transformers.BertTokenizerFast  # imported
from xscene_lib.text.encoder import TextEncoder

def encode(cache_dir, texts, chunk, out):
    encoder = TextEncoder(cache_dir=cache_dir, num_threads=1, show_progress=False)
    for start in range(0, len(texts), chunk):  # one commit to the cache per chunk
        encoder.encode(texts[start:start + chunk])
    if out:
        np.save(out, encoder.encode(texts))

print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1), os.dup2(quiet, 2)
        try:
            code = cli.main(job["argv"]) if "argv" in job else encode(**job["encode"])
        except SystemExit as stop:
            code = stop.code
        except BaseException:
            code = 1
        os._exit(code if isinstance(code, int) else 0)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            killed = False
            break
        if job["kill_after"] is not None and time.monotonic() - started >= job["kill_after"]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed, status = True, 0
            break
        time.sleep(0.002)
    print(json.dumps({"killed": killed, "code": None if killed else os.waitstatus_to_exitcode(status),
                      "seconds": time.monotonic() - started}), flush=True)
"""


class _Jobs:
    """A server process that forks one job per request and SIGKILLs it after a delay (None: let it finish)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", JOB_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self._reply() == "ready"

    def _reply(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def run(self, kill_after: float | None, **job: object) -> dict:
        """Run one job: {"killed": whether it was still running when killed, "code": its exit code, "seconds"}."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({**job, "kill_after": kill_after}) + "\n")
        self.process.stdin.flush()
        return json.loads(self._reply())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def jobs() -> Iterator[_Jobs]:
    server = _Jobs()
    yield server
    server.close()


def _run_argv(frames: Path, output: Path, data_dir: Path) -> list[str]:
    return ["run", "--frames", str(frames), "--models", "popularity", "itemknn", "bpr", "--seeds", "2", "--smoke",
            "--output", str(output), "--data-dir", str(data_dir)]


def _results(folder: Path) -> pd.DataFrame:
    """The results table of a finished run (Parquet and CSV must agree), without its timings."""
    assert store.tables_problem(folder / "table", ("results",)) is None
    (table,) = store.read_tables(folder / "table", ("results",))
    pd.testing.assert_frame_equal(pd.read_csv(folder / "results.csv"), table, check_dtype=False)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["models"] == sorted(table["model"].unique()) and manifest["seeds"] == [0, 1]
    return table.drop(columns=TIMING_COLUMNS)


def _run_folders(runs: Path) -> dict[str, bytes | None]:
    """Each (model, seed) folder of a runs/ folder: its manifest's bytes when it verifies, else None."""
    if not runs.is_dir():
        return {}
    return {p.name: (p / store.MANIFEST).read_bytes() if store.tables_problem(p, RUN_TABLES) is None else None
            for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_run_killed_at_random_moments_resumes_to_the_same_results(tmp_path: Path, jobs: _Jobs) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    data, _ = synthetic(n_users=120, n_items=80, seed=3)
    data.interactions.to_parquet(frames / "interactions.parquet")
    data.items.to_parquet(frames / "items.parquet")
    reference = jobs.run(None, argv=_run_argv(frames, tmp_path / "reference", tmp_path / "data"))
    assert reference["code"] == 0
    (expected_folder,) = (tmp_path / "reference").iterdir()
    expected = _results(expected_folder)
    assert len(expected) == 3 * 2 * (len(data.scenarios) + 1)  # models x seeds x (scenarios and "all")
    again = jobs.run(None, argv=_run_argv(frames, tmp_path / "again", tmp_path / "data"))  # timed warm
    pd.testing.assert_frame_equal(_results(tmp_path / "again" / expected_folder.name), expected)
    full_s = min(reference["seconds"], again["seconds"])
    rng = random.Random(5)
    killed = checked = 0
    finished_at_kill: list[int] = []
    for kill in range(RUN_KILLS):
        output = tmp_path / f"out-{kill}"  # a fresh folder: a resumed, finished one leaves a kill nothing to hit
        argv = _run_argv(frames, output, tmp_path / "data")
        killed += jobs.run(rng.uniform(0.0, full_s), argv=argv)["killed"]
        folder = output / expected_folder.name
        before = _run_folders(folder / "runs")
        finished_at_kill.append(sum(state is not None for state in before.values()))
        assert jobs.run(None, argv=argv)["code"] == 0  # the next complete call succeeds
        pd.testing.assert_frame_equal(_results(folder), expected)
        after = _run_folders(folder / "runs")
        assert sorted(after) == sorted(_run_folders(expected_folder / "runs")) and None not in after.values()
        for name, state in before.items():  # verified runs are reused as they are; any other one is redone
            assert (after[name] == state) if state is not None else (after[name] != state)
        assert [_stale(p) for p in (folder / "runs").iterdir() if not p.name.startswith(".")] == [[]] * len(after)
        checked += 1
    assert checked == RUN_KILLS and killed >= 2
    assert len(set(finished_at_kill)) > 1  # the kills landed at different stages of the run
    # a kill between staging and swap while a finished run is redone leaves a verified copy beside it
    runs = folder / "runs"
    shutil.copytree(runs / "bpr-seed0", runs / ".bpr-seed0.new-leftover")
    assert jobs.run(None, argv=argv)["code"] == 0
    pd.testing.assert_frame_equal(_results(folder), expected)  # counted once
    assert _stale(runs / "bpr-seed0") == []


def _cache_files_problem(folder: Path) -> str | None:
    """Why a text cache settings folder holds files other than its settings, manifest and listed shards, or None.

    A kill leaves retired shards or temporaries behind; the next reader or writer of the cache removes them.
    """
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    listed = {"settings.json", "manifest.json", *(shard["file"] for shard in manifest["shards"])}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed)
    return f"files the manifest does not list: {extra}" if extra else None


def test_text_encoding_killed_at_random_moments_resumes_to_the_same_vectors(tmp_path: Path, jobs: _Jobs) -> None:
    names = synthetic(n_users=20, n_items=ENCODE_TEXTS, seed=1)[0].items["text"]
    texts = [f"{text} {number}" for number, text in enumerate(names)]  # distinct short texts
    job = {"texts": texts, "chunk": ENCODE_CHUNK}
    reference = jobs.run(None, encode={**job, "cache_dir": str(tmp_path / "reference"),
                                       "out": str(tmp_path / "reference.npy")})
    assert reference["code"] == 0
    expected = np.load(tmp_path / "reference.npy")
    assert expected.shape[0] == ENCODE_TEXTS
    full_s = min(reference["seconds"], jobs.run(None, encode={**job, "cache_dir": str(tmp_path / "again"),
                                                              "out": None})["seconds"])  # timed warm
    rng = random.Random(6)
    killed = checked = 0
    for kill in range(ENCODE_KILLS):
        cache_dir = tmp_path / f"cache-{kill}"
        killed += jobs.run(rng.uniform(0.0, full_s), encode={**job, "cache_dir": str(cache_dir), "out": None})["killed"]
        out = tmp_path / f"vectors-{kill}.npy"
        assert jobs.run(None, encode={**job, "cache_dir": str(cache_dir), "out": str(out)})["code"] == 0
        assert np.load(out).tobytes() == expected.tobytes()  # bit-identical to the uninterrupted encoding
        cache = TextEncoder(cache_dir=cache_dir).vector_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("error", TextCacheWarning)  # every committed shard verifies
            found, vectors = cache.lookup([text_hash(text) for text in texts])
        assert found.all() and vectors.tobytes() == expected.tobytes()
        assert _cache_files_problem(cache.folder) is None
        assert [p.name for p in cache_dir.iterdir()] == [cache.folder.name]  # no staging folder beside it
        checked += 1
    assert checked == ENCODE_KILLS and killed >= 2
