"""The experiment runner on real data in smoke mode (ml-100k; food-kitchen when a mirror holds it)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


from xscene_lib.experiments import registry, runner as experiment
from xscene_lib.experiments.frames import frames_digest, read_frames
from xscene_lib.experiments.slices import cold_flags, domain_candidates, training_counts
from xscene_lib.cli import build_parser, main
from xscene_lib.data import DataError, Dataset, Split

README = Path(__file__).resolve().parents[1] / "README.md"

REAL_SOURCES = ("local", "mirror", "fallback")


@pytest.fixture(scope="module")
def smoke_run(ml100k_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> experiment.Results:
    """Popularity and BPR-MF on ml-100k (age), two seeds, smoke mode."""
    return experiment.run_experiment("ml-100k", "age", ["popularity", "bpr"], seeds=2, smoke=True,
                                     output_dir=tmp_path_factory.mktemp("results"), data_dir=ml100k_data_dir,
                                     sources=REAL_SOURCES, show_progress=False)


def test_the_table_has_a_row_per_model_seed_and_scenario(smoke_run: experiment.Results) -> None:
    table = smoke_run.table
    assert len(table) == 2 * 2 * 4  # models x seeds x (3 scenarios + all)
    assert set(table["scenario"]) == {"<25", "25-34", ">=35", "all"}
    assert table["ndcg@10"].between(0, 1).all() and (table["fit_seconds"] >= 0).all()
    overall = table[table["scenario"] == "all"]
    assert (overall["rows"] == experiment.SMOKE_USERS).all()  # one test row per smoke user
    popularity = overall[overall["model"] == "popularity"]["ndcg@10"]
    assert popularity.nunique() == 1  # no randomness in popularity: seeds agree
    assert overall[overall["model"] == "popularity"][["epochs_run", "best_epoch"]].isna().all().all()  # not trained
    bpr = overall[overall["model"] == "bpr"]
    assert (bpr["epochs_run"] == 1).all() and (bpr["best_epoch"] == 1).all()  # smoke mode: one epoch, validated
    assert (smoke_run.output_dir / "results.csv").is_file()


def test_per_row_metrics_are_kept_for_intervals(smoke_run: experiment.Results) -> None:
    per_row = smoke_run.per_row
    assert len(per_row) == 2 * 2 * experiment.SMOKE_USERS
    assert {"model", "seed", "user_id", "scenario", "rank", "ndcg@10"} <= set(per_row.columns)


def test_the_manifest_says_what_was_run(smoke_run: experiment.Results) -> None:
    manifest = json.loads((smoke_run.output_dir / "manifest.json").read_text())
    assert manifest["models"] == ["bpr", "popularity"] and manifest["seeds"] == [0, 1]
    assert manifest["smoke"] is True and manifest["packages"]["torch"].startswith("2.")
    assert set(manifest["dataset_files"]) == {"ml-100k.inter", "ml-100k.item", "ml-100k.user"}
    assert set(manifest["peak_mib"]) == {"popularity", "bpr"}


def test_a_second_run_resumes_without_fitting_again(smoke_run: experiment.Results, ml100k_data_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(seed: int, smoke: bool):
        raise AssertionError("a finished (model, seed) pair was fitted again")

    for name in ("bpr", "popularity"):
        monkeypatch.setitem(registry.MODEL_SPECS, name, dataclasses.replace(registry.MODEL_SPECS[name], factory=refuse))
    again = experiment.run_experiment("ml-100k", "age", ["popularity", "bpr"], seeds=2, smoke=True,
                                      output_dir=smoke_run.output_dir.parent, data_dir=ml100k_data_dir,
                                      sources=REAL_SOURCES, show_progress=False)
    assert again.table.equals(smoke_run.table)


def test_a_later_call_with_fewer_models_keeps_every_finished_run_in_the_outputs(
        smoke_run: experiment.Results, ml100k_data_dir: Path) -> None:
    fewer = experiment.run_experiment("ml-100k", "age", ["popularity"], seeds=1, smoke=True,
                                      output_dir=smoke_run.output_dir.parent, data_dir=ml100k_data_dir,
                                      sources=REAL_SOURCES, show_progress=False)
    assert set(fewer.table["model"]) == {"popularity"}  # what was asked for
    manifest = json.loads((fewer.output_dir / "manifest.json").read_text())
    assert manifest["models"] == ["bpr", "popularity"] and manifest["seeds"] == [0, 1]  # what the folder holds
    assert set(pd.read_csv(fewer.output_dir / "results.csv")["model"]) == {"bpr", "popularity"}


def test_another_encoder_gets_its_own_results_folder(tmp_path: Path) -> None:
    assert experiment._encoder_tag(experiment.DEFAULT_MODEL) == ""
    tag = experiment._encoder_tag("/tmp/random bert")
    assert tag.startswith("-random_bert-") and tag != experiment._encoder_tag("/elsewhere/random bert")


@pytest.mark.parametrize("arguments, message", [
    ({"models": ["deep-magic"]}, r"unknown top-k model\(s\) \['deep-magic'\]; choose from \['popularity'"),
    ({"models": ["star"]}, "unknown top-k model"),  # a click-through model
    ({"models": []}, "non-empty list"),
    ({"models": "popularity"}, "non-empty list"),
    ({"seeds": 0}, r"^run_experiment\(seeds=\.\.\.\) must be a positive integer, got 0; seeds is a count"),
    ({"seeds": 2.0}, r"run_experiment\(seeds=\.\.\.\) must be a positive integer, got 2.0"),
    ({"seeds": [-1]}, r"^run_experiment\(seeds\[0\]=\.\.\.\) must be an integer >= 0, got -1"),
    ({"seeds": [0, True]}, r"run_experiment\(seeds\[1\]=\.\.\.\) must be an integer >= 0, got True"),
    ({"seeds": []}, r"run_experiment\(seeds=\[\]\) runs nothing"),
])
def test_bad_arguments_are_refused(arguments: dict, message: str, tmp_path: Path) -> None:
    settings = {"models": ["popularity"], "seeds": 1} | arguments
    with pytest.raises(DataError, match=message):
        experiment.run_experiment("ml-100k", "age", output_dir=tmp_path, show_progress=False, **settings)


def test_the_command_line_offers_every_registered_model() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    models = next(action for action in run._actions if action.dest == "models")
    assert list(models.choices) == registry.model_names() == list(registry.MODEL_SPECS)
    assert "joint" in models.choices and "star" in models.choices and "deep-magic" not in models.choices


def test_click_through_protocol_in_smoke_mode(ml1m, real_data_dir: Path, tmp_path: Path) -> None:
    table = experiment.run_click_through("ml-1m", "age", ["shared-bottom", "joint-ctr-no-text"], seeds=1, smoke=True,
                                         output_dir=tmp_path, data_dir=real_data_dir, sources=REAL_SOURCES,
                                         show_progress=False)
    assert set(table["scenario"]) == {"<25", "25-34", ">=35", "all"}
    assert set(table["model"]) == {"shared-bottom", "joint-ctr-no-text"}
    assert table["auc"].between(0, 1).all() and (table["logloss"] > 0).all()
    assert (tmp_path / "ml-1m-age-click-through-smoke" / "manifest.json").is_file()
    with pytest.raises(DataError, match=r"unknown click-through model\(s\) \['bpr'\]"):
        experiment.run_click_through("ml-1m", models=["bpr"], output_dir=tmp_path, show_progress=False)


def test_compare_gives_intervals_per_scenario_and_for_cold_items(smoke_run: experiment.Results) -> None:
    table = experiment.compare(smoke_run, pairs=[("popularity", "bpr")], n_resamples=200)
    assert set(table["slice"]) <= {"all", "cold items", "cold users"} and "all" in set(table["slice"])
    overall = table[(table["slice"] == "all") & (table["scenario"] == "all")].iloc[0]
    assert overall["n_units"] == experiment.SMOKE_USERS
    assert overall["ci_low"] <= overall["difference"] <= overall["ci_high"]
    with pytest.raises(DataError, match="none of the pairs"):
        experiment.compare(smoke_run, pairs=[("joint", "article")])


def test_cold_items_are_flagged_from_training_counts(smoke_run: experiment.Results) -> None:
    per_row = smoke_run.per_row
    assert per_row["cold_item"].dtype == bool and per_row["cold_item"].any() and not per_row["cold_item"].all()


@pytest.fixture(scope="module")
def food_kitchen_run(food_kitchen, real_data_dir: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> experiment.Results:
    """Popularity on food-kitchen, one seed, smoke mode: full ranking per domain and the sampled protocol."""
    return experiment.run_experiment("food-kitchen", models=["popularity"], seeds=1, smoke=True,
                                     output_dir=tmp_path_factory.mktemp("results"), data_dir=real_data_dir,
                                     sources=REAL_SOURCES, show_progress=False)


def test_food_kitchen_ranks_each_target_within_its_domain(food_kitchen, food_kitchen_run: experiment.Results) -> None:
    assert set(food_kitchen_run.table["scenario"]) == {"food", "kitchen", "all"}
    per_row = food_kitchen_run.per_row
    assert len(per_row) == experiment.SMOKE_USERS and per_row["known"].all()
    split = food_kitchen.split()
    seen = pd.concat([split.train, split.valid])
    domain = food_kitchen.items.set_index("item_id")["domain"]
    domain_size = domain.value_counts()
    for row in per_row.itertuples():  # the domain's items, less the user's own there (the target stays)
        own = set(seen.loc[seen["user_id"] == row.user_id, "item_id"]) - {row.item_id}
        assert row.n_candidates == domain_size[row.scenario] - (domain[list(own)] == row.scenario).sum()
    assert (per_row.loc[per_row["scenario"] == "food", "n_candidates"] <= 8661).all()


def test_food_kitchen_reports_the_sampled_protocol_too(food_kitchen_run: experiment.Results) -> None:
    per_row, table = food_kitchen_run.per_row, food_kitchen_run.table
    assert (per_row["sampled_rank"] <= per_row["rank"]).all() and (per_row["sampled_rank"] <= 1000).all()
    for k in experiment.SAMPLED_KS:
        assert {f"sampled_recall@{k}", f"sampled_ndcg@{k}"} <= set(table.columns)
    for k in set(experiment.SAMPLED_KS) & set(experiment.KS):
        for metric in ("recall", "ndcg"):
            assert (table[f"sampled_{metric}@{k}"] >= table[f"{metric}@{k}"]).all()


# --- your own data: frames, the README's example, the public pieces of the protocol ---------------------


def _tiny_frames(n_users: int = 40, n_items: int = 24, per_user: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interactions in two scenarios (app, web) and items with short texts, all drawn with a fixed seed."""
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(1, n_users + 1), per_user)
    items = np.concatenate([rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)]) + 100
    interactions = pd.DataFrame({"user_id": users, "item_id": items,
                                 "scenario": rng.choice(["app", "web"], size=len(users)),
                                 "timestamp": np.tile(np.arange(per_user), n_users) + 1_700_000_000})
    words = ["pasta", "kettle", "coffee", "knife", "tea", "pan"]
    texts = [f"{words[i % len(words)]} number {i}" for i in range(n_items)]
    return interactions, pd.DataFrame({"item_id": np.arange(n_items) + 100, "text": texts})


