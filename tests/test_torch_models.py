"""The trained models: one contract, planted scenario preferences recovered, cold items, determinism,
safetensors checkpoints that resume, and clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from xscene_lib.evaluation import metrics
from xscene_lib.models import ArticleModel
from xscene_lib.models import Popularity
from xscene_lib.models import BPRMF, SingleScenario
from xscene_lib.data import DataError
from xscene_lib.models import JointModel
from xscene_lib.models import NotFittedError, Recommender
from xscene_lib.models import SequentialModel
from xscene_lib.data import SyntheticTruth
from xscene_lib.data.synthetic import synthetic
from xscene_lib.training.loop import BEST, LAST

USER_OFFSET, ITEM_SCALE, ITEM_OFFSET = 1_000, 3, 7  # raw ids differ from indices, so mix-ups show
COLD_ITEM = 5_000  # in the item vectors, never in training
SCENARIOS = ["mobile", "desktop"]
QUICK = dict(num_epochs=2, batch_size=256, show_progress=False)
JOINT = dict(dim=16, learning_rate=1e-2, batch_size=256, show_progress=False)

MODELS: dict[str, Callable[[], Recommender]] = {
    "bpr": lambda: BPRMF(dim=8, **QUICK),
    "single-scenario": lambda: SingleScenario(dim=8, **QUICK),
    "article": lambda: ArticleModel(**QUICK),
    "joint-film": lambda: JointModel(dim=8, adaptation="film", **QUICK),
    "joint-star": lambda: JointModel(dim=8, adaptation="star", **QUICK),
    "joint-no-adaptation": lambda: JointModel(dim=8, adaptation=None, **QUICK),
    "joint-bpr-loss": lambda: JointModel(dim=8, loss="bpr", **QUICK),
    "joint-no-text": lambda: JointModel(dim=8, use_text=False, **QUICK),
    "joint-no-id": lambda: JointModel(dim=8, use_id=False, **QUICK),
    "sasrec": lambda: SequentialModel(dim=8, max_length=10, use_text=False, adaptation=None, **QUICK),
    "seq-joint": lambda: SequentialModel(dim=8, max_length=10, use_text=True, **QUICK),
    "seq-joint-no-text": lambda: SequentialModel(dim=8, max_length=10, use_text=False, **QUICK),
    "seq-joint-sampled": lambda: SequentialModel(dim=8, max_length=10, use_text=True, loss="sampled", **QUICK),
}
SCENARIO_AGNOSTIC = {"bpr", "article", "joint-no-adaptation", "sasrec"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: these tiny models train fastest on one, whatever else the machine runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Toy:
    """The synthetic data with raw ids shifted away from indices, its split, truth and topic vectors."""

    def __init__(self) -> None:
        data, self.truth = synthetic(n_users=300, n_items=200, n_topics=8, interactions_per_user=30, seed=0)
        split = data.split()
        self.train, self.valid, self.test = (self._raw_ids(part) for part in (split.train, split.valid, split.test))
        rng = np.random.default_rng(0)
        topics = np.r_[self.truth.item_topics, 0]  # the cold item gets topic 0
        values = np.eye(8)[topics] + 0.1 * rng.normal(size=(len(topics), 8))  # one-hot topic + noise
        ids = np.r_[np.arange(200) * ITEM_SCALE + ITEM_OFFSET, COLD_ITEM]
        self.vectors = pd.DataFrame(values, index=pd.Index(ids, name="item_id"))
        self.users = np.sort(self.train["user_id"].unique())

    @staticmethod
    def _raw_ids(part: pd.DataFrame) -> pd.DataFrame:
        return part.assign(user_id=part["user_id"] + USER_OFFSET, item_id=part["item_id"] * ITEM_SCALE + ITEM_OFFSET)

    def fit(self, model: Recommender, **kwargs) -> Recommender:
        """Fit on the toy's training rows, with the cold item among the candidates and early stopping."""
        return model.fit(self.train, kwargs.pop("vectors", self.vectors), items=self.vectors.index, valid=self.valid,
                         **kwargs)

    def affinity(self, model: Recommender, scenario: str) -> np.ndarray:
        """The planted affinity in a scenario, rows and columns in the model's order (cold item: nan)."""
        truth: SyntheticTruth = self.truth
        table = np.full((len(model.user_ids_), len(model.item_ids_)), np.nan)
        warm = model.item_ids_ != COLD_ITEM
        rows = model.user_ids_ - USER_OFFSET
        table[:, warm] = truth.affinity(scenario)[rows][:, (model.item_ids_[warm] - ITEM_OFFSET) // ITEM_SCALE]
        return table


@pytest.fixture(scope="module")
def toy() -> Toy:
    return Toy()


@pytest.fixture(scope="module")
def fitted(toy: Toy) -> dict[str, Recommender]:
    """Every model of the contract, fitted once."""
    return {name: toy.fit(make()) for name, make in MODELS.items()}


# --- the contract ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_unfitted_models_say_so(name: str) -> None:
    model = MODELS[name]()
    with pytest.raises(NotFittedError):
        model.score([USER_OFFSET], "mobile")
    with pytest.raises(NotFittedError):
        model.recommend([USER_OFFSET])


@pytest.mark.parametrize("name", MODELS)
def test_every_model_scores_and_recommends_alike(name: str, toy: Toy, fitted: dict[str, Recommender]) -> None:
    model = fitted[name]
    assert list(model.item_ids_) == sorted(toy.vectors.index) and model.scenarios_ == sorted(SCENARIOS)
    history = model.history_[0] if isinstance(model.history_, list) else model.history_  # one per scenario
    assert "valid" in history.frame  # validation rows were used for early stopping
    users = toy.users[[0, 5, 9]]
    by_scenario = {}
    for scenario in SCENARIOS:
        scores = model.score(users, scenario)
        assert scores.shape == (3, len(toy.vectors)) and scores.dtype == np.float32 and np.isfinite(scores).all()
        by_scenario[scenario] = scores
    assert np.array_equal(*by_scenario.values()) == (name in SCENARIO_AGNOSTIC)
    table = model.recommend(users, k=7)
    assert list(table.columns[:5]) == ["user_id", "item_id", "score", "rank", "source"]
    assert len(table) == 21 and set(table["user_id"]) == set(users) and set(table["rank"]) == set(range(1, 8))
    assert table["item_id"].isin(toy.vectors.index).all()
    seen = set(zip(toy.train["user_id"], toy.train["item_id"]))
    assert not any(pair in seen for pair in zip(table["user_id"], table["item_id"]))


def test_single_scenario_falls_back_to_popularity_for_users_new_to_a_scenario(toy: Toy) -> None:
    newcomer = toy.users[0]
    train = toy.train[~((toy.train["user_id"] == newcomer) & (toy.train["scenario"] == "mobile"))]
    model = SingleScenario(dim=8, **QUICK).fit(train, items=toy.vectors.index)
    scores = model.score([newcomer, toy.users[1]], "mobile")
    assert np.array_equal(scores[0], model.popularity_[model.scenario_index("mobile")])
    assert not np.array_equal(scores[1], scores[0])
    assert not np.array_equal(model.score([newcomer], "desktop")[0], model.popularity_[model.scenario_index("desktop")])


# --- what the joint model learns ------------------------------------------------------------------------------


def _ndcg_by_scenario(model: Recommender, toy: Toy) -> pd.Series:
    ranks = metrics.target_ranks(model, toy.train, toy.test)
    return metrics.summarise(metrics.ranking_metrics(ranks, ks=(10,)))["ndcg@10"]


def _top_affinity(model: Recommender, toy: Toy, ranked_in: str, judged_in: str) -> float:
    """Mean planted affinity in `judged_in` of each user's top 10 unseen items as scored in `ranked_in`."""
    scores = model.score(model.user_ids_, ranked_in)
    scores[model.seen_.toarray() > 0] = -np.inf
    scores[:, model.item_ids_ == COLD_ITEM] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    return float(np.take_along_axis(toy.affinity(model, judged_in), top, axis=1).mean())


@pytest.mark.parametrize("adaptation", ["film", "star"])
def test_the_joint_model_recovers_the_planted_scenario_preferences(adaptation: str, toy: Toy) -> None:
    model = toy.fit(JointModel(adaptation=adaptation, **JOINT))
    popularity = Popularity().fit(toy.train, items=toy.vectors.index)
    ndcg, baseline = _ndcg_by_scenario(model, toy), _ndcg_by_scenario(popularity, toy)
    for scenario in SCENARIOS:
        assert ndcg[scenario] > 1.3 * baseline[scenario]
        other = next(name for name in SCENARIOS if name != scenario)
        own = _top_affinity(model, toy, ranked_in=scenario, judged_in=scenario)
        assert own > _top_affinity(model, toy, ranked_in=other, judged_in=scenario) + 0.3
    for scenario in SCENARIOS:  # all scenario weight on s moves the recommendations toward s's planted items
        other = next(name for name in SCENARIOS if name != scenario)
        affinity = pd.DataFrame(toy.affinity(model, scenario), index=model.user_ids_, columns=model.item_ids_)
        means = []
        for weights in ({scenario: 1.0}, {other: 1.0}):
            table = model.recommend(toy.users, k=10, scenario_weights=weights)
            means.append(np.nanmean(affinity.to_numpy()[affinity.index.get_indexer(table["user_id"]),
                                                         affinity.columns.get_indexer(table["item_id"])]))
        assert means[0] > means[1] + 0.3


def test_without_adaptation_the_scenarios_look_alike(toy: Toy) -> None:
    model = toy.fit(JointModel(adaptation=None, **JOINT))
    for scenario in SCENARIOS:
        other = next(name for name in SCENARIOS if name != scenario)
        assert _top_affinity(model, toy, scenario, scenario) == _top_affinity(model, toy, other, scenario)
    with pytest.raises(DataError, match="no scenario parameters"):
        model.scenario_parameters()


def test_a_scenario_with_zero_loss_weight_keeps_its_initial_parameters(toy: Toy) -> None:
    model = toy.fit(JointModel(scenario_loss_weights={"desktop": 0.0}, **QUICK))
    learned = model.scenario_parameters()
    assert set(learned) == set(SCENARIOS) and learned["mobile"]["gamma"].shape == (64,)
    assert np.all(learned["desktop"]["gamma"] == 1.0) and np.all(learned["desktop"]["beta"] == 0.0)
    assert np.all(learned["desktop"]["embedding"] == 0.0)
    assert not np.all(learned["mobile"]["gamma"] == 1.0) and not np.all(learned["mobile"]["embedding"] == 0.0)


# --- cold items -----------------------------------------------------------------------------------------------


def test_a_cold_item_is_scored_from_its_text(toy: Toy, fitted: dict[str, Recommender]) -> None:
    model = toy.fit(JointModel(**JOINT))
    cold = model.item_ids_ == COLD_ITEM
    topic_zero = np.r_[toy.truth.item_topics == 0, False]  # the warm items of the cold item's topic
    scores = model.score(toy.users, "mobile")  # (n_users, n_items)
    assert np.isfinite(scores[:, cold]).all() and np.ptp(scores[:, cold]) > 0
    assert np.corrcoef(scores[:, cold].ravel(), scores[:, topic_zero].mean(axis=1))[0, 1] > 0.9
    table = model.recommend(toy.users[:3], k=len(model.item_ids_))
    assert (table["item_id"] == COLD_ITEM).sum() == 3
    without_text = fitted["joint-no-text"]
    for scenario in SCENARIOS:  # no text and no id part: a zero vector, cosine 0
        assert np.all(without_text.score(toy.users, scenario)[:, cold] == 0.0)


# --- determinism and checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda seed: BPRMF(dim=8, seed=seed, **QUICK),
                                  lambda seed: JointModel(dim=8, adaptation="star", seed=seed, **QUICK)])
