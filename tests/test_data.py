import dataclasses

import numpy as np
import pandas as pd
import pytest

from xscene_lib.data import Dataset, Description, Split, cold_start, DataError
from xscene_lib.data.dataset import INTERACTION_COLUMNS
from xscene_lib.data import assign_scenarios, scenario_views
from xscene_lib.data.scenarios import SCENARIO_VIEWS

# (user_id, item_id, scenario, timestamp), deliberately not in time order.
# user 1 in time: 10 a i10, 20 b i11, 30 a i12, 40 b i13, 50 a i14
# user 2 in time: 5 a i10, then a tie at 6: i11 (a, listed first) and i12 (b)
# user 3 in time: 1 b i10, 2 b i11 (too short to hold anything out)
TOY_ROWS = [(1, 14, "a", 50), (2, 11, "a", 6), (1, 10, "a", 10), (3, 11, "b", 2), (2, 12, "b", 6),
            (1, 13, "b", 40), (2, 10, "a", 5), (1, 11, "b", 20), (3, 10, "b", 1), (1, 12, "a", 30)]


def toy_interactions(rows=TOY_ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "scenario", "timestamp"])


def toy_items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": [10, 11, 12, 13, 14], "text": ["ten", "eleven", "twelve", "thirteen", "14"]})


def toy_dataset(**kwargs) -> Dataset:
    return Dataset.from_frames(toy_interactions(), toy_items(), **kwargs)


def pairs(frame: pd.DataFrame) -> list[tuple[int, int]]:
    return list(zip(frame["user_id"].tolist(), frame["item_id"].tolist()))


def raises(match: str):
    return pytest.raises(DataError, match=match)


# --- from_frames: normalisation -------------------------------------------------------------------------------

def test_from_frames_normalises_dtypes_keeps_extras_and_resets_index():
    interactions = toy_interactions().assign(user_id=lambda f: f["user_id"].astype(str),
                                             item_id=lambda f: f["item_id"].astype(float), device=["x"] * 10)
    interactions.index = range(100, 110)
    data = Dataset.from_frames(interactions, toy_items(), name="toy")
    frame = data.interactions
    assert list(frame.columns) == [*INTERACTION_COLUMNS, "device"]
    assert frame.dtypes.astype(str).tolist()[:5] == ["int64", "int64", "str", "int64", "float32"]
    assert (frame["rating"] == 1.0).all() and frame.index.tolist() == list(range(10))
    assert frame["user_id"].tolist()[:3] == [1, 2, 1]
    assert data.scenarios == ["a", "b"] and data.name == "toy" and data.view == "custom"
    assert data.users["user_id"].tolist() == [1, 2, 3]
    assert data.items["item_id"].dtype == "int64"


def test_from_frames_keeps_ratings_converts_datetimes_and_honours_scenario_order():
    interactions = toy_interactions().assign(rating=[5, 4, 3, 2, 1, 5, 4, 3, 2, 1],
                                             timestamp=lambda f: pd.to_datetime(f["timestamp"], unit="s"))
    data = Dataset.from_frames(interactions, toy_items(), scenarios=["b", "a"])
    assert data.interactions["rating"].dtype == "float32" and data.interactions["rating"].iloc[0] == 5.0
    assert data.interactions["timestamp"].tolist()[:2] == [50, 6]
    assert data.scenarios == ["b", "a"]
    categorical = toy_interactions().assign(scenario=lambda f: pd.Categorical(f["scenario"], ["b", "a"]))
    assert Dataset.from_frames(categorical, toy_items()).scenarios == ["b", "a"]


def test_dataset_is_frozen_and_has_a_short_repr():
    data = toy_dataset()
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"
    assert repr(data) == ("Dataset(name='custom', view='custom', scenarios=['a', 'b'], interactions=10, "
                          "items=5, users=3)")


# --- from_frames: one test per bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("column", ["user_id", "item_id", "scenario", "timestamp"])
def test_missing_interaction_column_is_named_with_the_found_ones(column):
    with raises(rf"interactions lacks column\(s\) \['{column}'\] \(found: .*rename your columns"):
        Dataset.from_frames(toy_interactions().drop(columns=column), toy_items())


