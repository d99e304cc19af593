"""The experiment runner on real data in smoke mode (ml-100k; food-kitchen when a mirror holds it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


from xscene_lib.experiments import runner as experiment
from xscene_lib.cli import build_parser
from xscene_lib.data import DataError

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

    monkeypatch.setitem(experiment.MODELS, "bpr", refuse)
    monkeypatch.setitem(experiment.MODELS, "popularity", refuse)
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
    ({"models": ["deep-magic"]}, "unknown model"),
    ({"models": []}, "unknown model"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": [-1]}, "seeds"),
])
def test_bad_arguments_are_refused(arguments: dict, message: str, tmp_path: Path) -> None:
    settings = {"models": ["popularity"], "seeds": 1} | arguments
    with pytest.raises(DataError, match=message):
        experiment.run_experiment("ml-100k", "age", output_dir=tmp_path, show_progress=False, **settings)


def test_the_command_line_offers_every_model() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    models = next(action for action in run._actions if action.dest == "models")
    assert list(models.choices) == list(experiment.MODELS) + list(experiment.CLICK_MODELS)


def test_click_through_protocol_in_smoke_mode(ml1m, real_data_dir: Path, tmp_path: Path) -> None:
    table = experiment.run_click_through("ml-1m", "age", ["shared-bottom", "joint-ctr-no-text"], seeds=1, smoke=True,
                                         output_dir=tmp_path, data_dir=real_data_dir, sources=REAL_SOURCES,
                                         show_progress=False)
    assert set(table["scenario"]) == {"<25", "25-34", ">=35", "all"}
    assert set(table["model"]) == {"shared-bottom", "joint-ctr-no-text"}
    assert table["auc"].between(0, 1).all() and (table["logloss"] > 0).all()
    assert (tmp_path / "ml-1m-age-click-through-smoke" / "manifest.json").is_file()
    with pytest.raises(DataError, match="unknown click-through model"):
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
