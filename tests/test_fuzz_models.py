"""Property-based tests: `recommend` and `TextEncoder.encode` on arbitrary arguments either give a well-formed
result or raise DataError, never another exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from tests.conftest import save_tiny_bert
from xscene_lib.data import DataError
from xscene_lib.data.synthetic import synthetic
from xscene_lib.models import BPRMF, Popularity
from xscene_lib.text import TextEncoder

FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
N_USERS, N_ITEMS = 30, 20
SCENARIOS = ("mobile", "desktop")  # synthetic()'s names for two scenarios
HUGE = st.one_of(st.integers(-(2**70), 2**70), st.integers(-(10**400), 10**400))
NUMBERS = st.one_of(st.integers(-3, N_USERS + 3), HUGE, st.floats(allow_nan=True, allow_infinity=True))
SCALARS = st.one_of(NUMBERS, st.booleans(), st.text(max_size=6), st.none())
ARRAYS = npst.arrays(dtype=st.sampled_from(["int8", "int32", "int64", "uint64", "float16", "float32", "float64",
                                            "bool", "complex128", "<U3", "datetime64[ns]"]),
                     shape=npst.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4))
USERS = st.one_of(st.lists(st.integers(0, N_USERS + 3), max_size=6),  # mostly valid: the success path
                  SCALARS, st.lists(SCALARS, max_size=5), st.lists(st.lists(SCALARS, max_size=2), max_size=3),
                  ARRAYS, st.just([]))
KS = st.one_of(st.integers(-2, N_ITEMS + 5), HUGE, st.booleans(), st.floats(), st.text(max_size=3), st.none(),
               st.integers(1, 5).map(np.int64))
WEIGHT_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 5), HUGE,
                          st.text(max_size=3), st.none(), st.booleans())
SCENARIO_WEIGHTS = st.one_of(
    st.none(), st.sampled_from(["history", "uniform"]), st.text(max_size=8),
    st.dictionaries(st.one_of(st.sampled_from(SCENARIOS), st.text(max_size=5), st.integers()), WEIGHT_VALUES,
                    max_size=3),
    st.dictionaries(st.sampled_from(SCENARIOS), st.floats(0, 10), min_size=1),  # mostly valid
    st.lists(st.floats(0, 1), max_size=3))


@pytest.fixture(scope="module")
def fitted() -> dict[str, object]:
    """A fitted Popularity and BPR-MF on a tiny synthetic dataset, with the items each user has in training."""
    dataset, _ = synthetic(n_users=N_USERS, n_items=N_ITEMS, interactions_per_user=4, seed=0)
    train = dataset.split().train
    models = {"popularity": Popularity().fit(train),
              "bpr": BPRMF(num_epochs=1, dim=8, show_progress=False).fit(train)}
    seen = train.groupby("user_id")["item_id"].agg(set).to_dict()
    return {"models": models, "seen": seen}


def _check_recommendations(table: pd.DataFrame, users: object, k: int, model: object, seen: dict) -> None:
    """The documented columns, and per user (in input order) ranks 1..n with n the unseen items up to k."""
    expected = ["user_id", "item_id", "score", "rank", "source", *(f"from_{s}" for s in model.scenarios_)]
    assert list(table.columns) == expected
    raw = np.asarray(users).reshape(-1).astype(np.int64).tolist()
    blocks = np.cumsum(table["rank"].to_numpy() == 1) - 1  # (n_rows,), which input user each row belongs to
    assert blocks.max(initial=-1) + 1 == len(raw)  # every user gets a row: each has unseen items
    for position, user in enumerate(raw):
        rows = table[blocks == position]
        assert (rows["user_id"] == user).all()
        unseen = N_ITEMS - len(seen.get(user, ()))
        assert rows["rank"].tolist() == list(range(1, min(k, unseen) + 1))
        assert not set(rows["item_id"]) & seen.get(user, set())
        assert rows["item_id"].is_unique
        assert (rows["source"] == ("model" if user in seen else "popularity (user not in training)")).all()
    contributions = table[[f"from_{s}" for s in model.scenarios_]].sum(axis=1)
    assert np.allclose(contributions, table["score"], atol=1e-4)
    assert np.isfinite(table["score"]).all()


@FUZZ
@pytest.mark.parametrize("name", ["popularity", "bpr"])
@given(users=USERS, k=KS, scenario_weights=SCENARIO_WEIGHTS)
# Bug: check_number (xscene_lib/data/validation.py:66) calls math.isfinite on an int too large for a float,
# so a weight of 10**400 raises OverflowError instead of DataError.
@example(users=[0, 1], k=3, scenario_weights={"mobile": 10**400})
# Bug: checked_ids (xscene_lib/data/validation.py:111) does the same for a user id of 10**400: OverflowError.
@example(users=[10**400], k=3, scenario_weights=None)
def test_recommend_returns_top_k_or_raises_data_error(fitted, name, users, k, scenario_weights) -> None:
    model = fitted["models"][name]
    try:
        table = model.recommend(users, k, scenario_weights)
    except DataError:
        return
    _check_recommendations(table, users, k, model, fitted["seen"])


# --- the text encoder ------------------------------------------------------------------------------

WORDS = "the a of and movie story toy heat knife kitchen steel chef set tea green".split()
UNICODE = st.text(st.characters(blacklist_categories=()), max_size=40)  # any code point, surrogates included
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3).map("toy ".__add__)
TEXT = st.one_of(st.text(max_size=40), UNICODE, SURROGATES, st.text(max_size=2000).filter(lambda t: len(t) > 500),
                 st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),
                 st.sampled_from(["", " ", "\t\n", "\x00", "\x07ab", "🎉 toy 🧸", "\u200b", "\u3000"]))
WRONG = st.one_of(st.none(), st.floats(allow_nan=True), st.integers(), st.binary(max_size=6), st.just(pd.NA))
TEXT_LISTS = st.one_of(st.lists(TEXT, max_size=6), st.lists(st.one_of(TEXT, WRONG), max_size=4),
                       TEXT, WRONG, st.lists(st.sampled_from(WORDS), min_size=1, max_size=5))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved with its tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("fuzz-tiny-bert"), WORDS)


@pytest.fixture(scope="module")
def encoders(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TextEncoder, TextEncoder]:
    """The tiny BERT's encoder with a cache in a temporary folder, and one without a cache."""
    options = {"show_progress": False, "device": "cpu", "num_threads": 1}
    cached = TextEncoder(str(tiny_bert), cache_dir=tmp_path_factory.mktemp("fuzz-cache"), **options)
    return cached, TextEncoder(str(tiny_bert), cache=False, **options)


@FUZZ
@pytest.mark.filterwarnings("ignore:.*were truncated:UserWarning")
@given(texts=TEXT_LISTS)
# Bug: encode hashes each text as UTF-8 (text_hash, xscene_lib/text/cache.py:58, from encoder.py:77), so a string
# holding a lone surrogate raises UnicodeEncodeError instead of DataError.
@example(texts=["toy \ud800"])
def test_encode_returns_finite_rows_in_order_or_raises_data_error(encoders, texts) -> None:
    cached, uncached = encoders
    try:
        vectors = cached.encode(texts)
    except DataError:
        return
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.shape == (len(texts), 32)
    assert np.isfinite(vectors).all()
    for text, row in zip(texts, vectors):
        assert np.allclose(uncached.encode([text])[0], row, atol=1e-5)