def test_same_seed_same_scores_other_seed_other_scores(make: Callable[[int], Recommender], toy: Toy) -> None:
    first, again, other = (toy.fit(make(seed)).score(toy.users, "mobile") for seed in (0, 0, 1))
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("make", [lambda folder: JointModel(dim=8, checkpoint_dir=folder, **QUICK),
                                  lambda folder: SingleScenario(dim=8, checkpoint_dir=folder, **QUICK),
                                  lambda folder: ArticleModel(checkpoint_dir=folder, **QUICK)])
def test_a_finished_run_resumes_from_its_safetensors_checkpoint(make: Callable, toy: Toy, tmp_path: Path) -> None:
    first = toy.fit(make(tmp_path))
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert {file.name for file in files} == {LAST, BEST} and all(load_file(str(file)) for file in files)
    written = [file.stat().st_mtime_ns for file in files]
    again = toy.fit(make(tmp_path))  # loads the finished run instead of training
    assert [file.stat().st_mtime_ns for file in files] == written
    assert np.array_equal(first.score(toy.users, "desktop"), again.score(toy.users, "desktop"))


def test_a_checkpoint_of_other_settings_or_other_vectors_is_refused(toy: Toy, tmp_path: Path) -> None:
    toy.fit(JointModel(dim=8, checkpoint_dir=tmp_path, **QUICK))
    with pytest.raises(DataError, match="another run"):
        toy.fit(JointModel(dim=8, temperature=0.2, checkpoint_dir=tmp_path, **QUICK))
    with pytest.raises(DataError, match="another run"):  # item vectors with another number of columns
        toy.fit(JointModel(dim=8, checkpoint_dir=tmp_path, **QUICK), vectors=toy.vectors.iloc[:, :5])


