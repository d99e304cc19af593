"""Click-through protocol and models: split and labels, scores, the model contract, the scenario signal,
determinism, safetensors checkpoints and clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from xscene_lib.models import STAR, ClickModel, JointCTR, SharedBottom
from xscene_lib.models.ctr_networks import PartitionedNorm, StarLinear
from xscene_lib.models import click_through_split, click_through_table
from xscene_lib.data import DataError, Dataset
from xscene_lib.models import NotFittedError
from xscene_lib.training.loop import BEST

FAST = {"dim": 8, "hidden": (32, 16), "num_epochs": 12, "batch_size": 128, "learning_rate": 3e-3, "patience": 12}
MODELS: dict[str, Callable[..., ClickModel]] = {
    "SharedBottom": SharedBottom, "STAR": STAR,
    "JointCTR": JointCTR, "JointCTR-id": lambda **kw: JointCTR(use_text=False, **kw),
}
N_USERS, N_ITEMS = 60, 40


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: handing work between threads costs more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the split -------------------------------------------------------------------------------------


def _toy_dataset(n: int = 101) -> Dataset:
    """n interactions over 3 scenarios, ratings 1..5, users with gender/occupation/zip/age, items with genres."""
    rng = np.random.default_rng(5)
    interactions = pd.DataFrame({"user_id": np.arange(n) % 9, "item_id": np.arange(n) % 7,
                                 "scenario": np.array(["x", "y", "z"])[np.arange(n) % 3],
                                 "timestamp": np.arange(n), "rating": rng.integers(1, 6, n).astype(float)})
    users = pd.DataFrame({"user_id": range(9), "gender": list("MFMFMFMFM"), "occupation": ["a", "b", "c"] * 3,
                          "zip_code": ["0", "1", "2"] * 3, "age": [18, 25, 35] * 3, "nickname": ["n"] * 9})
    items = pd.DataFrame({"item_id": range(7), "text": [f"movie {i}" for i in range(7)],
                          "genres": ["Drama|Comedy", "Drama", "", "Action", "Comedy", "Action|Drama", "Drama"]})
    return Dataset.from_frames(interactions, items, users, scenarios=["z", "x", "y"])


def test_split_has_exact_sizes_loses_and_repeats_no_row_and_labels_by_threshold() -> None:
    dataset = _toy_dataset()
    split = click_through_split(dataset)
    assert (len(split.train), len(split.valid), len(split.test)) == (81, 10, 10)  # round(10.1) = 10 each
    together = pd.concat([split.train, split.valid, split.test])
    key = ["user_id", "item_id", "scenario", "timestamp"]
    original = dataset.interactions.set_index(key).sort_index()
    assert not together.duplicated(subset=key).any()
    assert together.set_index(key).sort_index().index.equals(original.index)
    assert (together["label"] == (together["rating"] > 3)).all() and set(together["label"]) == {0, 1}
    assert list(split.train["scenario"].cat.categories) == ["z", "x", "y"]  # the dataset's order
    row = together.set_index("item_id").loc[0].iloc[0]
    assert row["genres"] == "Drama|Comedy" and {"gender", "occupation", "zip_code"} <= set(together.columns)
    assert together.set_index("user_id").loc[1, "age"].iloc[0] == 25.0  # a number, not a category
    assert "nickname" not in together.columns  # only the documented features travel


def test_split_is_deterministic_per_seed_and_follows_fractions_and_threshold() -> None:
    dataset = _toy_dataset(200)
    first, again, other = (click_through_split(dataset, seed=s) for s in (3, 3, 4))
    assert first.test.equals(again.test) and first.train.equals(again.train)
    assert not first.test.equals(other.test)
    halves = click_through_split(dataset, fractions=(0.5, 0.5, 0.0), label_threshold=4)
    assert (len(halves.train), len(halves.valid), len(halves.test)) == (100, 100, 0)
    assert (halves.train["label"] == (halves.train["rating"] == 5)).all()


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.5, 0.5, 0.5), (0.9, -0.1, 0.2), (0.0, 0.5, 0.5),
                                       (0.8, 0.1, float("nan")), "0.8,0.1,0.1", (0.8, True, 0.2)])
def test_bad_fractions_are_refused(fractions: object) -> None:
    with pytest.raises(DataError, match="fractions"):
        click_through_split(_toy_dataset(), fractions=fractions)


def test_a_bad_split_setting_is_named_in_the_message() -> None:
    with pytest.raises(DataError, match=r"^click_through_split\(fractions\[1\]=\.\.\.\) must be a finite number >= 0, "
                                        r"got -0.1; fractions must be three"):
        click_through_split(_toy_dataset(), fractions=(0.9, -0.1, 0.2))
    with pytest.raises(DataError, match=r"got \(0.5, 0.5, 0.1\), summing to 1.1$"):
        click_through_split(_toy_dataset(), fractions=(0.5, 0.5, 0.1))
    with pytest.raises(DataError, match=r"^click_through_split\(seed=\.\.\.\) must be an integer >= 0, got -1$"):
        click_through_split(_toy_dataset(), seed=-1)
    with pytest.raises(DataError, match=r"^click_through_split\(label_threshold=\.\.\.\) must be a finite number, "
                                        r"got '3'; give a rating"):
        click_through_split(_toy_dataset(), label_threshold="3")


@pytest.mark.parametrize("threshold", [5, 0, "3", True, float("inf")])
def test_a_threshold_leaving_one_class_or_no_number_is_refused(threshold: object) -> None:
    with pytest.raises(DataError, match="label_threshold"):
        click_through_split(_toy_dataset(), label_threshold=threshold)


# --- the scores ------------------------------------------------------------------------------------


def test_a_constant_predictor_scores_auc_one_half_and_a_perfect_one_auc_one() -> None:
    frame = pd.DataFrame({"scenario": ["a", "a", "b", "b", "b"], "label": [0, 1, 1, 0, 1]})
    constant = click_through_table(frame, np.full(5, 0.5))
    assert list(constant.index) == ["a", "b", "all"] and (constant["auc"] == 0.5).all()
    assert np.allclose(constant["logloss"], np.log(2))
    assert (click_through_table(frame, frame["label"] * 0.8 + 0.1)["auc"] == 1.0).all()
    with pytest.raises(DataError, match="probabilities"):
        click_through_table(frame, np.full(4, 0.5))


# --- STAR's parts ----------------------------------------------------------------------------------


def test_partitioned_norm_normalises_each_scenario_with_its_own_moments() -> None:
    torch.manual_seed(0)
    first, second = torch.randn(60, 3) * 2 + 5, torch.randn(40, 3) - 3  # the rows of scenarios 0 and 1
    norm = PartitionedNorm(3, 2, momentum=0.5)
    for s, rows in enumerate((first, second)):
        y = norm(rows, s)
        assert torch.allclose(y.mean(dim=0), torch.zeros(3), atol=1e-5)
        assert torch.allclose(y.var(dim=0, unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.allclose(norm.running_mean[1], 0.5 * second.mean(dim=0))  # moved halfway from 0
    assert torch.allclose(norm.running_mean[0], 0.5 * first.mean(dim=0))  # each scenario its own
    norm.eval()
    expected = (first[:2] - norm.running_mean[0]) / torch.sqrt(norm.running_var[0] + 1e-5)  # learned scales start at 1
    assert torch.allclose(norm(first[:2], 0), expected)


def test_star_layer_weights_are_shared_times_scenario_and_biases_their_sum() -> None:
    layer = StarLinear(4, 3, n_scenarios=2)
    with torch.no_grad():
        layer.scenario_weight[1] *= 2.0
        layer.scenario_bias[1] += 1.0
    x = torch.randn(5, 4)
    shared = x @ layer.weight + layer.bias  # (5, 3)
    assert torch.allclose(layer(x, 0), shared, atol=1e-6)
    assert torch.allclose(layer(x, 1), x @ (2 * layer.weight) + layer.bias + 1.0, atol=1e-6)


def test_star_network_gives_each_row_its_logit_whatever_the_row_order(flips: dict) -> None:
    model = STAR(**{**FAST, "num_epochs": 2}).fit(flips["train"])
    test = flips["test"]
    shuffled = test.sample(frac=1.0, random_state=3)
    np.testing.assert_allclose(model.predict_proba(shuffled), pd.Series(model.predict_proba(test), index=test.index)
                               .loc[shuffled.index].to_numpy(), rtol=1e-5)
    one_scenario = test[test["scenario"] == test["scenario"].iloc[0]]  # groups of other scenarios are empty
    assert model.predict_proba(one_scenario).shape == (len(one_scenario),)


# --- the models ------------------------------------------------------------------------------------


def _flip_data() -> dict[str, pd.DataFrame]:
    """Clicks that depend on (scenario, item group): scenario a likes even items, b odd ones (10% noise).

    Every (user, item) pair appears in both scenarios with opposite true labels, and pairs are split
    whole into train/valid/test, so a model blind to the scenario cannot beat AUC 0.5.
    """
    rng = np.random.default_rng(0)
    users, items = np.divmod(rng.choice(N_USERS * N_ITEMS, N_USERS * N_ITEMS // 2, replace=False), N_ITEMS)
    part = rng.choice(["train", "valid", "test"], len(users), p=[0.6, 0.2, 0.2])
    frames = {}
    for name in ("train", "valid", "test"):
        pairs = pd.DataFrame({"user_id": users[part == name], "item_id": items[part == name]})
        rows = pd.concat([pairs.assign(scenario=s) for s in ("a", "b")], ignore_index=True)
        liked = (rows["item_id"] % 2 == 0) ^ (rows["scenario"] == "b")
        rows["label"] = (liked ^ (rng.random(len(rows)) < 0.1)).astype(int)
        frames[name] = rows
    return frames


@pytest.fixture(scope="module")
def flips() -> dict[str, pd.DataFrame]:
    return _flip_data()


@pytest.fixture(scope="module")
def item_vectors() -> pd.DataFrame:
    """Text-like item vectors: the item's group, one-hot, plus noise. shape: (N_ITEMS, 4)."""
    rng = np.random.default_rng(1)
    group = np.eye(4)[np.arange(N_ITEMS) % 2]
    return pd.DataFrame(group + 0.2 * rng.normal(size=group.shape), index=np.arange(N_ITEMS))