def test_misnamed_column_shows_the_found_name():
    with raises(r"lacks column\(s\) \['user_id'\] \(found: \['user', 'item_id'"):
        Dataset.from_frames(toy_interactions().rename(columns={"user_id": "user"}), toy_items())


@pytest.mark.parametrize("column", ["item_id", "text"])
def test_missing_item_column(column):
    with raises(rf"items lacks column\(s\) \['{column}'\]"):
        Dataset.from_frames(toy_interactions(), toy_items().drop(columns=column))


def test_missing_user_column():
    with raises(r"users lacks column\(s\) \['user_id'\]"):
        Dataset.from_frames(toy_interactions(), toy_items(), pd.DataFrame({"id": [1, 2, 3]}))


def test_not_a_frame():
    with raises("interactions must be a pandas DataFrame, got dict"):
        Dataset.from_frames(toy_interactions().to_dict(), toy_items())


def test_non_numeric_id_names_column_and_example():
    interactions = toy_interactions().astype({"user_id": object})
    interactions.loc[3, "user_id"] = "alice"
    with raises(r"column 'user_id' must hold integers; 1 value\(s\) are not, e.g. 'alice' at row 3; map them"):
        Dataset.from_frames(interactions, toy_items())


def test_fractional_item_id():
    interactions = toy_interactions().astype({"item_id": float})
    interactions.loc[0, "item_id"] = 10.5
    with raises(r"column 'item_id' must hold integers.*e.g. 10.5"):
        Dataset.from_frames(interactions, toy_items())


def test_non_numeric_timestamp_suggests_unix_seconds():
    interactions = toy_interactions().astype({"timestamp": object})
    interactions.loc[1, "timestamp"] = "yesterday"
    with raises(r"column 'timestamp' must hold integers.*'yesterday'.*unix seconds"):
        Dataset.from_frames(interactions, toy_items())


def test_non_numeric_rating():
    with raises(r"column 'rating' must be numeric, e.g. 'good'"):
        Dataset.from_frames(toy_interactions().assign(rating="good"), toy_items())


@pytest.mark.parametrize("ids", [
    [2**64 + 1, 2**64 + 2],  # Python ints beyond uint64
    np.array([2**63 + 1, 2**63 + 2], dtype="uint64"),  # beyond int64
    ["18446744073709551617", "18446744073709551618"],  # 20-digit strings (read as floats, they would merge)
    ["12345678901234567890", "12345678901234567891"],
    [2.0**60, 2.0**60 + 2**8],  # floats that are integers but too large to be exact
])
def test_ids_beyond_int64_are_refused_not_merged(ids):
    interactions = pd.DataFrame({"user_id": ids, "item_id": [10, 10], "scenario": "a", "timestamp": [1, 2]})
    with raises(r"column 'user_id' holds 2 integer\(s\) beyond the 64-bit range.*could merge; map them to "
                r"integer ids, e.g. with pd.factorize"):
        Dataset.from_frames(interactions, toy_items())
    mapped = interactions.assign(user_id=pd.factorize(interactions["user_id"])[0])
    assert Dataset.from_frames(mapped, toy_items()).interactions["user_id"].nunique() == 2


def test_the_largest_int64_ids_stay_distinct():
    top = np.iinfo(np.int64).max
    interactions = pd.DataFrame({"user_id": [top, top - 1], "item_id": [10, 10], "scenario": "a", "timestamp": 1})
    assert Dataset.from_frames(interactions, toy_items()).users["user_id"].tolist() == [top - 1, top]


@pytest.mark.parametrize("rating", [np.inf, -np.inf, 1e39])
def test_infinite_ratings_are_refused_like_missing_ones(rating):
    interactions = toy_interactions().assign(rating=1.0)
    interactions.loc[3, "rating"] = rating
    with raises(r"column 'rating' must hold finite numbers within float32 range, e.g. .* at row 3"):
        Dataset.from_frames(interactions, toy_items())


