"""The sequential model: it learns a planted next-item rule, reads the validation rows after fit, scores cold
items from their text, scores by user vector . item vector, repeats with a seed, and refuses bad settings."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xscene_lib.data import DataError
from xscene_lib.evaluation import metrics
from xscene_lib.models import NotFittedError, SequentialModel
from xscene_lib.models.sequence_net import PAD, FullSoftmaxLoss, SequenceNet, whitened
from xscene_lib.models.histories import recent, windows
from xscene_lib.training.loop import BEST, LAST

N_ITEMS, N_USERS, STEPS = 30, 60, 12  # item i is always followed by item i + 1 (mod N_ITEMS)
COLD = (100, 101)  # in the item vectors, never in the interactions; COLD[0] has the text of TWIN
TWIN = 5
QUICK = dict(dim=16, num_layers=1, num_heads=1, max_length=8, num_epochs=30, learning_rate=1e-2, patience=30,
             batch_size=32, show_progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: these tiny models train fastest on one, whatever else the machine runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Rule:
    """Users walking through the items in order from random starts, in two scenarios, rows shuffled."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        starts = rng.integers(N_ITEMS, size=N_USERS)
        step = np.tile(np.arange(STEPS), N_USERS)
        frame = pd.DataFrame({"user_id": np.repeat(np.arange(N_USERS), STEPS) + 500,
                              "item_id": (np.repeat(starts, STEPS) + step) % N_ITEMS,
                              "scenario": rng.choice(["a", "b"], size=N_USERS * STEPS),
                              "timestamp": 1_000 + step})
        frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # time order only via timestamp
        last = STEPS - 1 - (frame["timestamp"] - 1_000)
        self.train, self.valid, self.test = frame[last >= 2], frame[last == 1], frame[last == 0]
        text = rng.normal(size=(N_ITEMS + len(COLD), 8))
        text[N_ITEMS] = text[TWIN]
        self.vectors = pd.DataFrame(text, index=pd.Index([*range(N_ITEMS), *COLD], name="item_id"))

    def hit_rate(self, model: SequentialModel, test: pd.DataFrame | None = None) -> float:
        """The share of test rows whose item the model ranks first (training and validation items left out)."""
        ranks = metrics.target_ranks(model, pd.concat([self.train, self.valid]), self.test if test is None else test)
        return float((ranks["rank"] == 1).mean())


@pytest.fixture(scope="module")
def rule() -> Rule:
    return Rule()


@pytest.fixture(scope="module")
def fitted(rule: Rule) -> SequentialModel:
    return SequentialModel(**QUICK).fit(rule.train, valid=rule.valid)


def test_the_planted_next_item_rule_is_learned(rule: Rule, fitted: SequentialModel) -> None:
    assert rule.hit_rate(fitted) > 0.9  # chance: 1 in N_ITEMS - STEPS + 1
    assert fitted.history_.frame["valid"].max() > 0.9  # while fitting, validation is predicted from training rows


def test_sampled_softmax_learns_the_rule_too(rule: Rule) -> None:
    model = SequentialModel(loss="sampled", **QUICK).fit(rule.train, valid=rule.valid)
    assert rule.hit_rate(model) > 0.8


def test_after_fit_the_history_includes_the_validation_rows(rule: Rule, fitted: SequentialModel) -> None:
    odd = rule.valid["user_id"] % 2 == 1  # half the users get another latest item; the rest keep early stopping apt
    moved = rule.valid.assign(item_id=np.where(odd, (rule.valid["item_id"] + 10) % N_ITEMS, rule.valid["item_id"]))
    model = SequentialModel(**QUICK).fit(rule.train, valid=moved)
    for fit, valid in ((fitted, rule.valid), (model, moved)):  # the next item follows whichever latest item it read
        latest = valid.set_index("user_id").loc[rule.test["user_id"], "item_id"].to_numpy()
        ranks = metrics.target_ranks(fit, pd.concat([rule.train, valid]),
                                     rule.test.assign(item_id=(latest + 1) % N_ITEMS))
        assert (ranks["rank"] == 1).mean() > 0.9
    assert not np.array_equal(fitted.score([501], "a"), model.score([501], "a"))


