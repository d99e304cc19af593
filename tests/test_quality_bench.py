"""bench/quality.py: the best of ours against the best peer, and the text comparisons, from hand-made runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import store

ROOT = Path(__file__).resolve().parents[1]
USERS = np.arange(1, 9)


def _load_bench():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = _load_bench()


def _run(folder: Path, model: str, seed: int, rank: float, cold: np.ndarray) -> None:
    """A run folder's per-row table: every test row of `model` at one rank."""
    run = folder / "tiny-age" / "runs" / f"{model}-seed{seed}"
    rows = pd.DataFrame({"user_id": USERS, "item_id": USERS * 10, "scenario": np.where(USERS % 2, "a", "b"),
                         "rank": rank, "model": model, "seed": seed, "cold_item": cold})
    store.write_tables(run, {"per_row": quality.metrics.ranking_metrics(rows)}, table_format="csv")


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    runs, peers = tmp_path / "runs", tmp_path / "peers"
    cold = USERS <= 4
    for seed in (0, 1):
        _run(runs, "seq-joint", seed, 1.0, cold)  # NDCG@10 = 1
        _run(runs, "seq-joint-no-text", seed, 2.0, cold)  # 1 / log2(3)
    _run(runs, "text-zero-shot", 0, 3.0, cold)  # 1 / log2(4) = 0.5
    peers.mkdir()
    pd.DataFrame({"model": "SASRec", "user_id": USERS, "item_id": USERS * 10, "scenario": "a",
                  "rank": 3.0}).to_csv(peers / "tiny-age.ranks.csv", index=False)
    unseen = pd.DataFrame({"user_id": USERS[:2], "item_id": USERS[:2] * 10})
    monkeypatch.setattr(quality, "never_seen", lambda dataset, view: unseen)
    return runs, peers


def test_the_report_gives_the_best_models_ratio_and_the_text_differences(folders) -> None:
    runs, peers = folders
    lines = quality.report("tiny", "age", [runs], [peers], n_resamples=200)
    text = "\n".join(lines)
    assert "seq-joint 1.0000 (2 seed(s))" in text
    assert "RecBole SASRec 0.5000" in text
    assert "best: seq-joint - RecBole SASRec" in text and "+0.5000 [+0.5000, +0.5000]" in text
    assert "ratio 2.000" in text and ": met" in text
    gap = 1.0 - 1.0 / np.log2(3.0)
    assert "text: seq-joint - seq-joint-no-text, all rows" in text and f"{gap:+.4f}" in text
    cold_line = next(line for line in lines if "seq-joint-no-text, cold items" in line)
    assert "(n=4)" in cold_line
    unseen_line = next(line for line in lines if "text-zero-shot, never-seen items" in line)
    assert "(n=2)" in unseen_line and "+0.5000" in unseen_line


def test_the_seed_spread_and_the_stability_target(folders, monkeypatch: pytest.MonkeyPatch) -> None:
    runs, peers = folders
    text = "\n".join(quality.report("tiny", "age", [runs], [peers], n_resamples=200))
    assert "seed spread: no model has two seeds or more that differ" in text  # identical seeds
    _run(runs, "seq-joint", 1, np.where(USERS <= 4, 2.0, 1.0), USERS <= 4)  # seed 1 misses the top on 4 rows
    monkeypatch.setitem(quality.MAX_SEED_STD, "tiny", 0.004)
    lines = quality.report("tiny", "age", [runs], [peers], n_resamples=200)
    spread = next(line for line in lines if "seed spread" in line)
    second = 1 - 4 / 8 * (1 - 1 / np.log2(3))  # seed 1's mean NDCG@10; seed 0's is 1
    noise = np.sqrt(4 * (1 - 1 / np.log2(3)) ** 2 / 2 / 8 / 8)  # row variances averaged, over 8 rows
    assert f"seq-joint {(1 - second) / np.sqrt(2):.4f} [" in spread and f"({noise:.4f})" in spread
    assert "  stability (std <= 0.004 for seq-joint): NOT met by seq-joint" in lines


