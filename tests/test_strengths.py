"""Capacity and cost (experiments.capacity): parameter counts, timings' contracts, the dimension sweep and the
overfitting summary, on tiny data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xscene_lib.experiments import capacity
from xscene_lib.models import Popularity
from xscene_lib.models import BPRMF, SingleScenario
from xscene_lib.data import DataError
from xscene_lib.models import JointModel
from xscene_lib.models import NotFittedError
from xscene_lib.data.synthetic import synthetic

D_TEXT = 8


@pytest.fixture(scope="module")
def toy() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A small synthetic split (train, valid, test) and random unit item vectors indexed by item_id."""
    data, _ = synthetic(n_users=40, n_items=30, n_scenarios=2, interactions_per_user=8, seed=0)
    split = data.split()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(data.items), D_TEXT)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return split.train, split.valid, split.test, pd.DataFrame(vectors, index=data.items["item_id"].to_numpy())


def test_trainable_parameters_counts_every_learned_weight_of_the_joint_model(toy) -> None:
    train, valid, _, vectors = toy
    dim, n_users, n_items, n_scenarios = 4, train["user_id"].nunique(), len(vectors), 2
    model = JointModel(dim=dim, num_epochs=1, show_progress=False).fit(train, vectors, valid=valid)
    expected = (D_TEXT * dim + dim  # projection P
                + (n_users + n_items) * dim  # user and item ids
                + n_scenarios * dim  # scenario embeddings c_s
                + 2 * (dim * dim + dim)  # tower W1, b1, W2, b2
                + 2 * n_scenarios * dim)  # FiLM gamma and beta
    assert capacity.trainable_parameters(model) == expected


def test_trainable_parameters_leaves_out_the_frozen_text_and_counts_every_scenario_model(toy) -> None:
    train, valid, _, vectors = toy
    text_only = JointModel(dim=4, use_id=False, adaptation=None, num_epochs=1, show_progress=False)
    text_only.fit(train, vectors, valid=valid)
    assert capacity.trainable_parameters(text_only) == (D_TEXT * 4 + 4) + 2 * (4 * 4 + 4)  # the text is a buffer
    n_users, n_items = train["user_id"].nunique(), len(vectors)
    one = BPRMF(dim=3, num_epochs=1, show_progress=False).fit(train, items=vectors.index)
    per_scenario = SingleScenario(dim=3, num_epochs=1, show_progress=False).fit(train, items=vectors.index)
    assert capacity.trainable_parameters(one) == (n_users + n_items) * 3
    assert capacity.trainable_parameters(per_scenario) == 2 * capacity.trainable_parameters(one)


def test_trainable_parameters_of_a_count_model_is_zero_and_needs_a_fitted_model(toy) -> None:
    train = toy[0]
    assert capacity.trainable_parameters(Popularity().fit(train)) == 0
    with pytest.raises(NotFittedError):
        capacity.trainable_parameters(Popularity())


def test_scoring_seconds_per_user_is_positive_and_checks_its_input(toy) -> None:
    train = toy[0]
    model = Popularity().fit(train)
    users = train["user_id"].unique()[:5]
    assert capacity.scoring_seconds_per_user(model, users, "mobile", repeats=2) > 0
    for bad in (0, True, 1.5):
        with pytest.raises(DataError, match="repeats"):
            capacity.scoring_seconds_per_user(model, users, "mobile", repeats=bad)
    with pytest.raises(DataError, match="at least one user"):
        capacity.scoring_seconds_per_user(model, [], "mobile")


def test_encoding_seconds_reports_each_phase_and_checks_its_input() -> None:
    torch.set_num_threads(1)
    seconds = capacity.encoding_seconds(["a toy story", "heat", "a kitchen knife"], device="cpu", num_threads=1)
    assert set(seconds) == {"load", "cold", "cached", "texts"}
    assert seconds["texts"] == 3 and all(value > 0 for value in seconds.values())
    with pytest.raises(DataError, match="at least one text"):
        capacity.encoding_seconds([])


def test_dimension_sweep_fits_each_dimension_and_seed_and_ranks_every_test_row(toy) -> None:
    train, valid, test, vectors = toy
    sweep = capacity.dimension_sweep(train, valid, test, vectors, dims=(2, 8), seeds=(0, 1), num_epochs=2)
    assert sorted(sweep.runs[["dim", "seed"]].itertuples(index=False, name=None)) == [(2, 0), (2, 1), (8, 0), (8, 1)]
    assert (sweep.runs["epochs_run"] <= 2).all() and (sweep.runs["best_epoch"] >= 1).all()
    small, large = (sweep.runs.loc[sweep.runs["dim"] == d, "parameters"].iloc[0] for d in (2, 8))
    assert large > small
    assert set(sweep.models) == {(2, 0), (2, 1), (8, 0), (8, 1)} and sweep.models[(8, 1)].dim == 8
    assert sweep.per_row.groupby(["model", "seed"]).size().eq(len(test)).all()
    assert set(sweep.per_row["model"]) == {capacity.sweep_name(2), capacity.sweep_name(8)}
    assert {"ndcg@10", "recall@20", "rank"} <= set(sweep.per_row.columns)
    assert set(sweep.histories.columns[:3]) == {"dim", "seed", "epoch"} and "valid" in sweep.histories


def test_dimension_sweep_refuses_bad_dimensions_and_duplicate_arguments(toy) -> None:
    train, valid, test, vectors = toy
    for bad in ([], [0], [True], [2.5]):
        with pytest.raises(DataError, match="dim"):
            capacity.dimension_sweep(train, valid, test, vectors, dims=bad)
    with pytest.raises(DataError, match="through dims and seeds"):
        capacity.dimension_sweep(train, valid, test, vectors, dims=(2,), dim=4)


def test_overfitting_summary_finds_the_peak_and_the_falls_after_it() -> None:
    histories = pd.DataFrame({
        "dim": [8] * 5 + [2] * 3, "seed": 0,
        "epoch": [1, 2, 3, 4, 5, 1, 2, 3],
        "loss": [5.0, 4.0, 3.0, 2.5, 2.0, 5.0, 4.5, 4.4],
        "valid": [0.10, 0.30, 0.25, 0.20, 0.15, 0.10, 0.20, 0.30],
    }).sample(frac=1.0, random_state=0)  # epoch order must not matter
    summary = capacity.overfitting_summary(histories).set_index("dim")
    assert summary.loc[8, "best_epoch"] == 2 and summary.loc[8, "epochs_run"] == 5
    assert summary.loc[8, "valid_drop_after_best"] == pytest.approx(0.15)
    assert summary.loc[8, "loss_fall_after_best"] == pytest.approx(2.0)
    assert summary.loc[2, "best_epoch"] == 3 and summary.loc[2, "valid_drop_after_best"] == 0.0
    with pytest.raises(DataError, match="valid"):
        capacity.overfitting_summary(histories.drop(columns="valid"))