def test_set_history_scores_from_the_rows_given(rule: Rule, fitted: SequentialModel) -> None:
    model = copy.deepcopy(fitted)
    unknown = pd.DataFrame({"user_id": [9_999], "item_id": [0], "scenario": ["a"], "timestamp": [5]})
    assert model.set_history(pd.concat([rule.train, unknown])) is model  # unknown users are left out
    ranks = metrics.target_ranks(model, rule.train, rule.valid)  # validation predicted from training rows alone
    assert (ranks["rank"] == 1).mean() > 0.9
    jumped = rule.train.assign(item_id=(rule.train["item_id"] + 7) % N_ITEMS)  # every latest item moved by 7
    ranks = metrics.target_ranks(model.set_history(jumped), jumped,
                                 rule.valid.assign(item_id=(rule.valid["item_id"] + 7) % N_ITEMS))
    assert (ranks["rank"] == 1).mean() > 0.9
    assert np.all(model.set_history(unknown).recent_items_ == PAD)  # no usable row: empty histories
    with pytest.raises(DataError, match="scenario"):
        model.set_history(rule.train.drop(columns="scenario"))
    with pytest.raises(NotFittedError):
        SequentialModel(**QUICK).set_history(rule.train)


def test_cold_items_are_scored_from_their_text_only_with_text(rule: Rule) -> None:
    with_text = SequentialModel(use_text=True, **QUICK).fit(rule.train, rule.vectors, valid=rule.valid)
    without = SequentialModel(**QUICK).fit(rule.train, rule.vectors, valid=rule.valid)
    users = np.sort(rule.train["user_id"].unique())
    for model in (with_text, without):
        assert list(model.item_ids_) == [*range(N_ITEMS), *COLD]
    cold = np.isin(with_text.item_ids_, COLD)
    scores = with_text.score(users, "a")
    assert np.all(scores[:, cold] != 0) and np.ptp(scores[:, cold]) > 0
    text = with_text.module_.parts()[1].detach().numpy()  # (n_items, dim): the text parts u_i
    np.testing.assert_allclose(with_text.item_vectors()[cold][0], text[TWIN], rtol=1e-5, atol=1e-6)
    assert np.all(without.score(users, "a")[:, cold] == 0.0)
    assert rule.hit_rate(with_text) > 0.8


def text_part_hit_rate(model: SequentialModel, rule: Rule) -> float:
    """The share of test rows whose item ranks first among the training items by h_s . u_i, the text parts alone."""
    text = model.module_.parts()[1].detach().numpy()[:N_ITEMS]  # (N_ITEMS, dim): u_i
    hits = []
    for scenario, rows in rule.test.groupby("scenario"):
        users = model.user_vectors(model.user_index(rows["user_id"]), model.scenario_index(scenario))  # (n, dim)
        hits.append(model.item_ids_[(users @ text.T).argmax(axis=1)] == rows["item_id"].to_numpy())
    return float(np.concatenate(hits).mean())


def test_a_text_loss_term_makes_the_text_part_rank_items_alone(rule: Rule, fitted: SequentialModel) -> None:
    settings = QUICK | dict(use_text=True, id_dropout=0.0, num_epochs=60, patience=60)
    plain = SequentialModel(**settings).fit(rule.train, rule.vectors, valid=rule.valid)
    weighted = SequentialModel(text_loss_weight=3.0, **settings).fit(rule.train, rule.vectors, valid=rule.valid)
    assert rule.hit_rate(weighted) > 0.9  # the whole item vector still learns the rule
    assert text_part_hit_rate(weighted, rule) > text_part_hit_rate(plain, rule) + 0.2  # seed 0: 0.83 vs 0.52
    ids_only = SequentialModel(text_loss_weight=3.0, **QUICK).fit(rule.train, valid=rule.valid)
    assert np.array_equal(ids_only.score([501, 502], "a"), fitted.score([501, 502], "a"))  # no text: no term


def test_text_components_sets_how_many_whitened_parts_the_adaptor_reads(rule: Rule) -> None:
    settings = QUICK | dict(use_text=True, num_epochs=1)
    for components, kept in ((None, 8), (3, 3), (100, 8)):  # None: up to dim (16); never more than the text's 8
        model = SequentialModel(text_components=components, **settings).fit(rule.train, rule.vectors)
        assert model.module_.text.text.shape == (N_ITEMS + len(COLD), kept)
    narrow = SequentialModel(**(settings | {"dim": 4})).fit(rule.train, rule.vectors)
    assert narrow.module_.text.text.shape[1] == 4  # the default follows dim
    every = SequentialModel(text_components="all", **(settings | {"dim": 4})).fit(rule.train, rule.vectors)
    assert every.module_.text.text.shape[1] == 8  # "all": the text's width, whatever dim is