def _readme_section(title: str) -> str:
    """The text of one `## title` section of the README."""
    return README.read_text(encoding="utf-8").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_own_data_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    section = _readme_section("Your own data")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).split("#")[0]
    interactions, items = _tiny_frames()
    (tmp_path / "my_data").mkdir()
    interactions.to_parquet(tmp_path / "my_data" / "interactions.parquet")
    items.to_parquet(tmp_path / "my_data" / "items.parquet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XSCENE_DATA", str(tmp_path / "data"))  # the text cache
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)  # noqa: S102 - the README's own lines
    results, split, data = names["results"], names["split"], names["data"]
    assert set(results.table["model"]) == {"popularity", "text-zero-shot", "joint"}
    assert len(results.per_row) == 3 * 2 * len(split.test)  # models x seeds x test rows of the per-scenario split
    assert split.test.groupby("user_id").size().max() == 2  # a test row in each scenario a user has
    assert results.output_dir == Path("results") / "my_data-custom-per-scenario-smoke"
    manifest = json.loads((results.output_dir / "manifest.json").read_text())
    assert manifest["dataset"] == "my_data" and manifest["dataset_source"] == "frames"
    assert manifest["dataset_files"] == {} and manifest["per_scenario"] is True
    assert manifest["dataset_sha256"] == frames_digest(data)
    argv = shlex.split(command)
    assert argv[0] == "xscene" and main(argv[1:]) == 0  # the same run from the shell: every pair is resumed
    assert "text-zero-shot" in capsys.readouterr().out
    again = pd.read_csv(results.output_dir / "results.csv")
    assert len(again) == len(results.table) and set(again["model"]) == set(results.table["model"])