def test_the_cold_item_target_names_each_part_that_fails(folders) -> None:
    runs, peers = folders
    lines = quality.report("tiny", "age", [runs], [peers], n_resamples=200)
    assert lines[-1] == ("  cold-item target (seq-joint >= text-zero-shot on cold items (<= 5), never-seen items, "
                         "and best overall): met")  # seq-joint ranks every row first
    _run(runs, "text-zero-shot", 0, np.where(USERS <= 4, 1.0, 3.0), USERS <= 4)  # zero-shot ties on cold rows
    for seed in (0, 1):
        _run(runs, "seq-joint-no-text", seed, 1.0, USERS <= 4)  # the twin ranks every row first
        _run(runs, "seq-joint", seed, np.where(USERS <= 2, 2.0, 1.0), USERS <= 4)  # misses the top on rows 1-2
    last = quality.report("tiny", "age", [runs], [peers], n_resamples=200)[-1]
    gap = 2 / 4 * (1 / np.log2(3.0) - 1)  # 2 of the 4 cold rows drop from 1 to 1 / log2(3)
    assert f"NOT met: below text-zero-shot on cold items (<= 5) ({gap:+.4f})" in last
    assert f"below text-zero-shot on never-seen items ({2 * gap:+.4f})" in last  # both never-seen rows drop
    assert "not the best overall (seq-joint-no-text 1.0000 vs" in last


def test_a_target_missed_is_said(folders) -> None:
    runs, peers = folders
    pd.DataFrame({"model": "SASRec", "user_id": USERS, "item_id": USERS * 10, "scenario": "a",
                  "rank": 1.0}).to_csv(peers / "tiny-age.ranks.csv", index=False)
    text = "\n".join(quality.report("tiny", "age", [runs], [peers], n_resamples=200))
    assert "ratio 1.000" in text and "NOT met" in text


def test_a_peer_stopped_by_its_epoch_cap_or_tuned_is_marked(folders) -> None:
    runs, peers = folders
    manifest = {"models": {"SASRec": {"stopped_by": "epoch cap", "config": {"epochs": 20}},
                           "BPR": {"stopped_by": "early stopping", "config": {"epochs": 300},
                                   "tuned": {"n_trials": 10, "best_valid_ndcg_at_10": 0.07}}}}
    (peers / "tiny-age.json").write_text(json.dumps(manifest))
    text = "\n".join(quality.report("tiny", "age", [runs], [peers], n_resamples=200))
    assert "RecBole SASRec 0.5000 (default settings; stopped by its cap of 20 epochs)" in text
    assert quality.peer_notes(peers / "tiny-age.json")["RecBole BPR"] == "tuned, 10 trials"


def test_our_tuned_models_are_marked(folders) -> None:
    runs, peers = folders
    manifest = {"model_settings": {"seq-joint": {"dim": 32}, "seq-joint-no-text": None}}
    (runs / "tiny-age" / "manifest.json").write_text(json.dumps(manifest))
    text = "\n".join(quality.report("tiny", "age", [runs], [peers], n_resamples=200))
    assert "seq-joint 1.0000 (2 seed(s), tuned)" in text and "seq-joint-no-text 0.6309 (2 seed(s))" in text


def test_missing_runs_and_peers_name_the_command_that_makes_them(tmp_path: Path, folders) -> None:
    runs, _ = folders
    text = "\n".join(quality.report("tiny", "age", [tmp_path / "none"], [tmp_path / "none"], n_resamples=200))
    assert "xscene run --dataset tiny --scenarios age" in text
    text = "\n".join(quality.report("tiny", "age", [runs], [tmp_path / "none"], n_resamples=200))
    assert "make peers PEERS_ARGS='--dataset tiny --scenarios age'" in text


def test_each_model_is_read_from_the_first_folder_that_has_it(tmp_path: Path, folders) -> None:
    runs, peers = folders
    recorded = tmp_path / "recorded"
    _run(recorded, "seq-joint", 0, 9.0, USERS <= 4)  # shadowed by the live runs of seq-joint
    _run(recorded, "joint", 0, 4.0, USERS <= 4)  # only here: 1 / log2(5)
    text = "\n".join(quality.report("tiny", "age", [runs, recorded], [peers], n_resamples=200))
    assert "seq-joint 1.0000 (2 seed(s))" in text
    assert f"joint {1 / np.log2(5.0):.4f} (1 seed(s))" in text
    assert str(runs / "tiny-age") in text and str(recorded / "tiny-age") in text