@pytest.mark.parametrize("name", MODELS)
def test_every_model_learns_the_scenario_signal(name: str, flips: dict, item_vectors: pd.DataFrame) -> None:
    model = MODELS[name](**FAST).fit(flips["train"], item_vectors, valid=flips["valid"])
    probabilities = model.predict_proba(flips["test"])
    assert probabilities.shape == (len(flips["test"]),) and ((probabilities > 0) & (probabilities < 1)).all()
    table = model.evaluate(flips["test"])
    assert list(table.index) == ["a", "b", "all"]
    assert {"auc", "logloss", "interactions", "positive_rate"} <= set(table.columns)
    assert (table["auc"] > 0.8).all(), table
    assert (table["logloss"] < np.log(2)).all()  # better than the constant 0.5
    frame = model.history_.frame
    assert "valid" in frame.columns and model.history_.best_epoch == frame["valid"].idxmax() + 1


@pytest.mark.parametrize("name", ["SharedBottom", "STAR", "JointCTR"])
def test_a_model_given_one_scenario_label_cannot_learn_the_signal(name: str, flips: dict,
                                                                  item_vectors: pd.DataFrame) -> None:
    blind = {part: frame.assign(scenario="one") for part, frame in flips.items()}
    model = MODELS[name](**FAST).fit(blind["train"], item_vectors, valid=blind["valid"])
    table = click_through_table(flips["test"], model.predict_proba(blind["test"]))
    # whatever item group it leans to helps in one scenario exactly as much as it hurts in the other
    assert table.loc["all", "auc"] < 0.6 and table.loc[["a", "b"], "auc"].mean() < 0.6, table


