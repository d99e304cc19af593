"""What a test target competes with, and which test rows are cold: the runner's choices, callable on any split.

    candidates = domain_candidates(dataset)   # {domain: item ids} when scenarios are item domains, else None
    flags = cold_flags(split)                 # cold_item, cold_user per test row (at most COLD_MAX in training)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xscene_lib.data.dataset import Dataset, Split
from xscene_lib.data.validation import DataError, check_choice, check_int

COLD_MAX = 5  # a test item (user) with at most this many training interactions in its scenario is "cold"


def domain_candidates(data: Dataset) -> dict[str, list[int]] | None:
    """Items of each domain when the scenarios are item domains (food-kitchen), else None (rank against all).

    The scenarios are item domains when the items have a `domain` column whose values are exactly the
    scenarios; a target is then ranked against the items of its own domain only.
    """
    if not isinstance(data, Dataset):
        raise DataError(f"domain_candidates needs a Dataset, got {type(data).__name__}")
    if "domain" not in data.items.columns or set(data.scenarios) != set(data.items["domain"]):
        return None
    return {domain: group.tolist() for domain, group in data.items.groupby("domain")["item_id"]}


def training_counts(split: Split, by: str = "item") -> np.ndarray:
    """For each test row, the training interactions of its item (or user) in its scenario. shape: (n_test,)."""
    if not isinstance(split, Split):
        raise DataError(f"training_counts needs a Split (from Dataset.split()), got {type(split).__name__}")
    check_choice("training_counts", "by", by, ("item", "user"))
    key = f"{by}_id"
    counts = split.train.astype({"scenario": str}).groupby([key, "scenario"]).size()
    rows = pd.MultiIndex.from_frame(split.test[[key, "scenario"]].astype({"scenario": str}))
    return counts.reindex(rows).fillna(0).to_numpy()


def cold_flags(split: Split, max_train_interactions: int = COLD_MAX) -> pd.DataFrame:
    """Whether each test row's item and user are cold: at most `max_train_interactions` training rows in its scenario.

    shape: (n_test, 2), columns cold_item and cold_user (bool), index that of split.test.
    """
    check_int("cold_flags", "max_train_interactions", max_train_interactions, minimum=0)
    return pd.DataFrame({f"cold_{by}": training_counts(split, by) <= max_train_interactions
                         for by in ("item", "user")}, index=split.test.index)
