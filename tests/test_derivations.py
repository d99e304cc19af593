import numpy as np
import pandas as pd
import pytest
import torch

from xscene_lib.experiments import derivations as d
from xscene_lib.data import DataError
from xscene_lib.models import JointModel
from xscene_lib.models.joint import in_batch_softmax
from xscene_lib.data.synthetic import synthetic


def test_cosine_gradient_on_a_hand_worked_pair():
    a, b = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    # cos = 1/sqrt(2); d/da = b / (|a||b|) - cos a / |a|^2 = (1, 1)/sqrt(2) - (1, 0)/sqrt(2) = (0, 1/sqrt(2))
    assert d.cosine(a, b).item() == pytest.approx(2**-0.5)
    np.testing.assert_allclose(d.cosine_gradient(a, b).numpy(), [[0.0, 2**-0.5]])


def test_bpr_gradient_on_a_tie_is_one_half_over_the_batch():
    positive, negative = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    pull_positive, pull_negative = d.bpr_gradients(positive, negative)
    np.testing.assert_allclose(pull_positive.numpy(), -0.125)
    np.testing.assert_allclose(pull_negative.numpy(), 0.125)
    assert d.bpr_loss(positive, negative).item() == pytest.approx(np.log(2.0))


def test_softmax_gradient_is_softmax_minus_onehot():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    gradient = d.in_batch_softmax_gradient(logits).numpy()
    p = np.exp(2.0) / (np.exp(2.0) + 1.0)
    np.testing.assert_allclose(gradient, [[(p - 1) / 2, (1 - p) / 2], [0.25, -0.25]])
    assert np.allclose(gradient.sum(axis=1), 0.0)  # every row of softmax - onehot sums to zero


def test_in_batch_logits_mask_other_copies_of_the_own_item_and_subtract_log_q():
    h = v = torch.eye(3, dtype=torch.float64)
    logits = d.in_batch_logits(h, v, torch.tensor([5, 5, 7]), torch.tensor([-1.0, -1.0, -2.0],
                                                                          dtype=torch.float64), 0.5)
    assert torch.isinf(logits[0, 1]) and torch.isinf(logits[1, 0])  # the same item in another row
    assert logits[0, 0].item() == pytest.approx(1 / 0.5 + 1.0) and logits[0, 2].item() == pytest.approx(2.0)


@pytest.mark.parametrize("rows", [slice(0, 12), slice(4, 9)])  # one process, or one process's share of the batch
def test_the_joint_models_loss_is_the_one_column_per_row_softmax(rows):
    generator = torch.Generator().manual_seed(3)
    item = torch.tensor([4, 1, 4, 4, 0, 2, 1, 4, 3, 0, 4, 2])  # (B,) with repeats, as popular items give
    h = torch.nn.functional.normalize(torch.randn(12, 5, generator=generator, dtype=torch.float64), dim=-1)
    table = torch.nn.functional.normalize(torch.randn(5, 5, generator=generator, dtype=torch.float64), dim=-1)
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.15, 0.05, 0.5], dtype=torch.float64))
    expected = torch.nn.functional.cross_entropy(d.in_batch_logits(h, table[item], item, log_q[item], 0.2)[rows],
                                                 torch.arange(12)[rows], reduction="none")
    got = in_batch_softmax(h[rows], item, rows, lambda i: table[i], log_q, 0.2)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)


def test_every_closed_form_matches_autograd_and_finite_differences():
    table = d.check_gradients(seed=1)
    assert len(table) == 5 and table["gradcheck"].all()
    assert (table["max |closed form - autograd|"] < 1e-12).all()


def test_a_wrong_closed_form_is_caught():
    wrong = d._ClosedForm.apply
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, generator=rng, dtype=torch.float64)
    # d cos / da is not b: the closed form below forgets the norms and the second term
    assert not torch.autograd.gradcheck(lambda x: wrong(lambda y: (d.cosine(y, b).sum(), (b,)), x), (a,),
                                        raise_exception=False)
    assert torch.autograd.gradcheck(lambda x: wrong(lambda y: (d.cosine(y, b).sum(),
                                                               (d.cosine_gradient(y, b),)), x), (a,))


def test_output_scale_keeps_the_norm_only_when_the_spread_is_a_standard_deviation():
    text = np.random.default_rng(0).normal(size=(200, 64))
    table = d.output_scale(text, seeds=range(3))
    assert table.loc["standard deviation", "measured |f(x)| / |x|"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["variance", "measured |f(x)| / |x|"] == pytest.approx(64**0.25, rel=0.05)
    assert np.allclose(table["measured |f(x)| / |x|"], table["predicted"], rtol=0.05)
    with pytest.raises(DataError, match="reading must be one of"):
        d.article_init(4, 4, "spread")


def test_a_large_shared_bias_pushes_every_cosine_to_one():
    rng = np.random.default_rng(0)
    table = d.cosine_spread_by_bias(rng.normal(size=(20, 16)), rng.normal(size=(30, 16)), [0.0, 100.0])
    assert abs(table["mean cosine"].iloc[0]) < 0.2 and table["mean cosine"].iloc[1] > 0.99
    assert table["std of cosines"].iloc[1] < 0.01 * table["std of cosines"].iloc[0]


def test_scaling_w_changes_nothing_without_bias_and_acts_as_dividing_b():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(10, 8)), rng.normal(size=(10, 8))
    table = d.scale_invariance(users, items, [0.1, 10.0])
    assert (table["max change, b = 0"] < 1e-12).all() and (table["max |S(cW, b) - S(W, b / c)|"] < 1e-12).all()
    assert abs(d.radial_gradient(users, items)) < 1e-10


def test_synthetic_scales_default_to_the_old_data_and_change_the_truth():
    default, default_truth = synthetic(n_users=20, n_items=30, seed=1)
    same, same_truth = synthetic(n_users=20, n_items=30, seed=1, preference_scale=1.5, shift_scale=1.5)
    assert default.interactions.equals(same.interactions)
    np.testing.assert_array_equal(default_truth.scenario_shifts, same_truth.scenario_shifts)
    _, strong = synthetic(n_users=20, n_items=30, seed=1, shift_scale=3.0, preference_scale=0.0)
    np.testing.assert_allclose(strong.scenario_shifts, 2 * default_truth.scenario_shifts)
    assert not strong.user_preferences.any()
    with pytest.raises(DataError, match="shift_scale must be a finite number >= 0"):
        synthetic(shift_scale=-1.0)


def test_joint_scores_by_hand_equal_the_model_scores_in_each_scenario():
    data, _ = synthetic(n_users=30, n_items=40, interactions_per_user=8, seed=2)
    vectors = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 12)), index=data.items["item_id"])
    train = data.split().train
    model = JointModel(dim=8, num_epochs=2, seed=0, show_progress=False).fit(train, vectors)
    user = int(train["user_id"].iloc[0])
    for scenario in ("mobile", "desktop"):
        np.testing.assert_allclose(d.joint_scores_by_hand(model, user, scenario, vectors),
                                   model.score([user], scenario)[0], atol=1e-4)
    other = d.joint_scores_by_hand(model, user, "desktop", vectors)
    assert not np.allclose(d.joint_scores_by_hand(model, user, "mobile", vectors), other)  # the scenario counts
    star = JointModel(dim=8, num_epochs=1, adaptation="star", seed=0, show_progress=False).fit(train, vectors)
    with pytest.raises(DataError, match="covers JointModel"):
        d.joint_scores_by_hand(star, user, "mobile", vectors)