def test_item_vectors_join_the_item_embedding_of_every_model(flips: dict, item_vectors: pd.DataFrame) -> None:
    with_text = SharedBottom(**{**FAST, "num_epochs": 1}).fit(flips["train"], item_vectors)
    without = JointCTR(use_text=False, **{**FAST, "num_epochs": 1}).fit(flips["train"], item_vectors)
    assert with_text.network_.embed.text is not None and without.network_.embed.text is None
    text_only = JointCTR(use_id=False, **{**FAST, "num_epochs": 1}).fit(flips["train"], item_vectors)
    assert text_only.network_.embed.item is None


@pytest.mark.parametrize("name", ["SharedBottom", "STAR", "JointCTR"])
def test_same_seed_same_probabilities_other_seed_other_ones(name: str, flips: dict,
                                                            item_vectors: pd.DataFrame) -> None:
    runs = [MODELS[name](**{**FAST, "num_epochs": 2, "seed": seed}).fit(flips["train"], item_vectors)
            .predict_proba(flips["test"]) for seed in (0, 0, 1)]
    assert np.array_equal(runs[0], runs[1]) and not np.allclose(runs[0], runs[2])


def test_checkpoints_are_safetensors_and_a_finished_run_is_reused(tmp_path: Path, flips: dict) -> None:
    settings = {**FAST, "num_epochs": 3, "checkpoint_dir": tmp_path}
    model = STAR(**settings).fit(flips["train"], valid=flips["valid"])
    expected = model.predict_proba(flips["test"])
    with torch.no_grad():
        for weight in model.network_.parameters():
            weight.zero_()
    assert not np.allclose(model.predict_proba(flips["test"]), expected)
    model.network_.load_state_dict(load_file(str(tmp_path / BEST)))  # includes the normalisation's moments
    assert np.array_equal(model.predict_proba(flips["test"]), expected)
    again = STAR(**settings).fit(flips["train"], valid=flips["valid"])
    assert again.history_.epochs == model.history_.epochs  # restored, timings included: nothing retrained
    assert np.array_equal(again.predict_proba(flips["test"]), expected)
    with pytest.raises(DataError, match="another run"):
        STAR(**{**settings, "dropout": 0.3}).fit(flips["train"], valid=flips["valid"])  # same shapes, other run


