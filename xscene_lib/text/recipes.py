"""Item-text recipes: which columns of an items table make the text a model encodes.

MovieLens items have a title, a year and genres; food-kitchen items have a title. A chapter can
switch recipes to measure what each part of the text adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from xscene_lib.data import formats
from xscene_lib.data.validation import DataError, DataTypeError


@dataclass(frozen=True)
class Recipe:
    """How one item's text is written from columns of an items table."""

    columns: tuple[str, ...]
    write: Callable[..., str]  # takes the columns' values of one row, in order
    example: str


def _year(value: object) -> int | None:
    return None if pd.isna(value) else int(value)


def _genres(value: str) -> list[str]:
    return [genre for genre in value.split("|") if genre]


RECIPES: dict[str, Recipe] = {
    "title": Recipe(("title",), lambda title: title, "Toy Story"),
    "title_year": Recipe(("title", "year"), lambda title, year: formats.movie_text(title, _year(year), []),
                         "Toy Story (1995)"),
    "title_year_genres": Recipe(("title", "year", "genres"), lambda title, year, genres: formats.movie_text(
        title, _year(year), _genres(genres)), "Toy Story (1995). Genres: Animation, Children's, Comedy."),
}
# "default": title, year and genres where the items have them (MovieLens), else the title (food-kitchen)


def item_texts(items: pd.DataFrame, recipe: str = "default") -> pd.Series:
    """The text of each item written by a recipe (see RECIPES), aligned with the items' index."""
    if not isinstance(items, pd.DataFrame):
        raise DataTypeError(f"items must be a pandas DataFrame, got {type(items).__name__}")
    if recipe == "default":
        recipe = "title_year_genres" if {"title", "year", "genres"} <= set(items.columns) else "title"
    if recipe not in RECIPES:
        raise DataError(f"unknown recipe {recipe!r}; choose 'default' or one of: "
                        + "; ".join(f"{name} (e.g. {r.example!r})" for name, r in RECIPES.items()))
    chosen = RECIPES[recipe]
    missing = [column for column in chosen.columns if column not in items.columns]
    if missing:
        raise DataError(f"recipe {recipe!r} needs column(s) {missing}; the items have {list(items.columns)}")
    for column in chosen.columns:
        absent = items[column].isna().to_numpy()
        if column != "year" and absent.any():
            raise DataError(f"items column {column!r} is missing at position {int(absent.argmax())}; "
                            f"fill it or drop that item")
    values = zip(*(items[column].tolist() for column in chosen.columns))
    return pd.Series([chosen.write(*row) for row in values], index=items.index, name="text", dtype=str)