def test_the_score_is_user_vector_dot_item_vector(rule: Rule, fitted: SequentialModel) -> None:
    users = np.sort(rule.train["user_id"].unique())[:7]
    for scenario in ("a", "b"):
        product = fitted.user_vectors(fitted.user_index(users), fitted.scenario_index(scenario)) @ \
            fitted.item_vectors().T
        np.testing.assert_allclose(fitted.score(users, scenario), product, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(fitted.score(users, "a"), fitted.score(users, "b"))  # FiLM to the next scenario


def test_same_seed_same_scores_other_seed_other_scores(rule: Rule) -> None:
    settings = QUICK | dict(num_epochs=3, use_text=True)
    users = np.sort(rule.train["user_id"].unique())
    first, again, other = (SequentialModel(seed=seed, **settings).fit(rule.train, rule.vectors, valid=rule.valid)
                           .score(users, "b") for seed in (0, 0, 1))
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_a_finished_run_resumes_from_its_checkpoint(rule: Rule, tmp_path: Path) -> None:
    settings = QUICK | dict(num_epochs=3, use_text=True, checkpoint_dir=tmp_path)
    first = SequentialModel(**settings).fit(rule.train, rule.vectors, valid=rule.valid)
    files = sorted(tmp_path.rglob("*.safetensors"))
    written = [file.stat().st_mtime_ns for file in files]
    again = SequentialModel(**settings).fit(rule.train, rule.vectors, valid=rule.valid)  # loads, does not train
    assert {file.name for file in files} == {LAST, BEST} and [file.stat().st_mtime_ns for file in files] == written
    assert np.array_equal(first.score([500, 501], "a"), again.score([500, 501], "a"))


def test_long_histories_become_windows_counted_from_the_end() -> None:
    users, items = np.zeros(7, np.int64), np.arange(7)
    inputs, input_scenarios, targets, target_scenarios, owner = windows(users, items, items % 2, length=3)
    np.testing.assert_array_equal(inputs, [[4, 5, 6], [1, 2, 3]])  # item index + 1
    np.testing.assert_array_equal(targets, [[4, 5, 6], [1, 2, 3]])
    np.testing.assert_array_equal(input_scenarios, [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(target_scenarios, [[0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(owner, [0, 0])
    short = windows(np.array([0, 0, 0, 1]), np.array([7, 8, 9, 3]), np.zeros(4, np.int64), length=4)
    np.testing.assert_array_equal(short[0], [[PAD, PAD, 8, 9]])  # user 1's single item predicts nothing
    np.testing.assert_array_equal(short[2], [[-1, -1, 8, 9]])
    np.testing.assert_array_equal(short[4], [0])
    latest, _ = recent(np.array([0, 0, 0, 1]), np.array([7, 8, 9, 3]), np.zeros(4, np.int64), 2, length=2)
    np.testing.assert_array_equal(latest, [[9, 10], [PAD, 4]])


def test_the_full_softmax_loss_has_cross_entropys_value_and_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden, table = torch.randn(50, 8, generator=generator), torch.randn(20, 8, generator=generator)
    target = torch.randint(20, (50,), generator=generator)
    results = []
    for loss in (lambda h, t: torch.nn.functional.cross_entropy(h @ t.T, target), lambda h, t:
                 FullSoftmaxLoss.apply(h, t, target)):
        h, t = hidden.clone().requires_grad_(), (table * 3).requires_grad_()  # logits far apart: needs the max shift
        value = loss(h, t) * 2.5  # a scale, so the incoming gradient is not 1
        value.backward()
        results.append((value.detach(), h.grad, t.grad))
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_columns_of_padding_in_every_row_change_no_output() -> None:
    torch.manual_seed(0)
    net = SequenceNet(9, 2, 8, 2, 2, 6, 0.2, "film", True, whitened(np.random.default_rng(0).normal(size=(9, 3)), 8),
                      np.ones(9, bool)).eval()
    sequence = torch.tensor([[3, 1, 4, 1, 5, 9], [PAD, PAD, PAD, 2, 6, 5]])  # (2, 6), item index + 1
    scenarios = torch.tensor([[0, 1, 0, 1, 0, 1], [0, 0, 0, 1, 1, 0]])
    with torch.inference_mode():
        both = net.encode(sequence, scenarios)
        alone = net.encode(sequence[1:], scenarios[1:])  # its 3 leading columns are padding in every row
    assert both.shape == (2, 6, 8) and alone.shape == (1, 3, 8)
    torch.testing.assert_close(alone[0], both[1, -3:], rtol=1e-5, atol=1e-5)


def test_a_subset_of_items_gets_the_rows_of_the_whole_table() -> None:
    torch.manual_seed(0)
    known = np.r_[np.ones(7, bool), np.zeros(2, bool)]  # the last two items never in training: no id part
    net = SequenceNet(9, 2, 8, 1, 2, 6, 0.0, "film", True, whitened(np.random.default_rng(0).normal(size=(9, 3)), 8),
                      known)
    index = torch.tensor([[8, 2], [0, 7]])
    keep = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [1.0]])  # (9, 1): items 0, 3 lose ids
    whole = net.items(keep)  # (9, dim)
    torch.testing.assert_close(net.items(keep[index], index), whole[index])  # (2, 2, dim)
    torch.testing.assert_close(net.items(None, index[1]), net.items()[index[1]])
    torch.testing.assert_close(whole[8], net.text()[8])  # an item never in training is its text part alone


@pytest.mark.parametrize("n_users, batch_size, expected", [(943, 128, 40), (6_040, 128, 10), (60, 32, 160)])
def test_default_patience_is_320_optimiser_steps_and_at_least_10_epochs(n_users: int, batch_size: int,
                                                                       expected: int) -> None:
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), 3), "item_id": np.tile([0, 1, 2], n_users),
                          "scenario": "a", "timestamp": np.tile([1, 2, 3], n_users)})
    model = SequentialModel(**QUICK | {"patience": None, "num_epochs": 1, "batch_size": batch_size})
    assert model.fit(frame).patience_ == expected  # ceil(320 / ceil(n_users / batch_size)), at least 10
    assert SequentialModel(**QUICK | {"patience": 7, "num_epochs": 1}).fit(frame).patience_ == 7


