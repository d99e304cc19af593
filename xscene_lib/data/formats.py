"""Parsers that turn the MovieLens raw files into the three base tables; the shared table types.

Every parser takes the folder holding one complete set of raw files and returns
`Tables(interactions, items, users)`; malformed input raises `DataError` (a `ValueError`)
(or the reading library's own error) naming the file and what is wrong.
Column conventions are described in data/README.md; food_kitchen.py parses the Amazon Food-Kitchen files.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from xscene_lib.data.validation import DataError

MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_YEAR_IN_TITLE = re.compile(r"^(.*)\((\d{4})\)(.*)$")
_ATOMIC_UNKNOWN = {"unkonwn": "unknown"}  # the atomic ml-100k file spells the unknown movie so
_ATOMIC_INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"  # the same in ml-100k and ml-1m


class Tables(NamedTuple):
    """The base tables of one dataset."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


@dataclass(frozen=True)
class RawFormat:
    """One complete set of raw files, how to parse it, and the SHA-256 sums known for them."""

    files: tuple[str, ...]
    parse: Callable[[Path], Tables]
    sha256: Mapping[str, str] = field(default_factory=dict)


# --- reading helpers -----------------------------------------------------------------------


def delimited_table(text: str, columns: Sequence[str], what: str, sep: str = "\t") -> pd.DataFrame:
    """Split delimited text into a frame of strings; every line must have all columns."""
    frame = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, na_filter=False,
                        quoting=csv.QUOTE_NONE, engine="c")
    if frame.shape[1] != len(columns):
        raise DataError(f"{what}: expected {len(columns)} fields a line, found {frame.shape[1]}")
    short = frame.isna().any(axis=1)
    if short.any():
        raise DataError(f"{what}: line {int(short.to_numpy().argmax()) + 1} has too few fields")
    frame.columns = list(columns)
    return frame


def _atomic(path: Path, header: str) -> pd.DataFrame:
    """Read one tab-separated atomic file after checking its typed header line."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    first, _, body = text.partition("\n")
    if first != header:
        raise DataError(f"{path.name}: unexpected header {first[:120]!r} (expected {header!r})")
    names = [field.split(":")[0] for field in header.split("\t")]
    return delimited_table(body, names, path.name)


def _atomic_set(folder: Path, name: str, item_header: str, user_header: str) -> tuple[pd.DataFrame, ...]:
    """The files `name`.inter, `name`.item and `name`.user of an atomic set, in that order, as frames of strings."""
    headers = {"inter": _ATOMIC_INTER_HEADER, "item": item_header, "user": user_header}
    return tuple(_atomic(folder / f"{name}.{kind}", header) for kind, header in headers.items())


def _zip_text(archive: zipfile.ZipFile, member: str) -> str:
    """Decode one member of a GroupLens zip (latin-1), wherever it sits inside the archive."""
    matches = [n for n in archive.namelist() if n == member or n.endswith("/" + member)]
    if len(matches) != 1:
        raise DataError(f"{Path(str(archive.filename)).name}: expected one {member}, found {len(matches)}")
    return archive.read(matches[0]).decode("latin-1").replace("\r\n", "\n")


def integer_column(column: pd.Series, what: str) -> pd.Series:
    """Convert a column of numerals to int64; a non-number or a fraction is an error."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        raise DataError(f"{what}: expected whole numbers, found {column[bad].iloc[0]!r}")
    return numbers.astype("int64")


