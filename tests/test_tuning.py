"""Fair tuning: seeded, resumable Optuna searches on validation rows only, and the TOML configs they write."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from xscene_lib.cli import main
from xscene_lib.data import DataError, Dataset
from xscene_lib.data.synthetic import synthetic
from xscene_lib.experiments import configs, registry, runner, tuning
from xscene_lib.models.bpr import BPRMF


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    """A small synthetic dataset: 40 users, 50 items, two scenarios."""
    return synthetic(n_users=40, n_items=50, interactions_per_user=8, seed=0)[0]


def _tune(data: Dataset, folder: Path, n_trials: int, seed: int = 0, model: str = "bpr") -> tuning.TuningResult:
    """A smoke-mode search (one epoch per trial) with its study and config under `folder`."""
    return tuning.tune(data, None, model, n_trials, seed=seed, storage_dir=folder / "studies",
                       config_dir=folder / "configs", smoke=True, show_progress=False)


def _settings(result: tuning.TuningResult) -> list[dict]:
    """Each trial's settings, in trial order."""
    return result.trials.drop(columns=["number", "draw", "state", "value"]).to_dict("records")


def test_the_same_seed_gives_the_same_trials_and_another_seed_others(tiny: Dataset, tmp_path: Path) -> None:
    first, again = _tune(tiny, tmp_path / "a", 3), _tune(tiny, tmp_path / "b", 3)
    pd.testing.assert_frame_equal(first.trials, again.trials)
    assert first.settings == again.settings
    assert len({tuple(sorted(settings.items())) for settings in _settings(first)}) == 3  # each trial draws anew
    assert _settings(_tune(tiny, tmp_path / "c", 3, seed=1)) != _settings(first)


def test_the_chosen_settings_are_the_best_trials_and_go_to_the_config(tiny: Dataset, tmp_path: Path) -> None:
    result = _tune(tiny, tmp_path, 4)
    finished = result.trials[result.trials["state"] == "COMPLETE"]
    best = finished.loc[finished["value"].idxmax()]
    assert result.best_value == best["value"] and set(result.settings) == {"dim", "learning_rate", "reg", "num_epochs"}
    assert result.settings == {name: best[name] for name in result.settings}
    assert result.config_path == tmp_path / "configs" / f"{tiny.name}-{tiny.view}-smoke.toml"
    table = configs.read_config(tiny.name, tiny.view, smoke=True, config_dir=tmp_path / "configs")["bpr"]
    assert table["settings"] == result.settings and table["n_trials"] == 4 and table["seed"] == 0
    assert table["best_valid_ndcg_at_10"] == result.best_value and len(table["date"]) == len("2025-01-31")


def test_each_epochs_validation_score_is_reported_for_pruning(tiny: Dataset, tmp_path: Path) -> None:
    result = _tune(tiny, tmp_path, 2)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    for trial in study.trials:  # smoke mode: one epoch, whose score is the trial's
        assert list(trial.intermediate_values) == [0] and trial.intermediate_values[0] == pytest.approx(trial.value)


class _PruningTrial:
    """A stand-in trial that records reports and prunes after the second one."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, float]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return len(self.reports) >= 2


def test_a_pruned_trial_stops_training_after_the_epoch_it_was_pruned(tiny: Dataset) -> None:
    split, trial = tiny.split(), _PruningTrial()
    model = BPRMF(num_epochs=4, patience=4, show_progress=False)
    with tuning._reporting_epochs(trial), pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        model.fit(split.train, valid=split.valid)
    assert [step for step, _ in trial.reports] == [0, 1]
    with tuning._reporting_epochs(trial):
        pass
    model.fit(split.train, valid=split.valid)  # outside the context nothing reports
    assert len(trial.reports) == 2 and len(model.history_.epochs) == 4


def test_an_interrupted_search_resumes_and_counts_the_trials_done(tiny: Dataset, tmp_path: Path) -> None:
    first = _tune(tiny, tmp_path / "resumed", 3)
    resumed = _tune(tiny, tmp_path / "resumed", 5)
    assert (first.new_trials, resumed.new_trials, len(resumed.trials)) == (3, 2, 5)
    pd.testing.assert_frame_equal(resumed.trials.iloc[:3], first.trials)
    uninterrupted = _tune(tiny, tmp_path / "uninterrupted", 5)
    pd.testing.assert_frame_equal(resumed.trials, uninterrupted.trials)  # per-trial seeds: the same search
    assert _tune(tiny, tmp_path / "resumed", 4).new_trials == 0  # the budget is spent already
    with pytest.raises(DataError, match="run with seed=0"):
        _tune(tiny, tmp_path / "resumed", 6, seed=3)


def _finished(result: tuning.TuningResult) -> pd.DataFrame:
    """The finished trials' draws, scores and settings, numbered from 0 (trial numbers skip the failed ones)."""
    return result.trials.query("state == 'COMPLETE'").drop(columns="number").reset_index(drop=True)