def test_auto_loss_samples_only_in_large_catalogues(rule: Rule, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = QUICK | {"num_epochs": 1}
    assert SequentialModel(**quick).fit(rule.train).loss_ == "softmax"  # 30 items
    monkeypatch.setattr("xscene_lib.models.sequential.FULL_SOFTMAX_MAX_ITEMS", N_ITEMS - 1)
    assert SequentialModel(**quick).fit(rule.train).loss_ == "sampled"
    assert SequentialModel(**quick | {"loss": "softmax"}).fit(rule.train).loss_ == "softmax"


def test_whitening_gives_uncorrelated_unit_variance_components() -> None:
    text = np.random.default_rng(0).normal(size=(200, 6)) @ np.random.default_rng(1).normal(size=(6, 6))
    white = whitened(text, dim=4)
    assert white.shape == (200, 4)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(4), atol=1e-4)
    assert whitened(np.ones((5, 3)), dim=4).shape == (5, 1)  # vectors that do not vary: nothing to whiten


@pytest.mark.parametrize("settings, message", [
    ({"dim": 0}, "dim"), ({"dim": 16, "num_heads": 3}, "multiple of num_heads"), ({"max_length": 0}, "max_length"),
    ({"num_layers": 1.5}, "num_layers"), ({"dropout": 1.0}, "dropout"), ({"id_dropout": -0.1}, "id_dropout"),
    ({"loss": "hinge"}, "loss"), ({"adaptation": "star"}, "adaptation"), ({"use_text": "yes"}, "use_text"),
    ({"use_id": False}, "switch on at least one"), ({"seed": -1}, "seed"), ({"learning_rate": 0}, "learning_rate"),
    ({"num_epochs": 0}, "num_epochs"), ({"batch_size": True}, "batch_size"), ({"patience": 0}, "patience"),
    ({"text_loss_weight": -1.0}, "text_loss_weight"), ({"text_components": 0}, "text_components"),
    ({"text_components": "every"}, "text_components"), ({"ema_decay": 1.0}, "ema_decay"),
])
def test_bad_settings_are_refused_and_leave_the_model_unfitted(settings: dict, message: str, rule: Rule) -> None:
    model = SequentialModel(**{"show_progress": False} | settings)
    with pytest.raises(DataError, match=message):
        model.fit(rule.train, valid=rule.valid)
    with pytest.raises(NotFittedError):
        model.score([500], "a")


def test_text_needs_item_vectors(rule: Rule) -> None:
    with pytest.raises(DataError, match="use_text=False"):
        SequentialModel(use_text=True).fit(rule.train)