def _ratings(column: pd.Series, what: str) -> pd.Series:
    """Convert a column of numerals to float32 ratings."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.isna().any():
        raise DataError(f"{what}: expected numbers, found {column[numbers.isna()].iloc[0]!r}")
    return numbers.astype("float32")


# --- MovieLens -----------------------------------------------------------------------------


def split_title(full_title: str) -> tuple[str, int | None]:
    """Split "Toy Story (1995)" into ("Toy Story", 1995); the last "(YYYY)" is the year."""
    match = _YEAR_IN_TITLE.match(full_title.strip())
    if match is None:
        return full_title.strip(), None
    before, year, after = match.groups()
    return (before.rstrip() + after.rstrip()).strip(), int(year)


def movie_text(title: str, year: int | None, genres: Sequence[str]) -> str:
    """The item text of a movie: title, year and genres in one line."""
    text = title if year is None else f"{title} ({year})"
    return f"{text}. Genres: {', '.join(genres)}." if genres else text


def _movie_items(item_ids: Sequence[int], full_titles: Sequence[str],
                 genre_lists: Sequence[Sequence[str]]) -> pd.DataFrame:
    """Build the movie item table from ids, titles with year, and genre lists."""
    titles, years = zip(*(split_title(t) for t in full_titles))
    return pd.DataFrame({
        "item_id": pd.array(item_ids, dtype="int64"),
        "title": list(titles),
        "year": pd.array(years, dtype="Int64"),
        "genres": ["|".join(g) for g in genre_lists],
        "text": [movie_text(t, y, g) for t, y, g in zip(titles, years, genre_lists)],
    })


def _interactions(users: pd.Series, items: pd.Series, ratings: pd.Series,
                  timestamps: pd.Series, what: str) -> pd.DataFrame:
    """Build a MovieLens interaction table from string columns."""
    return pd.DataFrame({
        "user_id": integer_column(users, f"{what} user ids").to_numpy(),
        "item_id": integer_column(items, f"{what} item ids").to_numpy(),
        "rating": _ratings(ratings, f"{what} ratings").to_numpy(),
        "timestamp": integer_column(timestamps, f"{what} timestamps").to_numpy(),
    })


def _users(frame: pd.DataFrame, what: str, occupations: Sequence[str] | None = None) -> pd.DataFrame:
    """Build a user table from a frame of strings; occupation codes are named when given."""
    occupation = frame["occupation"]
    if occupations is not None:
        codes = integer_column(occupation, f"{what} occupations")
        if not codes.between(0, len(occupations) - 1).all():
            raise DataError(f"{what}: occupation code outside 0..{len(occupations) - 1}")
        occupation = codes.map(dict(enumerate(occupations)))
    return pd.DataFrame({
        "user_id": integer_column(frame["user_id"], f"{what} user ids").to_numpy(),
        "age": integer_column(frame["age"], f"{what} ages").to_numpy(),
        "gender": frame["gender"].astype(str).to_numpy(),
        "occupation": occupation.astype(str).to_numpy(),
        "zip_code": frame["zip_code"].astype(str).to_numpy(),
    })


def parse_ml100k_grouplens(folder: Path) -> Tables:
    """Parse ml-100k.zip as published by GroupLens (u.data, u.item, u.user)."""
    with zipfile.ZipFile(folder / "ml-100k.zip") as archive:
        data = delimited_table(_zip_text(archive, "u.data"), ["user", "item", "rating", "ts"], "u.data")
        movies = delimited_table(_zip_text(archive, "u.item"),
                        ["item_id", "title", "date", "video", "url", *MOVIELENS_GENRES], "u.item", "|")
        people = delimited_table(_zip_text(archive, "u.user"),
                        ["user_id", "age", "gender", "occupation", "zip_code"], "u.user", "|")
    flags = movies[list(MOVIELENS_GENRES)]
    if not flags.isin(["0", "1"]).all().all():
        raise DataError("u.item: genre flags must be 0 or 1")
    genre_lists = [[g for g, flag in zip(MOVIELENS_GENRES, row) if flag == "1"]
                   for row in flags.itertuples(index=False)]
    items = _movie_items(integer_column(movies["item_id"], "u.item ids"), movies["title"], genre_lists)
    interactions = _interactions(data["user"], data["item"], data["rating"], data["ts"], "u.data")
    return Tables(interactions, items, _users(people, "u.user"))


def parse_ml100k_atomic(folder: Path) -> Tables:
    """Parse the atomic files ml-100k.{inter,item,user} (tab-separated, typed headers)."""
    data, movies, people = _atomic_set(
        folder, "ml-100k", item_header="item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
        user_header="user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token")
    full_titles = [_ATOMIC_UNKNOWN.get(title, title) if year in _ATOMIC_UNKNOWN else f"{title} ({year})"
                   for title, year in zip(movies["movie_title"], movies["release_year"])]
    items = _movie_items(integer_column(movies["item_id"], "ml-100k.item ids"), full_titles,
                         [c.split() for c in movies["class"]])
    interactions = _interactions(data["user_id"], data["item_id"], data["rating"], data["timestamp"],
                                 "ml-100k.inter")
    return Tables(interactions, items, _users(people, "ml-100k.user"))


def parse_ml1m_grouplens(folder: Path) -> Tables:
    """Parse ml-1m.zip as published by GroupLens; item ids become positions in movies.dat."""
    with zipfile.ZipFile(folder / "ml-1m.zip") as archive:
        ratings, movies, people = (_zip_text(archive, f).replace("::", "\t")
                                   for f in ("ratings.dat", "movies.dat", "users.dat"))
    data = delimited_table(ratings, ["user", "movie", "rating", "ts"], "ratings.dat")
    movies_frame = delimited_table(movies, ["movie", "title", "genres"], "movies.dat")
    people_frame = delimited_table(people, ["user_id", "gender", "age", "occupation", "zip_code"], "users.dat")
    position = {movie: i + 1 for i, movie in enumerate(integer_column(movies_frame["movie"], "movies.dat ids"))}
    if len(position) != len(movies_frame):
        raise DataError("movies.dat: repeated MovieID")
    item_ids = integer_column(data["movie"], "ratings.dat MovieIDs").map(position)
    if item_ids.isna().any():
        raise DataError("ratings.dat: a rating names a MovieID missing from movies.dat")
    items = _movie_items(range(1, len(movies_frame) + 1), movies_frame["title"],
                         [g.split("|") if g else [] for g in movies_frame["genres"]])
    interactions = _interactions(data["user"], item_ids, data["rating"], data["ts"], "ratings.dat")
    return Tables(interactions, items, _users(people_frame, "users.dat", ML1M_OCCUPATIONS))


def parse_ml1m_atomic(folder: Path) -> Tables:
    """Parse the atomic files ml-1m.{inter,item,user}; items are keyed by title, in movies.dat order."""
    data, movies, people = _atomic_set(
        folder, "ml-1m", item_header="item_id:token\tmovie_title:token\trelease_year:float\tgenre:token",
        user_header="user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token")
    position = {title: i + 1 for i, title in enumerate(movies["item_id"])}
    if len(position) != len(movies):
        raise DataError("ml-1m.item: repeated title")
    item_ids = data["item_id"].map(position)
    if item_ids.isna().any():
        raise DataError(f"ml-1m.inter: unknown movie {data['item_id'][item_ids.isna()].iloc[0]!r}")
    items = _movie_items(range(1, len(movies) + 1), movies["item_id"],
                         [g.split() for g in movies["genre"]])
    interactions = _interactions(_strip_prefix(data["user_id"], "1m_", "ml-1m.inter"),
                                 item_ids, data["rating"], data["timestamp"], "ml-1m.inter")
    people["user_id"] = _strip_prefix(people["user_id"], "1m_", "ml-1m.user")
    return Tables(interactions, items, _users(people, "ml-1m.user", ML1M_OCCUPATIONS))


def _strip_prefix(column: pd.Series, prefix: str, what: str) -> pd.Series:
    """Remove a prefix every value must carry (e.g. "1m_" in "1m_42")."""
    if not column.str.startswith(prefix).all():
        raise DataError(f"{what}: user ids must look like {prefix}<number>")
    return column.str.slice(len(prefix))


# --- the raw formats and their known SHA-256 sums ---------------------------------------------


ML100K_GROUPLENS = RawFormat(("ml-100k.zip",), parse_ml100k_grouplens)
ML100K_ATOMIC = RawFormat(("ml-100k.inter", "ml-100k.item", "ml-100k.user"), parse_ml100k_atomic, {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
})
ML1M_GROUPLENS = RawFormat(("ml-1m.zip",), parse_ml1m_grouplens)
ML1M_ATOMIC = RawFormat(("ml-1m.inter", "ml-1m.item", "ml-1m.user"), parse_ml1m_atomic, {
    "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
    "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
    "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
})