def test_missing_value_in_required_column():
    interactions = toy_interactions()
    interactions.loc[4, "scenario"] = None
    with raises(r"column 'scenario' has 1 missing value\(s\) \(first at row 4\); fill or drop"):
        Dataset.from_frames(interactions, toy_items())


def test_duplicate_interactions_show_count_and_example():
    interactions = pd.concat([toy_interactions(), toy_interactions().iloc[[2, 5]]])
    with raises(r"interactions has 2 duplicate row\(s\).*'user_id': 1, 'item_id': 10.*drop_duplicates"):
        Dataset.from_frames(interactions, toy_items())


def test_duplicate_item_and_user_ids():
    with raises(r"items has 1 duplicate row\(s\) on \['item_id'\]"):
        Dataset.from_frames(toy_interactions(), pd.concat([toy_items(), toy_items().iloc[:1]]))
    with raises(r"users has 1 duplicate row\(s\) on \['user_id'\]"):
        Dataset.from_frames(toy_interactions(), toy_items(), pd.DataFrame({"user_id": [1, 2, 3, 3]}))


def test_unknown_item_and_unknown_user():
    with raises(r"1 interaction\(s\) refer to item_id values missing from items, e.g. 14; add them"):
        Dataset.from_frames(toy_interactions(), toy_items().iloc[:4])
    with raises(r"3 interaction\(s\) refer to user_id values missing from users, e.g. 2"):
        Dataset.from_frames(toy_interactions(), toy_items(), pd.DataFrame({"user_id": [1, 3]}))


def test_empty_frames():
    with raises("interactions is empty; pass a frame with at least one row"):
        Dataset.from_frames(toy_interactions().iloc[:0], toy_items())
    with raises("items is empty"):
        Dataset.from_frames(toy_interactions(), toy_items().iloc[:0])


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_item_text(text):
    items = toy_items().astype({"text": object})
    items.loc[2, "text"] = text
    with raises(r"items column 'text' has 1 (empty|missing) value\(s\) \(first at row 2\)"):
        Dataset.from_frames(toy_interactions(), items)


def test_scenario_list_must_match_the_data():
    with raises(r"scenario\(s\) \['c'\] have no interactions; leave them out"):
        toy_dataset(scenarios=["a", "b", "c"])
    with raises(r"interactions use scenario\(s\) \['b'\] that are not in scenarios=\['a'\]"):
        toy_dataset(scenarios=["a"])
    with raises("lists a name twice"):
        toy_dataset(scenarios=["a", "b", "a"])
    with raises("'all' is reserved"):
        Dataset.from_frames(toy_interactions().replace({"scenario": {"a": "all"}}), toy_items())


def test_given_split_column_must_hold_known_names():
    with raises(r"column 'split' may only hold \['train', 'valid', 'test'\], found 'dev'"):
        Dataset.from_frames(toy_interactions().assign(split="dev"), toy_items())


# --- describe -------------------------------------------------------------------------------------------------

def test_describe_table_and_overlaps():
    description = toy_dataset().describe()
    table = description.table
    assert table.index.tolist() == ["a", "b", "all"]
    assert table[["users", "items", "interactions"]].values.tolist() == [[2, 4, 5], [3, 4, 5], [3, 5, 10]]
    assert table["density"].tolist() == pytest.approx([5 / 8, 5 / 12, 10 / 15])
    assert description.user_overlap.values.tolist() == [[2, 2], [2, 3]]
    assert description.item_overlap.values.tolist() == [[4, 3], [3, 4]]
    assert description.user_overlap.index.tolist() == ["a", "b"]