# --- clear errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, message", [
    (JointModel(dim=0), "dim"), (JointModel(dim=2.5), "dim"), (JointModel(batch_size=-1), "batch_size"),
    (JointModel(adaptation="moe"), "adaptation"), (JointModel(loss="hinge"), "loss"),
    (JointModel(temperature=0.0), "temperature"), (JointModel(use_text="yes"), "use_text"),
    (JointModel(use_text=False, use_id=False), "switch on at least one"),
    (JointModel(scenario_loss_weights={"mobile": -1.0}), "scenario_loss_weights"),
    (JointModel(scenario_loss_weights={"tv": 1.0}), "tv"),
    (JointModel(scenario_loss_weights={"mobile": 0.0, "desktop": 0.0}), "all zero"),
    (JointModel(scenario_loss_weights=[1.0, 2.0]), "mapping"),
    (BPRMF(dim=0), "dim"), (BPRMF(reg=-1.0), "reg"), (SingleScenario(batch_size=0), "batch_size"),
    (ArticleModel(dim=-3), "dim"), (BPRMF(num_epochs=0), "num_epochs"), (JointModel(learning_rate=0), "learning_rate"),
])
def test_bad_settings_are_refused_and_leave_the_model_unfitted(model: Recommender, message: str, toy: Toy) -> None:
    with pytest.raises(DataError, match=message):
        toy.fit(model)
    with pytest.raises(NotFittedError):
        model.score(toy.users[:1], "mobile")


@pytest.mark.parametrize("model, message", [(JointModel(), "use_text=False"), (ArticleModel(), "needs item_vectors")])
def test_text_models_need_item_vectors(model: Recommender, message: str, toy: Toy) -> None:
    with pytest.raises(DataError, match=message):
        model.fit(toy.train)


def test_ids_only_models_need_no_item_vectors(toy: Toy) -> None:
    model = JointModel(dim=8, use_text=False, **QUICK).fit(toy.train)
    assert list(model.item_ids_) == sorted(toy.train["item_id"].unique())  # candidates: the training items
    assert model.score(toy.users[:2], "mobile").shape == (2, len(model.item_ids_))
    given = JointModel(dim=8, use_text=False, **QUICK).fit(toy.train, toy.vectors)  # ignored, but
    assert list(given.item_ids_) == sorted(toy.vectors.index)  # they name the candidates, as with text
