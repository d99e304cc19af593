"""FAISS retrieval: exact search equals brute force, approximate recall is measured, recommend() from an index
equals recommend() by full ranking, and bad input gets clear errors."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from xscene_lib.models import BPRMF, SingleScenario
from xscene_lib.data import DataError
from xscene_lib.models import JointModel
from xscene_lib.models import NotFittedError, Recommender
from xscene_lib.models import ItemIndex, item_vectors, recall_at_k, retrieve
from xscene_lib.data.synthetic import synthetic

QUICK = dict(num_epochs=2, batch_size=256, show_progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch and one FAISS thread: tiny work runs fastest on one, and an HNSW build on one repeats exactly."""
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """2,000 items in 20 clusters and 50 queries, 16 d, seeded. shape: (2000, 16), (50, 16)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    items = centres[rng.integers(20, size=2_000)] + 0.3 * rng.normal(size=(2_000, 16))
    queries = centres[rng.integers(20, size=50)] + 0.3 * rng.normal(size=(50, 16))
    return items.astype(np.float32), queries.astype(np.float32)


def brute_top(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k by scoring every item in float64 and sorting. shape: (B, k), (B, k)."""
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    top = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


# --- the index ----------------------------------------------------------------------------------------------------


def test_exact_index_finds_the_brute_force_top_k(clustered) -> None:
    items, queries = clustered
    scores, found = ItemIndex("exact").fit(items).search(queries, 10)
    expected_scores, expected = brute_top(items, queries, 10)
    assert found.shape == (50, 10) and found.dtype == np.int64
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-4)


def test_ivf_searching_every_cell_is_exact_and_one_cell_is_not(clustered) -> None:
    items, queries = clustered
    _, exact = ItemIndex("exact").fit(items).search(queries, 10)
    index = ItemIndex("ivf", nlist=40, nprobe=40).fit(items)
    assert recall_at_k(index.search(queries, 10)[1], exact) == 1.0
    index.nprobe = 1  # read at search time: no rebuild
    assert recall_at_k(index.search(queries, 10)[1], exact) < 1.0


def test_hnsw_recall_rises_with_ef_search(clustered) -> None:
    items, queries = clustered
    _, exact = ItemIndex("exact").fit(items).search(queries, 10)
    index = ItemIndex("hnsw", m=8, ef_construction=40, ef_search=10).fit(items)
    low = recall_at_k(index.search(queries, 10)[1], exact)
    index.ef_search = 1_000  # half the catalogue: close to exhaustive
    high = recall_at_k(index.search(queries, 10)[1], exact)
    assert high >= 0.95 and high >= low


def test_an_index_that_finds_fewer_than_k_pads_with_minus_one() -> None:
    rng = np.random.default_rng(1)
    near = np.r_[np.ones((50, 1)), -np.ones((50, 1))]  # two clusters, one on each side of the origin
    items = np.c_[near * 10, 0.1 * rng.normal(size=(100, 3))].astype(np.float32)
    scores, found = ItemIndex("ivf", nlist=2, nprobe=1).fit(items).search(np.array([[1.0, 0, 0, 0]]), 100)
    assert (found[0, :50] < 50).all() and (found[0, :50] >= 0).all()  # the cell of the query, all of it
    assert (found[0, 50:] == -1).all() and np.isneginf(scores[0, 50:]).all()