def test_a_dataset_object_runs_under_its_own_name_and_refuses_a_view(tmp_path: Path) -> None:
    data = Dataset.from_frames(*_tiny_frames(), name="shop")
    results = experiment.run_experiment(data, models=["popularity"], smoke=True, output_dir=tmp_path,
                                        show_progress=False)
    assert results.output_dir == tmp_path / "shop-custom-smoke"
    assert (results.table.query("scenario == 'all'")["rows"] == data.users["user_id"].nunique()).all()
    with pytest.raises(DataError, match="a Dataset has its scenarios already"):
        experiment.run_experiment(data, "age", models=["popularity"], output_dir=tmp_path, show_progress=False)
    with pytest.raises(DataError, match="registered name"):
        experiment.run_experiment(data.interactions, models=["popularity"], output_dir=tmp_path)


@pytest.mark.parametrize("broken, message", [
    ("no items", r"lacks \['items.parquet'\]"),
    ("no timestamp", r"frames in .*interactions lacks column\(s\) \['timestamp'\]"),
    ("not parquet", "cannot read .* as Parquet"),
])
def test_a_frames_folder_with_missing_files_or_columns_is_a_clear_error(broken: str, message: str,
                                                                       tmp_path: Path) -> None:
    interactions, items = _tiny_frames()
    if broken == "no timestamp":
        interactions = interactions.drop(columns="timestamp")
    interactions.to_parquet(tmp_path / "interactions.parquet")
    if broken == "not parquet":
        (tmp_path / "items.parquet").write_text("item_id,text\n1,a\n")
    elif broken != "no items":
        items.to_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataError, match=message):
        read_frames(tmp_path)


