"""Property-based tests: `Dataset.from_frames` on arbitrary frames either builds a consistent dataset or raises
DataError, never another exception, and never merges distinct ids."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xscene_lib.data import Dataset, DataError

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
IDS = st.one_of(st.integers(-(2**70), 2**70), st.integers(-1000, 1000))
RATINGS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.just("good"))
TEXTS = st.text(max_size=12)


@st.composite
def frames(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, list[object], list[object]]:
    """Interactions and items with arbitrary ids (ints or their strings), scenarios, times, ratings and texts."""
    n = draw(st.integers(1, 8))
    as_text = draw(st.booleans())
    users = draw(st.lists(IDS, min_size=n, max_size=n))
    items = draw(st.lists(IDS, min_size=n, max_size=n))
    show = (lambda ids: [str(i) for i in ids]) if as_text else list
    interactions = pd.DataFrame({"user_id": show(users), "item_id": show(items),
                                 "scenario": draw(st.lists(TEXTS, min_size=n, max_size=n)),
                                 "timestamp": draw(st.lists(st.integers(-(2**64), 2**64), min_size=n, max_size=n))})
    if draw(st.booleans()):
        interactions["rating"] = draw(st.lists(RATINGS, min_size=n, max_size=n))
    distinct_items = list(dict.fromkeys(items))
    item_table = pd.DataFrame({"item_id": show(distinct_items),
                               "text": draw(st.lists(TEXTS, min_size=len(distinct_items),
                                                     max_size=len(distinct_items)))})
    return interactions, item_table, list(dict.fromkeys(users)), distinct_items


@FUZZ
@given(frames())
def test_from_frames_succeeds_consistently_or_raises_data_error(case) -> None:
    interactions, items, distinct_users, distinct_items = case
    try:
        dataset = Dataset.from_frames(interactions, items)
    except DataError:
        return
    assert dataset.interactions["user_id"].nunique() == len(distinct_users) == len(dataset.users)
    assert dataset.interactions["item_id"].nunique() == len(distinct_items) == len(dataset.items)
    assert sorted(dataset.users["user_id"].tolist()) == sorted(int(u) for u in distinct_users)
    assert len(dataset.interactions) == len(interactions)
    assert dataset.interactions["rating"].map(float).map(abs).lt(float("inf")).all()
    assert set(dataset.scenarios) == set(dataset.interactions["scenario"])
    dataset.describe()
    dataset.split()