def test_recall_at_k_known_answer() -> None:
    approximate = np.array([[0, 1], [2, -1]])
    exact = np.array([[1, 0], [2, 4]])
    assert recall_at_k(approximate, exact) == pytest.approx((2 / 2 + 1 / 2) / 2)
    with pytest.raises(DataError, match="same shape"):
        recall_at_k(approximate, exact[:, :1])


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_dimension_mismatch_is_a_clear_error(kind: str, clustered) -> None:
    items, queries = clustered
    index = ItemIndex(kind, nlist=10).fit(items)
    with pytest.raises(DataError, match="16-dimensional"):
        index.search(queries[:, :8], 5)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ItemIndex("exact").fit(np.zeros((0, 4), np.float32)), "empty"),
    (lambda: ItemIndex("exact").fit(np.array([[1.0, np.nan]])), "NaN or infinite"),
    (lambda: ItemIndex("exact").fit(np.ones(4)), "2-d"),
    (lambda: ItemIndex("annoy").fit(np.ones((4, 2))), "unknown"),
    (lambda: ItemIndex("ivf", nlist=10).fit(np.ones((4, 2))), "more cells than there are items"),
    (lambda: ItemIndex("hnsw", m=0).fit(np.ones((4, 2))), "positive integer"),
    (lambda: ItemIndex("exact").fit(np.eye(4)).search(np.eye(4), 5), "k=5 is more than the 4 items"),
    (lambda: ItemIndex("exact").fit(np.eye(4)).search(np.eye(4), 0), "positive integer"),
    (lambda: ItemIndex("exact").fit(np.eye(4)).search(np.array([[np.inf, 0, 0, 0]]), 1), "NaN or infinite"),
])
def test_bad_input_is_a_clear_error(make, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make()


def test_unfitted_index_says_so() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        ItemIndex().search(np.eye(2), 1)


# --- recommend() from an index ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic training rows (two scenarios) and 12-d item vectors with a cold item (999)."""
    data, _ = synthetic(n_users=120, n_items=150, n_topics=6, interactions_per_user=20, seed=0)
    values = np.random.default_rng(0).normal(size=(151, 12))
    return data.split().train, pd.DataFrame(values, index=np.r_[np.arange(150), 999])


@pytest.fixture(scope="module")
def fitted(toy) -> dict[str, Recommender]:
    train, vectors = toy
    return {name: make().fit(train, vectors, items=vectors.index) for name, make in {
        "bpr": lambda: BPRMF(dim=8, **QUICK),
        "joint-film": lambda: JointModel(dim=8, **QUICK),
        "joint-star-no-id": lambda: JointModel(dim=8, adaptation="star", use_id=False, **QUICK),
    }.items()}


@pytest.mark.parametrize("name", ["bpr", "joint-film", "joint-star-no-id"])
@pytest.mark.parametrize("weights", [None, "uniform", {"mobile": 1.0}, {"mobile": 0.3, "desktop": 0.7}])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_from_an_exact_index_equals_full_ranking(fitted, name: str, weights, exclude_seen: bool) -> None:
    model = fitted[name]
    users = np.r_[model.user_ids_[::3], 123_456, model.user_ids_[0]]  # an unknown user, a repeated one
    index = ItemIndex("exact").fit(item_vectors(model))
    expected = model.recommend(users, 7, weights, exclude_seen)
    got = model.recommend(users, 7, weights, exclude_seen, index=index)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got.drop(columns=["score", *expected.filter(like="from_").columns]),
                                  expected.drop(columns=["score", *expected.filter(like="from_").columns]))
    np.testing.assert_allclose(got.filter(like="from_"), expected.filter(like="from_"), atol=1e-4)
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-4)


def test_recommend_from_an_approximate_index_keeps_the_contract(fitted) -> None:
    model = fitted["joint-film"]
    users = model.user_ids_[:20]
    index = ItemIndex("hnsw", ef_search=200).fit(item_vectors(model))
    got = retrieve(model, users, index, k=5)
    expected = model.recommend(users, 5)
    assert recall_at_k(got["item_id"].to_numpy().reshape(20, 5), expected["item_id"].to_numpy().reshape(20, 5)) > 0.9
    seen = model.seen_[model.user_index(got["user_id"]), pd.Index(model.item_ids_).get_indexer(got["item_id"])]
    assert not np.asarray(seen).any()  # seen items stay out


def test_an_index_of_other_vectors_is_refused(fitted) -> None:
    model = fitted["bpr"]
    stale = ItemIndex("exact").fit(item_vectors(model) + 1.0)  # same shape, other vectors
    with pytest.raises(DataError, match="other item vectors"):
        model.recommend(model.user_ids_[:3], 5, index=stale)
    with pytest.raises(DataError, match="holds 151 items of 7 dimensions"):
        model.recommend(model.user_ids_[:3], 5, index=ItemIndex("exact").fit(item_vectors(model)[:, :7]))
    with pytest.raises(NotFittedError, match="ItemIndex"):
        model.recommend(model.user_ids_[:3], 5, index=ItemIndex("exact"))


def test_models_that_are_not_one_inner_product_are_refused(toy) -> None:
    train, vectors = toy
    single = SingleScenario(dim=4, **QUICK).fit(train, items=vectors.index)
    with pytest.raises(DataError, match="cannot be served from an index"):
        item_vectors(single)
    with pytest.raises(NotFittedError):
        item_vectors(BPRMF())