def test_describe_follows_scenario_order_and_prints_readably():
    description = toy_dataset(scenarios=["b", "a"]).describe()
    assert description.table.index.tolist() == ["b", "a", "all"]
    assert description.user_overlap.values.tolist() == [[3, 2], [2, 2]]
    text = str(description)
    assert "62.5%" in text and "Shared users" in text and "Shared items" in text
    assert "<table" in description._repr_html_() and repr(description) == text
    big = Dataset.from_frames(pd.DataFrame({"user_id": 1, "item_id": range(1200), "scenario": "x", "timestamp": 0}),
                              pd.DataFrame({"item_id": range(1200), "text": "t"}))
    assert "1,200" in str(big.describe())


# --- filter ---------------------------------------------------------------------------------------------------

def kcore_dataset(*extra_rows) -> Dataset:
    rows = [(1, 1, "a", 0), (1, 2, "a", 1), (2, 1, "a", 0), (2, 2, "a", 1), (3, 1, "a", 0), (3, 3, "a", 1)]
    return Dataset.from_frames(toy_interactions(rows + list(extra_rows)),
                               pd.DataFrame({"item_id": [1, 2, 3, 4], "text": "t"}))


def test_filter_keeps_listed_scenarios_and_restricts_items_and_users():
    data = toy_dataset().filter(scenarios=["b"])
    assert data.scenarios == ["b"] and set(data.interactions["scenario"]) == {"b"}
    assert data.items["item_id"].tolist() == [10, 11, 12, 13] and data.users["user_id"].tolist() == [1, 2, 3]


def test_filter_iterates_until_every_user_and_item_has_enough():
    data = kcore_dataset().filter(min_user_interactions=2, min_item_interactions=2)
    # dropping item 3 leaves user 3 with one interaction, so user 3 goes in a second round
    assert sorted(pairs(data.interactions)) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_filter_errors():
    with raises(r"scenario\(s\) \['b'\] have no interactions left after filtering.*lower the thresholds"):
        kcore_dataset((4, 4, "b", 0)).filter(min_user_interactions=2, min_item_interactions=2)
    with raises(r"unknown: \['c'\], known: \['a', 'b'\]"):
        toy_dataset().filter(scenarios=["a", "c"])
    for bad in (0, -1, 1.5, True):
        with raises("min_user_interactions must be an integer >= 1"):
            toy_dataset().filter(min_user_interactions=bad)


# --- split ----------------------------------------------------------------------------------------------------

def test_leave_one_out_per_user():
    split = toy_dataset().split()
    assert pairs(split.test) == [(1, 14), (2, 12)]
    assert pairs(split.valid) == [(1, 13), (2, 11)]
    assert pairs(split.train) == [(1, 10), (1, 11), (1, 12), (2, 10), (3, 10), (3, 11)]
    assert list(split.train.columns) == list(INTERACTION_COLUMNS)
    assert repr(split) == "Split(train=6, valid=2, test=2)"


def test_timestamp_ties_keep_table_order():
    swapped = TOY_ROWS.copy()
    swapped[1], swapped[4] = swapped[4], swapped[1]  # now i12 is listed before i11 at timestamp 6
    split = Dataset.from_frames(toy_interactions(swapped), toy_items()).split()
    assert pairs(split.test) == [(1, 14), (2, 11)] and pairs(split.valid) == [(1, 13), (2, 12)]


def test_split_sizes_and_per_scenario():
    split = toy_dataset().split(valid_size=0, test_size=2)
    assert pairs(split.test) == [(1, 13), (1, 14), (2, 11), (2, 12)] and split.valid.empty
    split = toy_dataset().split(valid_size=2, test_size=1)
    assert pairs(split.test) == [(1, 14)] and pairs(split.valid) == [(1, 12), (1, 13)]
    split = toy_dataset().split(per_scenario=True)
    assert pairs(split.test) == [(1, 14)] and pairs(split.valid) == [(1, 12)] and len(split.train) == 8


def test_invalid_split_parameters():
    data = toy_dataset()
    for bad in (-1, 1.5, "1", True):
        with raises("valid_size must be an integer >= 0"):
            data.split(valid_size=bad)
    with raises("test_size must be an integer >= 0"):
        data.split(test_size=-2)
    with raises("both 0, so nothing would be held out"):
        data.split(valid_size=0, test_size=0)
    with raises("per_scenario must be True or False"):
        data.split(per_scenario="yes")