# --- errors and edge cases ---------------------------------------------------------------------------


def test_predicting_before_fit_is_a_clear_error(flips: dict) -> None:
    for model in (SharedBottom(), STAR(), JointCTR()):
        with pytest.raises(NotFittedError, match="fit"):
            model.predict_proba(flips["test"])
        with pytest.raises(NotFittedError):
            model.evaluate(flips["test"])


def test_unknown_users_and_items_share_one_index_but_an_unknown_scenario_is_an_error(flips: dict) -> None:
    model = JointCTR(use_text=False, **{**FAST, "num_epochs": 1}).fit(flips["train"])
    strangers = pd.DataFrame({"user_id": [10_001, 10_002], "item_id": [20_001, 20_002], "scenario": ["a", "a"]})
    probabilities = model.predict_proba(strangers)
    assert np.isfinite(probabilities).all() and probabilities[0] == probabilities[1]
    with pytest.raises(DataError, match="'c' was not seen in training"):
        model.predict_proba(strangers.assign(scenario="c"))


def test_missing_columns_and_bad_labels_are_clear_errors(flips: dict) -> None:
    train = flips["train"]
    with pytest.raises(DataError, match="label"):
        STAR(**FAST).fit(train.drop(columns="label"))
    with pytest.raises(DataError, match="both present"):
        STAR(**FAST).fit(train.assign(label=1))
    with pytest.raises(DataError, match="label"):
        STAR(**FAST).fit(train.assign(label=2))
    model = STAR(**{**FAST, "num_epochs": 1}).fit(train)
    with pytest.raises(DataError, match="item_id"):
        model.predict_proba(flips["test"].drop(columns="item_id"))
    with pytest.raises(DataError, match="label"):
        model.evaluate(flips["test"].drop(columns="label"))


