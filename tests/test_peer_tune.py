"""bench/peer_tune.py without RecBole: the search spaces, the seeded and resumable search, and the config it writes."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import optuna
import pytest

from xscene_lib.data.validation import DataError
from xscene_lib.experiments.configs import read_config_file

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_load("recbole_export")  # peer_recbole and peer_tune import these by name, as they do when run from bench/
_load("peer_recbole")
tuning = _load("peer_tune")


def fake_trial(calls: list):
    """A stand-in for RecBole: validation NDCG@10 peaks at learning rate 1e-3 and width 64; records each call."""
    def run(settings: dict) -> dict:
        calls.append(settings)
        width_gap = abs(settings["embedding_size"] - 64) / 32
        score = 0.1 - 0.01 * abs(math.log10(settings["learning_rate"]) + 3) - 0.001 * width_gap
        return {"valid": {"ndcg@10": score}, "epochs_run": 12, "best_epoch": 7}
    return run


def test_search_spaces_speak_recbole(tmp_path: Path) -> None:
    fixed = {"embedding_size": 64, "hidden_size": 32, "learning_rate": 1e-3, "weight_decay": 1e-6, "n_layers": 2,
             "reg_weight": 1e-4, "k": 100, "shrink": 0.5, "dropout": 0.3}
    for model, space in tuning.SEARCH_SPACES.items():
        settings = space(optuna.trial.FixedTrial(fixed))
        assert settings, model
    sasrec = tuning.SEARCH_SPACES["SASRec"](optuna.trial.FixedTrial(fixed))
    assert sasrec == {"hidden_size": 32, "inner_size": 128, "learning_rate": 1e-3, "weight_decay": 1e-6,
                      "hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3}
    assert set(tuning.SEARCH_SPACES["LightGCN"](optuna.trial.FixedTrial(fixed))) == {
        "embedding_size", "learning_rate", "n_layers", "reg_weight"}


def test_search_keeps_the_best_trial_and_writes_it(tmp_path: Path) -> None:
    calls: list = []
    study = tuning.tune_peer("BPR", 6, run_trial=fake_trial(calls), study_name="s", storage_dir=tmp_path / "db",
                             show_progress=False)
    assert len(calls) == 6 and len(study.trials) == 6
    table = tuning.record_best(tmp_path / "cfg" / "d-v.toml", "BPR", study, seed=0, max_epochs=50)
    best = max(study.trials, key=lambda trial: trial.value)
    assert table["best_valid_ndcg_at_10"] == pytest.approx(best.value)
    assert table["settings"] == best.user_attrs["settings"] and table["n_trials"] == 6
    assert (table["best_epoch"], table["epochs_run"], table["max_epochs"]) == (7, 12, 50)
    written = read_config_file(tmp_path / "cfg" / "d-v.toml")["BPR"]
    assert written["settings"] == pytest.approx(best.user_attrs["settings"])


def test_an_interrupted_search_resumes_to_the_same_trials(tmp_path: Path) -> None:
    whole: list = []
    tuning.tune_peer("BPR", 5, run_trial=fake_trial(whole), study_name="s", storage_dir=tmp_path / "a",
                     show_progress=False)
    first: list = []
    run = fake_trial(first)

    def interrupted(settings: dict) -> dict:
        if len(first) == 3:
            raise KeyboardInterrupt
        return run(settings)

    with pytest.raises(KeyboardInterrupt):
        tuning.tune_peer("BPR", 5, run_trial=interrupted, study_name="s", storage_dir=tmp_path / "b",
                         show_progress=False)
    rest: list = []
    study = tuning.tune_peer("BPR", 5, run_trial=fake_trial(rest), study_name="s", storage_dir=tmp_path / "b",
                             show_progress=False)
    assert len(first) == 3 and len(rest) == 2  # the interrupted trial does not count; 3 + 2 = 5
    assert sum(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials) == 5
    assert first + rest == whole  # seeded by (seed, draw): the interrupted trial's draw is redone


def test_a_diverged_trial_is_pruned_and_other_failures_stop(tmp_path: Path) -> None:
    calls: list = []
    run = fake_trial(calls)

    def diverging(settings: dict) -> dict:
        if not calls:
            calls.append(None)
            raise SystemExit("RecBole's BPR failed (exit 1):\nValueError: Training loss is nan")
        return run(settings)

    study = tuning.tune_peer("BPR", 3, run_trial=diverging, study_name="s", storage_dir=tmp_path, show_progress=False)
    states = [trial.state for trial in study.trials]
    assert states[0] == optuna.trial.TrialState.PRUNED and len(states) == 3
    assert tuning.record_best(tmp_path / "c.toml", "BPR", study, seed=0, max_epochs=300)["n_trials"] == 3

    def broken(settings: dict) -> dict:
        raise SystemExit("RecBole's environment is missing")

    with pytest.raises(SystemExit, match="missing"):
        tuning.tune_peer("BPR", 1, run_trial=broken, study_name="t", storage_dir=tmp_path, show_progress=False)


def test_resuming_with_another_seed_is_refused(tmp_path: Path) -> None:
    tuning.tune_peer("ItemKNN", 1, run_trial=lambda s: {"valid": {"ndcg@10": 0.1}, "epochs_run": 1, "best_epoch": 1},
                     study_name="s", storage_dir=tmp_path, seed=0, show_progress=False)
    with pytest.raises(DataError, match="seed=0"):
        tuning.tune_peer("ItemKNN", 2, run_trial=lambda s: {}, study_name="s", storage_dir=tmp_path, seed=1,
                         show_progress=False)


def test_tuned_settings_are_read_per_dataset_and_view(tmp_path: Path) -> None:
    peers = sys.modules["peer_recbole"]
    assert peers.tuned_settings("d", "v", tmp_path) == {}
    study = tuning.tune_peer("BPR", 2, run_trial=fake_trial([]), study_name="s", storage_dir=tmp_path / "db",
                             show_progress=False)
    tuning.record_best(tmp_path / "d-v.toml", "BPR", study, seed=0, max_epochs=50)
    assert set(peers.tuned_settings("d", "v", tmp_path)) == {"BPR"}
    assert peers.tuned_settings("d", "other", tmp_path) == {}
    tuned = peers.tuned_settings("d", "v", tmp_path)["BPR"]  # the test run trains with its search's epoch cap
    assert peers.training_epochs(None, tuned) == 50 and peers.training_epochs(20, tuned) == 20
    assert peers.training_epochs(None, None) == peers.training_epochs(None, {"n_trials": 4}) == 300