def test_split_given_by_the_source_is_used_and_cannot_be_changed():
    given = ["test", "train", "train", "train", "valid", "valid", "train", "train", "test", "train"]
    data = Dataset.from_frames(toy_interactions().assign(split=given), toy_items())
    split = data.split()
    assert pairs(split.test) == [(1, 14), (3, 10)] and pairs(split.valid) == [(1, 13), (2, 12)]
    assert "split" not in split.train.columns and len(split.train) == 6
    with raises("split given by the source"):
        data.split(valid_size=2)
    with raises("split given by the source"):
        data.split(per_scenario=True)


# --- cold_start -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("by, limit, per_scenario, expected", [
    ("user", 0, True, [(2, 12)]),  # user 2 has no training rows in b; user 1 has 2 in a
    ("user", 2, True, [(1, 14), (2, 12)]),
    ("user", 2, False, [(2, 12)]),  # across scenarios user 1 has 3 training rows
    ("user", 3, False, [(1, 14), (2, 12)]),
    ("item", 0, True, [(1, 14), (2, 12)]),  # item 12 was trained on only in a
    ("item", 0, False, [(1, 14)]),
])
def test_cold_start(by, limit, per_scenario, expected):
    split = toy_dataset().split()
    assert pairs(cold_start(split, by=by, max_train_interactions=limit, per_scenario=per_scenario)) == expected


def test_cold_start_errors():
    split = toy_dataset().split()
    with raises("use by='user' or by='item'"):
        cold_start(split, by="scenario")
    with raises("max_train_interactions must be an integer >= 0"):
        cold_start(split, max_train_interactions=-1)
    with raises("needs a Split"):
        cold_start(split.test)


# --- scenario views -------------------------------------------------------------------------------------------

def test_views_are_listed_and_described():
    assert scenario_views("ml-100k") == ["age", "genre"] and scenario_views("ml-1m") == ["age", "genre"]
    assert scenario_views("food-kitchen") == ["domain"]
    assert all(isinstance(text, str) and text for views in SCENARIO_VIEWS.values() for text in views.values())
    with raises(r"unknown dataset 'ml-20m'; scenario views exist for \['ml-100k', 'ml-1m', 'food-kitchen'\]"):
        scenario_views("ml-20m")


