"""Scenario views: how each dataset's interactions are split into scenarios (user groups or item domains).

A view names a rule that gives every interaction a scenario: the user's age band, the movie's genre family,
or the product's Amazon domain. `assign_scenarios` applies one and returns an ordered categorical column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xscene_lib.data.validation import DataError, require_columns


def _first_of(values: pd.Series) -> object:
    """The first value of a series, for error messages."""
    return values.iloc[:1].tolist()[0]


AGE_BANDS = ("<25", "25-34", ">=35")
ML_1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
GENRE_FAMILIES = {
    "action": ("Action", "Adventure", "Sci-Fi", "Fantasy", "War", "Western"),
    "thriller": ("Thriller", "Crime", "Horror", "Mystery", "Film-Noir"),
    "comedy": ("Comedy", "Children's", "Animation", "Musical"),
    "drama": ("Drama", "Romance", "Documentary", "unknown"),
}
_GENRE_VIEW = ("movie genre family: action, thriller, comedy, drama - the family holding most of the movie's "
               "genres, ties to the earlier family in that order, no genre -> drama")
# dataset name -> view name -> description; scenarios are named and ordered as listed in each description
SCENARIO_VIEWS: dict[str, dict[str, str]] = {
    "ml-100k": {"age": "user age band: <25, 25-34 (25..34), >=35", "genre": _GENRE_VIEW},
    "ml-1m": {"age": "user age band from the age code: <25 (1, 18), 25-34 (25), >=35 (35, 45, 50, 56)",
              "genre": _GENRE_VIEW},
    "food-kitchen": {"domain": "Amazon domain of the item: food, kitchen"},
}


def scenario_views(dataset_name: str) -> list[str]:
    """Names of the scenario views a dataset offers."""
    if dataset_name not in SCENARIO_VIEWS:
        raise DataError(f"unknown dataset '{dataset_name}'; scenario views exist for {list(SCENARIO_VIEWS)}")
    return list(SCENARIO_VIEWS[dataset_name])


def _column_by_id(table: pd.DataFrame, key: str, column: str, ids: pd.Series, where: str, need: str) -> pd.Series:
    if not isinstance(table, pd.DataFrame) or key not in table.columns or column not in table.columns:
        found = list(table.columns) if isinstance(table, pd.DataFrame) else type(table).__name__
        raise DataError(f"{need} needs columns '{key}' and '{column}' in {where} (found: {found})")
    if table[key].duplicated().any():
        raise DataError(f"{where} has duplicate {key} values; {need} needs one row per {key}")
    values = ids.map(table.set_index(key)[column])
    if values.isna().any():
        raise DataError(f"{need}: {int(values.isna().sum()):,} interaction(s) have no '{column}' in {where}, "
                        f"e.g. {key} {_first_of(ids[values.isna()])!r}; add it or drop those interactions")
    return values


def _genre_family_by_item(items: pd.DataFrame, need: str) -> pd.DataFrame:
    if not isinstance(items, pd.DataFrame) or "genres" not in items.columns or "item_id" not in items.columns:
        raise DataError(f"{need} needs columns 'item_id' and 'genres' in items (found: {list(items.columns)})")
    genres = items["genres"].fillna("").astype("str").str.get_dummies(sep="|").drop(columns="", errors="ignore")
    known = [genre for family in GENRE_FAMILIES.values() for genre in family]
    unknown = sorted(set(genres.columns) - set(known))
    if unknown:
        raise DataError(f"{need}: genre(s) {unknown} belong to no family; use the genre names {known}")
    counts = np.stack([genres.reindex(columns=list(members), fill_value=0).sum(axis=1).to_numpy()
                       for members in GENRE_FAMILIES.values()], axis=1)
    choice = np.where(counts.sum(axis=1) == 0, list(GENRE_FAMILIES).index("drama"), counts.argmax(axis=1))
    return pd.DataFrame({"item_id": items["item_id"].to_numpy(), "family": np.array(list(GENRE_FAMILIES))[choice]})


def assign_scenarios(dataset_name: str, view: str, interactions: pd.DataFrame, items: pd.DataFrame,
                     users: pd.DataFrame) -> pd.Series:
    """The scenario of each interaction under a dataset's view, as an ordered categorical aligned with it."""
    views = scenario_views(dataset_name)
    if view not in views:
        raise DataError(f"dataset '{dataset_name}' has no scenario view '{view}'; choose one of {views}")
    need = f"scenario view '{view}' of {dataset_name}"
    require_columns(interactions, ("user_id", "item_id"), "interactions")
    if view == "age":
        raw = _column_by_id(users, "user_id", "age", interactions["user_id"], "users", need)
        ages = pd.to_numeric(raw, errors="coerce")
        allowed = ML_1M_AGE_CODES if dataset_name == "ml-1m" else None
        odd = ages.isna() if allowed is None else ~ages.isin(allowed)
        if odd.any():
            expected = f"one of the age codes {allowed}" if allowed else "numbers"
            raise DataError(f"{need}: user ages must be {expected}, found {_first_of(raw[odd])!r}; fix the users table")
        names, order = np.select([ages < 25, ages < 35], AGE_BANDS[:2], AGE_BANDS[2]), AGE_BANDS
    elif view == "genre":
        families = _genre_family_by_item(items, need)
        names = _column_by_id(families, "item_id", "family", interactions["item_id"], "items", need)
        order = tuple(GENRE_FAMILIES)
    else:
        order = ("food", "kitchen")
        names = _column_by_id(items, "item_id", "domain", interactions["item_id"], "items", need).astype("str")
        odd = ~names.isin(order)
        if odd.any():
            raise DataError(f"{need}: items.domain must be 'food' or 'kitchen', found {_first_of(names[odd])!r}")
    return pd.Series(pd.Categorical(np.asarray(names), categories=list(order)), index=interactions.index,
                     name="scenario")