def test_frames_with_users_are_read_and_named_after_their_folder(tmp_path: Path) -> None:
    interactions, items = _tiny_frames()
    folder = tmp_path / "shop"
    folder.mkdir()
    interactions.to_parquet(folder / "interactions.parquet")
    items.to_parquet(folder / "items.parquet")
    users = pd.DataFrame({"user_id": np.arange(1, 41), "region": ["north", "south"] * 20})
    users.to_parquet(folder / "users.parquet")
    data = read_frames(folder)
    assert data.name == "shop" and list(data.users.columns) == ["user_id", "region"]
    assert data.scenarios == ["app", "web"] and len(data.interactions) == len(interactions)


def test_smoke_split_keeps_the_first_test_users_in_every_part() -> None:
    split = Dataset.from_frames(*_tiny_frames()).split()
    small = split.first_test_users(5)
    assert sorted(small.test["user_id"].unique()) == [1, 2, 3, 4, 5]
    for part in (small.train, small.valid):
        assert set(part["user_id"]) == {1, 2, 3, 4, 5}
    assert len(small.train) == (split.train["user_id"] <= 5).sum()
    with pytest.raises(DataError, match="n_users"):
        split.first_test_users(0)


def test_cold_flags_count_training_rows_of_the_item_and_user_in_the_scenario() -> None:
    train = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [7, 7, 8, 7, 9],
                          "scenario": ["a", "a", "b", "b", "a"]})
    test = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [7, 7, 9], "scenario": ["a", "b", "b"]})
    split = Split(train, train.iloc[:0], test)
    assert training_counts(split, "item").tolist() == [2, 1, 0]
    assert training_counts(split, "user").tolist() == [2, 1, 0]
    flags = cold_flags(split, max_train_interactions=1)
    assert flags["cold_item"].tolist() == [False, True, True] and flags["cold_user"].tolist() == [False, True, True]
    assert cold_flags(split).all().all()  # COLD_MAX = 5: all of these are cold
    with pytest.raises(DataError, match=r"^training_counts\(by='items'\) is unknown; by must be one of 'item', 'user'"):
        training_counts(split, "items")
    with pytest.raises(DataError, match=r"^cold_flags\(max_train_interactions=\.\.\.\) must be an integer >= 0"):
        cold_flags(split, max_train_interactions=-1)


def test_domain_candidates_only_when_scenarios_are_item_domains() -> None:
    interactions, items = _tiny_frames()
    assert domain_candidates(Dataset.from_frames(interactions, items)) is None
    domain = np.where(items["item_id"] % 2 == 0, "app", "web")
    by_domain = Dataset.from_frames(interactions, items.assign(domain=domain))
    candidates = domain_candidates(by_domain)
    assert sorted(candidates) == ["app", "web"] and all(item % 2 == 0 for item in candidates["app"])
    assert len(candidates["app"]) + len(candidates["web"]) == len(items)


def test_epochs_are_read_from_one_history_or_the_largest_of_several() -> None:
    from xscene_lib.training.loop import TrainHistory

    def history(epochs: int, best: int) -> TrainHistory:
        return TrainHistory(epochs=[{"epoch": e + 1} for e in range(epochs)], best_epoch=best)

    one = type("Model", (), {"history_": history(9, 5)})()
    parts = type("Model", (), {"history_": [history(4, 2), history(12, 3)]})()
    assert experiment._epochs(one) == {"epochs_run": 9, "best_epoch": 5}
    assert experiment._epochs(parts) == {"epochs_run": 12, "best_epoch": 3}
    unvalidated = experiment._epochs(type("Model", (), {"history_": history(3, -1)})())
    assert unvalidated["epochs_run"] == 3 and np.isnan(unvalidated["best_epoch"])
    assert all(np.isnan(value) for value in experiment._epochs(object()).values())