def by_user(ages: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame({"user_id": range(len(ages)), "age": ages})
    interactions = pd.DataFrame({"user_id": list(range(len(ages)))[::-1], "item_id": 0},
                                index=range(50, 50 + len(ages)))
    return interactions, users


def test_ml_100k_age_bands_and_boundaries():
    interactions, users = by_user([24, 25, 34, 35, 7, 73])
    scenario = assign_scenarios("ml-100k", "age", interactions, pd.DataFrame(), users)
    assert scenario.tolist() == [">=35", "<25", ">=35", "25-34", "25-34", "<25"]  # users in reverse order
    assert scenario.index.tolist() == interactions.index.tolist()
    assert scenario.cat.categories.tolist() == ["<25", "25-34", ">=35"]


def test_ml_1m_age_codes():
    interactions, users = by_user([1, 18, 25, 35, 45, 50, 56])
    scenario = assign_scenarios("ml-1m", "age", interactions, pd.DataFrame(), users)
    assert scenario.tolist()[::-1] == ["<25", "<25", "25-34", ">=35", ">=35", ">=35", ">=35"]
    interactions, users = by_user([1, 30])
    with raises(r"user ages must be one of the age codes \(1, 18, 25, 35, 45, 50, 56\), found 30"):
        assign_scenarios("ml-1m", "age", interactions, pd.DataFrame(), users)


def test_genre_families_majority_ties_and_no_genre():
    genres = ["Action|Comedy", "Comedy|Drama", "Thriller|Drama|Romance", "", None, "Animation|Children's|Comedy",
              "Crime|Drama", "unknown", "Film-Noir|Sci-Fi|Western", "Horror"]
    expected = ["action", "comedy", "drama", "drama", "drama", "comedy", "thriller", "drama", "action", "thriller"]
    items = pd.DataFrame({"item_id": range(len(genres)), "genres": genres, "text": "t"})
    interactions = pd.DataFrame({"user_id": 0, "item_id": range(len(genres))})
    scenario = assign_scenarios("ml-100k", "genre", interactions, items, pd.DataFrame({"user_id": [0]}))
    assert scenario.tolist() == expected
    assert scenario.cat.categories.tolist() == ["action", "thriller", "comedy", "drama"]
    with raises(r"genre\(s\) \['Sci Fi'\] belong to no family"):
        assign_scenarios("ml-1m", "genre", interactions, items.assign(genres="Sci Fi"), pd.DataFrame())


def test_food_kitchen_domain():
    items = pd.DataFrame({"item_id": [0, 1], "domain": ["kitchen", "food"], "text": "t"})
    interactions = pd.DataFrame({"user_id": [5, 5, 6], "item_id": [0, 1, 1]})
    scenario = assign_scenarios("food-kitchen", "domain", interactions, items, pd.DataFrame())
    assert scenario.tolist() == ["kitchen", "food", "food"]
    assert scenario.cat.categories.tolist() == ["food", "kitchen"]
    with raises("items.domain must be 'food' or 'kitchen', found 'garden'"):
        assign_scenarios("food-kitchen", "domain", interactions, items.assign(domain="garden"), pd.DataFrame())


def test_view_errors():
    interactions, users = by_user([30, 40])
    with raises(r"dataset 'ml-100k' has no scenario view 'domain'; choose one of \['age', 'genre'\]"):
        assign_scenarios("ml-100k", "domain", interactions, pd.DataFrame(), users)
    with raises("unknown dataset 'nope'"):
        assign_scenarios("nope", "age", interactions, pd.DataFrame(), users)
    with raises(r"scenario view 'age' of ml-100k needs columns 'user_id' and 'age' in users \(found: \['user_id'\]"):
        assign_scenarios("ml-100k", "age", interactions, pd.DataFrame(), users.drop(columns="age"))
    with raises(r"needs columns 'item_id' and 'domain' in items"):
        assign_scenarios("food-kitchen", "domain", interactions, pd.DataFrame({"item_id": [0]}), users)
    with raises(r"needs columns 'item_id' and 'genres' in items"):
        assign_scenarios("ml-1m", "genre", interactions, pd.DataFrame({"item_id": [0]}), users)
    with raises(r"1 interaction\(s\) have no 'age' in users, e.g. user_id 1"):
        assign_scenarios("ml-100k", "age", interactions, pd.DataFrame(), users.iloc[:1])


def test_assigned_scenarios_build_a_dataset_in_view_order():
    interactions, users = by_user([40, 20, 30])
    interactions = interactions.assign(timestamp=0)
    interactions["scenario"] = assign_scenarios("ml-100k", "age", interactions, pd.DataFrame(), users)
    data = Dataset.from_frames(interactions, pd.DataFrame({"item_id": [0], "text": "t"}), users, view="age")
    assert data.scenarios == ["<25", "25-34", ">=35"] and data.interactions["scenario"].dtype == "str"


def test_description_and_split_are_dataclasses():
    assert dataclasses.is_dataclass(Description) and dataclasses.is_dataclass(Split)


def test_without_repeats_drops_held_out_rows_whose_item_the_user_trained_on():
    train = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "scenario": ["a", "b", "a"]})
    valid = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 12], "scenario": ["b", "a"]})
    test = pd.DataFrame({"user_id": [1, 2], "item_id": [12, 10], "scenario": ["a", "b"]})
    kept = Split(train, valid, test).without_repeats()
    assert kept.valid[["user_id", "item_id"]].values.tolist() == [[2, 12]]
    assert kept.test[["user_id", "item_id"]].values.tolist() == [[1, 12]]
    assert kept.train is train