@pytest.mark.filterwarnings("ignore:.*heartbeat:optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage:UserWarning")  # the killed trial is made by hand
def test_a_killed_trial_gives_its_draw_to_the_next_so_the_search_is_the_uninterrupted_one(
        tiny: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "GRACE_S", 1)
    first = _tune(tiny, tmp_path / "killed", 1)
    storage = optuna.storages.RDBStorage(first.storage, heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    killed = study.ask()  # draw 1 began, then its process died: RUNNING, its heartbeat stopped
    killed.set_user_attr("draw", 1)
    storage.record_heartbeat(killed._trial_id)
    assert tuning.next_draw(study) == 2  # while it may still be alive, its draw is held
    time.sleep(2.5)
    resumed = _tune(tiny, tmp_path / "killed", 4)
    states = resumed.trials.set_index("number")["state"].to_dict()
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE", 4: "COMPLETE"}
    assert (resumed.n_trials, resumed.new_trials, list(resumed.trials["draw"])) == (4, 3, [0, 1, 1, 2, 3])
    whole = _tune(tiny, tmp_path / "whole", 4)
    pd.testing.assert_frame_equal(_finished(resumed), _finished(whole), check_dtype=False)  # dim: NaN when failed


def test_a_failed_trial_gives_its_draw_to_the_next(tiny: Dataset, tmp_path: Path) -> None:
    failures = [MemoryError("the second trial fails")]

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1 and failures:
            raise failures.pop()
        return trial.suggest_float("x", 0.0, 1.0)

    storage = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(MemoryError):
        tuning.seeded_search(objective, 3, study_name="x", storage=storage, seed=0, show_progress=False)
    study, new = tuning.seeded_search(objective, 3, study_name="x", storage=storage, seed=0, show_progress=False)
    whole, _ = tuning.seeded_search(objective, 3, study_name="y", storage=storage, seed=0, show_progress=False)
    assert new == 2 and [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.params for t in study.trials if t.state.name == "COMPLETE"] == [t.params for t in whole.trials]


def _with_other_test_items(data: Dataset) -> Dataset:
    """The same dataset with each user's last (test) interaction moved to an item the user never met."""
    frame = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    last = frame.groupby("user_id").tail(1).index
    items = data.items["item_id"].to_numpy()
    moved = frame.copy()
    for row in last:
        met = set(frame.loc[frame["user_id"] == frame.at[row, "user_id"], "item_id"])
        moved.at[row, "item_id"] = next(item for item in items[::-1] if item not in met)
    return Dataset.from_frames(moved, data.items, data.users, name=data.name, view=data.view,
                               scenarios=data.scenarios)


def test_the_test_rows_are_never_read(tiny: Dataset, tmp_path: Path) -> None:
    other = _with_other_test_items(tiny)
    pd.testing.assert_frame_equal(other.split().train, tiny.split().train)
    assert not other.split().test["item_id"].equals(tiny.split().test["item_id"])
    pd.testing.assert_frame_equal(_tune(tiny, tmp_path / "a", 3).trials, _tune(other, tmp_path / "b", 3).trials)


def test_the_config_round_trips(tmp_path: Path) -> None:
    config = {"joint-no-text": {"n_trials": 30, "best_valid_ndcg_at_10": 0.0871, "seed": 0, "date": "2025-06-01",
                                "note": 'quotes " and \\ and ünïcode', "smoke": False,
                                "settings": {"dim": 128, "learning_rate": 2.31e-05, "weight_decay": 1e-08,
                                             "temperature": 0.1, "adaptation": "film", "use_id": True}},
              "bpr": {"n_trials": 2, "settings": {"reg": float("inf")}}}
    path = tmp_path / "configs" / "x-y.toml"
    configs.write_config(path, config)
    assert configs.read_config_file(path) == config
    assert path.read_text().startswith("# Tuned settings")
    with pytest.raises(DataError, match="lacks a \\[bpr.settings\\] table"):
        path.write_text("[bpr]\nn_trials = 2\n")
        configs.read_config_file(path)
    with pytest.raises(DataError, match="no config"):
        configs.read_config("absent", "view", config_dir=tmp_path)


def test_run_experiment_builds_the_models_with_the_configs_settings(tiny: Dataset, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"dim": 8, "learning_rate": 0.02, "reg": 1e-4}
    monkeypatch.setenv(configs.CONFIG_ENV, str(tmp_path / "configs"))
    configs.write_config(configs.config_path(tiny.name, tiny.view), {"bpr": {"n_trials": 1, "settings": settings}})
    widths: list[int] = []  # the dim of each BPRMF fitted
    fit = BPRMF._fit
    monkeypatch.setattr(BPRMF, "_fit", lambda self, *args: (widths.append(self.dim), fit(self, *args))[1])
    run = lambda folder, **options: runner.run_experiment(  # noqa: E731
        tiny, None, ["popularity", "bpr"], smoke=True, output_dir=tmp_path / folder, show_progress=False, **options)
    manifest = lambda results: json.loads((results.output_dir / "manifest.json").read_text())  # noqa: E731
    tuned = manifest(run("tuned"))
    assert tuned["model_settings"] == {"bpr": settings, "popularity": None}
    assert tuned["config"] == str(configs.config_path(tiny.name, tiny.view)) and widths == [settings["dim"]]
    defaults = manifest(run("defaults", config=False))
    assert defaults["model_settings"] == {"bpr": None, "popularity": None} and defaults["config"] is None
    assert widths[1] == registry.model_spec("bpr").factory(0, True).dim
    again = run("tuned", config=False)  # the stored bpr runs were built with other settings: they run again
    assert manifest(again)["model_settings"]["bpr"] is None
    with pytest.raises(DataError, match="config=3"):
        run("bad", config=3)


def test_a_spec_builds_its_model_with_settings() -> None:
    spec = registry.model_spec("joint-no-text")
    model = spec.build(5, False, {"dim": 16, "temperature": 0.2})
    assert (model.dim, model.temperature, model.use_text, model.seed) == (16, 0.2, False, 5)
    assert spec.build(5, True, {"num_epochs": 40}).num_epochs == 1  # smoke mode's one epoch wins
    assert spec.build(5, False, None).dim == spec.factory(5, False).dim
    with pytest.raises(DataError, match="\\['dropout'\\] are not arguments of model 'joint-no-text'"):
        spec.build(0, False, {"dropout": 0.1})
    with pytest.raises(DataError, match="settings of model 'joint-no-text' must be a mapping"):
        spec.build(0, False, [("dim", 16)])


@pytest.mark.parametrize(("model", "n_trials", "message"), [
    ("nope", 2, "unknown top-k model 'nope'"),
    ("star", 2, "unknown top-k model 'star'"),
    ("popularity", 2, "'popularity' is not trained"),
    ("bpr", 0, "n_trials=...\\) must be an integer >= 1, got 0"),
    ("bpr", 2.5, "n_trials=...\\) must be an integer >= 1"),
])
def test_bad_arguments_are_data_errors(tiny: Dataset, tmp_path: Path, model: str, n_trials: object,
                                       message: str) -> None:
    with pytest.raises(DataError, match=message):
        _tune(tiny, tmp_path, n_trials, model=model)  # type: ignore[arg-type]
    assert not (tmp_path / "studies").exists()  # nothing was started


def test_every_tunable_model_has_a_search_space_of_its_constructor_arguments() -> None:
    assert tuning.tunable_models() == [name for name in registry.model_names("top-k") if name in tuning.SEARCH_SPACES]
    assert {"itemknn", "bpr", "single-scenario", "article", "joint"} <= set(tuning.tunable_models())
    assert "popularity" not in tuning.tunable_models()
    for name in tuning.tunable_models():
        settings = tuning.SEARCH_SPACES[name](optuna.trial.FixedTrial(
            {"dim": 32, "learning_rate": 1e-3, "reg": 1e-5, "weight_decay": 1e-6, "temperature": 0.1,
             "dropout": 0.1, "id_dropout": 0.2, "text_components": "all", "text_loss_weight": 0.5,
             "num_neighbours": 20, "shrink": 0.5}))
        registry.model_spec(name).build(0, True, settings)  # every name is a constructor argument
        assert all(isinstance(value, (int, float, str, bool)) and not (isinstance(value, float) and math.isnan(value))
                   for value in settings.values())


def test_the_command_tunes_a_frames_folder_and_reports_errors_in_one_line(tiny: Dataset, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "shop"
    frames.mkdir()
    tiny.interactions.to_parquet(frames / "interactions.parquet")
    tiny.items.to_parquet(frames / "items.parquet")
    options = ["--frames", str(frames), "--trials", "2", "--smoke", "--storage", str(tmp_path / "studies"),
               "--configs", str(tmp_path / "configs")]
    assert main(["tune", "--model", "bpr", *options]) == 0
    out = capsys.readouterr().out
    assert "bpr: best validation ndcg@10" in out and "learning_rate = " in out
    assert f"settings written to {tmp_path / 'configs' / 'shop-custom-smoke.toml'}" in out
    assert set(configs.read_config("shop", "custom", smoke=True, config_dir=tmp_path / "configs")) == {"bpr"}
    assert main(["tune", "--model", "popularity", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("xscene: error: model 'popularity' is not trained") and error.count("\n") == 1


def test_a_model_trained_per_scenario_is_scored_on_every_scenarios_validation_rows(tiny: Dataset,
                                                                                 tmp_path: Path) -> None:
    result = _tune(tiny, tmp_path, 2, model="single-scenario")
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    for trial in study.trials:  # one epoch per scenario: the trial's score is their mean weighted by valid rows
        assert 0 <= trial.value <= 1 and len(trial.intermediate_values) == len(tiny.scenarios)
        assert min(trial.intermediate_values.values()) <= trial.value <= max(trial.intermediate_values.values())


def test_itemknn_is_tuned_though_not_trained_and_scored_on_validation_after_fitting(tiny: Dataset,
                                                                                    tmp_path: Path) -> None:
    from xscene_lib.evaluation.metrics import ranking_metrics, target_ranks
    from xscene_lib.models.baselines import ItemKNN

    result = _tune(tiny, tmp_path, 3, model="itemknn")
    assert set(result.settings) == {"num_neighbours", "shrink"} and result.n_trials == 3
    assert 10 <= result.settings["num_neighbours"] <= 500 and 0 <= result.settings["shrink"] <= 2
    split = tiny.split()  # each trial's score is its settings' validation NDCG@10, the training rows as history
    for trial in result.trials.itertuples():
        model = ItemKNN(num_neighbours=int(trial.num_neighbours), shrink=trial.shrink).fit(split.train)
        ranks = target_ranks(model, split.train, split.valid)
        assert trial.value == pytest.approx(ranking_metrics(ranks, ks=(10,))["ndcg@10"].mean())
    table = configs.read_config(tiny.name, tiny.view, smoke=True, config_dir=tmp_path / "configs")["itemknn"]
    assert table["settings"] == result.settings