def test_side_features_used_in_fit_are_required_at_predict_time() -> None:
    split = click_through_split(_toy_dataset(300))
    model = SharedBottom(**{**FAST, "num_epochs": 1}).fit(split.train)
    assert len(model.network_.embed.categories) == 3 and model.network_.embed.genres is not None
    assert model.features_.numeric == {"age": (18.0, 35.0)}  # the training range scales age
    scaled = model.features_.encode(split.test.assign(age=[10.0, 18.0, 25.0, 35.0, 99.0, np.nan] * 5))["numbers"]
    assert scaled[:6, 0].tolist() == pytest.approx([0.0, 0.0, 7 / 17, 1.0, 1.0, 0.0])  # clipped; missing -> 0
    assert model.predict_proba(split.test).shape == (len(split.test),)
    for column in ("occupation", "zip_code", "age"):
        with pytest.raises(DataError, match=column):
            model.predict_proba(split.test.drop(columns=column))


def test_joint_model_switches_and_item_vectors_are_checked(flips: dict, item_vectors: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="use_text=False"):
        JointCTR(**FAST).fit(flips["train"])
    with pytest.raises(DataError, match=r"use_id=\.\.\.\) must be True or False"):
        JointCTR(use_id="yes", **FAST).fit(flips["train"], item_vectors)
    with pytest.raises(DataError, match="keep one on"):
        JointCTR(use_text=False, use_id=False, **FAST).fit(flips["train"])
    with pytest.raises(DataError, match="lack 1 training item"):
        JointCTR(**FAST).fit(flips["train"], item_vectors.drop(index=3))


@pytest.mark.parametrize("setting", [{"hidden": ()}, {"hidden": (16, 0)}, {"dim": 0}, {"dropout": 1.0},
                                     {"batch_size": 2.5}, {"num_epochs": 0}])
def test_bad_settings_are_refused(setting: dict, flips: dict) -> None:
    with pytest.raises(DataError, match=next(iter(setting))):
        STAR(**{**FAST, **setting}).fit(flips["train"])


def test_a_bad_layer_width_or_dropout_is_named_in_the_message(flips: dict) -> None:
    with pytest.raises(DataError, match=r"^STAR\(hidden\[1\]=\.\.\.\) must be a positive integer, got 0; "
                                        r"hidden holds layer widths, e.g. \(128, 64\); got \(16, 0\)$"):
        STAR(**{**FAST, "hidden": (16, 0)}).fit(flips["train"])
    with pytest.raises(DataError, match=r"^SharedBottom\(dropout=\.\.\.\) must be a finite number >= 0 and < 1, "
                                        r"got 1.0$"):
        SharedBottom(**{**FAST, "dropout": 1.0}).fit(flips["train"])


def test_the_checkpoint_key_follows_the_side_features_not_only_the_ids(tmp_path: Path) -> None:
    split = click_through_split(_toy_dataset(300))
    settings = {**FAST, "num_epochs": 1, "checkpoint_dir": tmp_path}
    SharedBottom(**settings).fit(split.train)
    other = split.train.assign(occupation=split.train["occupation"].astype(str).iloc[::-1].to_numpy())
    with pytest.raises(DataError, match="another run"):  # same ids and labels, other side features
        SharedBottom(**settings).fit(other)


def test_a_failed_fit_leaves_the_model_unfitted(flips: dict) -> None:
    model = SharedBottom(**{**FAST, "num_epochs": 1}).fit(flips["train"])
    with pytest.raises(DataError):
        model.fit(flips["train"].drop(columns="label"))
    with pytest.raises(NotFittedError):
        model.predict_proba(flips["test"])


@pytest.mark.parametrize("name", ["SharedBottom", "STAR", "JointCTR-id"])
def test_a_last_batch_of_one_row_trains(name: str, flips: dict) -> None:
    train = flips["train"].sample(n=129, random_state=1)  # batches of 128 leave one row; batch norm needs two
    assert train["label"].nunique() == 2 and train["scenario"].nunique() == flips["train"]["scenario"].nunique()
    model = MODELS[name](**{**FAST, "num_epochs": 1}).fit(train)
    assert np.isfinite(model.predict_proba(flips["test"])).all()
