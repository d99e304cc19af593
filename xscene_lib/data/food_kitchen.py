"""Parser of the Amazon Food-Kitchen files of the LLMCDSR repository into the three base tables.

The files are two item-title pickles and two ASIN-index pickles (read without running code: plain
containers only), counts, and five sequence files (one user a line); see data/README.md.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from xscene_lib.data.formats import RawFormat, Tables, delimited_table, integer_column
from xscene_lib.data.validation import DataError

FOOD_KITCHEN_SEQUENCES = {  # file -> user group, in the order that fixes the global user ids
    "train_A.txt": "food_only",
    "train_B.txt": "kitchen_only",
    "train_overlap.txt": "both",
    "valid.txt": "valid",
    "test.txt": "test",
}


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every class, so only plain containers and scalars load."""

    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: plain data only")


def read_plain_pickle(path: Path) -> dict[str, int | str]:
    """Read a pickle holding one dict of str keys to str/int values, without running code."""
    with path.open("rb") as handle:
        value = _PlainUnpickler(handle).load()
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int)) for k, v in value.items()):
        raise DataError(f"{path.name}: expected a dict of str to str/int")
    return value


def _numbers(path: Path, count: int) -> list[int]:
    """Read a file holding `count` whole numbers, one a line."""
    values = [int(line) for line in path.read_text(encoding="ascii").split()]
    if len(values) != count:
        raise DataError(f"{path.name}: expected {count} numbers, found {len(values)}")
    return values


def _domain_items(folder: Path, domain: str, suffix: str, first_id: int, count: int) -> pd.DataFrame:
    """Build the items of one domain from its ASIN index and title pickles."""
    index = read_plain_pickle(folder / f"item_set_{suffix}.pkl")
    titles = read_plain_pickle(folder / f"text_{suffix}.pkl")
    if sorted(index.values()) != list(range(count)) or index.keys() != titles.keys():
        raise DataError(f"item_set_{suffix}.pkl/text_{suffix}.pkl: expected titles for ids 0..{count - 1}")
    asins = sorted(index, key=index.__getitem__)
    names = [str(titles[a]).strip() for a in asins]
    if not all(names):
        raise DataError(f"text_{suffix}.pkl: an item has an empty title")
    return pd.DataFrame({"item_id": pd.array(range(first_id, first_id + count), dtype="int64"),
                         "asin": asins, "title": names, "domain": domain, "text": names})


def _sequences(path: Path, first_user: int, given_split: str | None) -> tuple[pd.DataFrame, int]:
    """Read one `user<TAB>i1,i2,...` file; the last item gets `given_split` when given."""
    frame = delimited_table(path.read_text(encoding="ascii"), ["user", "items"], path.name)
    local_ids = integer_column(frame["user"], f"{path.name} user ids")
    if local_ids.tolist() != list(range(1, len(frame) + 1)):
        raise DataError(f"{path.name}: user ids must run 1..{len(frame)} in order")
    lists = frame["items"].str.split(",")
    lengths = lists.str.len().to_numpy()
    items = integer_column(lists.explode(), f"{path.name} item ids").to_numpy()
    rows = pd.DataFrame({
        "user_id": (local_ids + first_user - 1).repeat(lengths).to_numpy(),
        "item_id": items,
        "rating": np.ones(len(items), dtype="float32"),
        "split": "train",
    })
    rows.insert(3, "timestamp", rows.groupby("user_id").cumcount().astype("int64"))
    if given_split is not None:
        rows.loc[lengths.cumsum() - 1, "split"] = given_split
    return rows, len(frame)


def parse_food_kitchen(folder: Path) -> Tables:
    """Parse the LLMCDSR Food-Kitchen files; user ids are made global across the five files."""
    n_food, n_kitchen = _numbers(folder / "num.txt", 2)
    group_sizes = _numbers(folder / "instance_num.txt", 3)
    items = pd.concat([_domain_items(folder, "food", "A", 0, n_food),
                       _domain_items(folder, "kitchen", "B", n_food, n_kitchen)], ignore_index=True)
    parts, groups, next_user = [], [], 1
    for file, group in FOOD_KITCHEN_SEQUENCES.items():
        rows, n_users = _sequences(folder / file, next_user, group if group in ("valid", "test") else None)
        parts.append(rows)
        groups += [group] * n_users
        next_user += n_users
    if [groups.count(g) for g in ("food_only", "kitchen_only", "both")] != group_sizes:
        raise DataError(f"instance_num.txt: user counts {group_sizes} differ from the train files")
    interactions = pd.concat(parts, ignore_index=True)
    if not interactions["item_id"].between(0, len(items) - 1).all():
        raise DataError(f"sequence files: item id outside 0..{len(items) - 1}")
    users = pd.DataFrame({"user_id": pd.array(range(1, next_user), dtype="int64"), "group": groups})
    return Tables(interactions, items, users)


FOOD_KITCHEN = RawFormat(
    ("num.txt", "instance_num.txt", "item_set_A.pkl", "item_set_B.pkl", "text_A.pkl", "text_B.pkl",
     *FOOD_KITCHEN_SEQUENCES), parse_food_kitchen, {
        "instance_num.txt": "ef7ec64ba0d9bab809e56deec57bd710621681d0b5c63c4febf555f04a0c27b5",
        "item_set_A.pkl": "510aa4c2b8cc6fc37ccb0b56dbc33d56eb96583a580463b19f941ddb9d31a5d5",
        "item_set_B.pkl": "96f1ff3d4604e79a416796fae5bc9df2828f06657961aa641d0c6f7f33a4a93b",
        "num.txt": "ddf19800d60c1320b74a4507d88592b79eaa12c2b33c26620bc526c6e0dc5bee",
        "test.txt": "bdc978617810e6bf9f6eac31260e0688169c0c1cdf34cbf395774f3896e37aa4",
        "text_A.pkl": "adc2883e8ea4acee1e5d3e06126549753d640095747a82537959ff11600bcd5c",
        "text_B.pkl": "dd467587886f342cf9add91c463fb06c0cc2ab414d72b52eacc18a63bf3833ff",
        "train_A.txt": "4b39bfa69d9d001938d7ec32853928e51a53c141a95f3b698b052eb27821c3ad",
        "train_B.txt": "bab4611796a5c077baf29d6c5f4a70c40cd25e38bb90e9d85035b8c1f06c7a93",
        "train_overlap.txt": "0375a8e5c049b9377c1199bda2d0de270e989f1cdf08ff21e4d120ec4a5b5986",
        "valid.txt": "6d93b5025ad65efef71f0b2e1beaa5899f5ed8f8fd95da96de1286f5b8cb0074",
    })
