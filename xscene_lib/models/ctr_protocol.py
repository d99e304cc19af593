"""The click-through (pointwise) protocol of the ml-1m Scenario-Wise Rec benchmark: split and scores.

Every rated interaction becomes one example whose label says whether the user liked the item
(rating above a threshold, 3 by default, so 4 and 5 stars are clicks). The examples are split at
random into train, valid and test, and a model's predicted click probabilities are scored by AUC
and log loss in each scenario and over all scenarios together.

The split frames carry the features the click-through models use besides the ids, where the dataset has
them: the user's `gender`, `occupation` and `zip_code` (categories), the user's `age` (a number) and the
item's `genres` ("|"-separated). These are the features of the benchmark's script
(scripts/run_movielens_rank_multi_domain.py in Xiaopengli1/Scenario-Wise-Rec), except that it keeps only
an item's first genre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from xscene_lib.data.dataset import Dataset, Split
from xscene_lib.data.validation import DataError, check_int, check_number

USER_FEATURES = ("gender", "occupation", "zip_code")  # one category per user
NUMERIC_USER_FEATURES = ("age",)  # one number per user (scaled to [0, 1] on the training rows by the models)
ITEM_FEATURES = ("genres",)  # several categories per item, "|"-separated
GENRE_SEPARATOR = "|"


def click_through_split(dataset: Dataset, *, label_threshold: float = 3, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                        seed: int = 0) -> Split:
    """Label every interaction (1 if rating > label_threshold) and split them at random into train/valid/test.

    Each part gets round(fraction * n) interactions (train takes what is left), is ordered by user
    then time, and keeps the scenario order of the dataset as an ordered categorical column.
    """
    if not isinstance(dataset, Dataset):
        raise DataError(f"click_through_split needs a Dataset (e.g. datasets.load('ml-1m')), "
                        f"got {type(dataset).__name__}")
    shares = _checked_fractions(fractions)
    check_int("click_through_split", "seed", seed, minimum=0)
    frame = _with_features(dataset)
    frame["label"] = _labels(frame["rating"], label_threshold)
    frame["scenario"] = pd.Categorical(frame["scenario"].astype("str"), categories=dataset.scenarios, ordered=True)
    n = len(frame)
    n_valid, n_test = round(shares[1] * n), round(shares[2] * n)
    order = np.random.default_rng(seed).permutation(n)
    parts = (order[n_valid + n_test:], order[:n_valid], order[n_valid:n_valid + n_test])  # train, valid, test
    return Split(*(frame.iloc[np.sort(rows)].sort_values(["user_id", "timestamp"], kind="stable")
                   .reset_index(drop=True) for rows in parts))


def _checked_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three finite, non-negative shares summing to one, the training share positive."""
    values = tuple(fractions) if isinstance(fractions, (tuple, list)) else ()
    wanted = "fractions must be three non-negative numbers (train, valid, test) summing to 1, e.g. (0.8, 0.1, 0.1)"
    if len(values) != 3:
        raise DataError(f"{wanted}; got {fractions!r}")
    for position, value in enumerate(values):
        check_number("click_through_split", f"fractions[{position}]", value, minimum=0, hint=wanted)
    if not math.isclose(sum(values), 1.0):
        raise DataError(f"{wanted}; got {fractions!r}, summing to {sum(values):g}")
    if values[0] <= 0:
        raise DataError(f"fractions {fractions!r} leave nothing to train on; give train a positive share")
    return values


def _labels(ratings: pd.Series, threshold: float) -> pd.Series:
    """1 where the rating is above the threshold, else 0; a clear error if that leaves one class only."""
    check_number("click_through_split", "label_threshold", threshold,
                 hint="give a rating, e.g. 3 (4 and 5 stars are clicks)")
    labels = (ratings > threshold).astype("int8")
    if labels.nunique() < 2:
        raise DataError(f"label_threshold={threshold} makes every label {int(labels.iloc[0])} (ratings range "
                        f"{ratings.min()}..{ratings.max()}); choose a threshold inside that range")
    return labels


def _with_features(dataset: Dataset) -> pd.DataFrame:
    """The interactions with the user and item feature columns the dataset has."""
    features = (*USER_FEATURES, *NUMERIC_USER_FEATURES, *ITEM_FEATURES, "label")
    frame = dataset.interactions.drop(columns=[c for c in features if c in dataset.interactions.columns])
    for table, key, columns in ((dataset.users, "user_id", USER_FEATURES), (dataset.items, "item_id", ITEM_FEATURES)):
        present = [column for column in columns if column in table.columns]
        if present:
            values = table.set_index(key)[present].fillna("").astype("str")  # missing -> "" (no category)
            frame = frame.join(values, on=key)
    numeric = [column for column in NUMERIC_USER_FEATURES if column in dataset.users.columns
               and pd.api.types.is_numeric_dtype(dataset.users[column])]
    if numeric:
        frame = frame.join(dataset.users.set_index("user_id")[numeric].astype("float64"), on="user_id")
    return frame


def click_through_table(frame: pd.DataFrame, probabilities: np.ndarray,
                        scenarios: Sequence[str] | None = None) -> pd.DataFrame:
    """AUC and log loss of click probabilities per scenario and over all rows ("all").

    frame has `scenario` and `label` (0/1); probabilities shape: (len(frame),). Rows follow
    `scenarios` (default: the column's categorical order, else sorted); a scenario whose rows hold
    one label only gets AUC NaN.
    """
    if not isinstance(frame, pd.DataFrame) or not {"scenario", "label"} <= set(frame.columns):
        found = list(frame.columns) if isinstance(frame, pd.DataFrame) else type(frame).__name__
        raise DataError(f"scoring needs a DataFrame with columns 'scenario' and 'label' (found: {found}); "
                        f"make one with click_through_split")
    if frame.empty:
        raise DataError("scoring needs at least one row; check the split")
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(scores) != len(frame) or not np.all((scores >= 0) & (scores <= 1)):
        raise DataError(f"probabilities must be {len(frame)} numbers in [0, 1], one per row of the frame")
    labels = frame["label"].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise DataError("column 'label' must hold 0 and 1 only; make it with click_through_split")
    names = frame["scenario"].astype("str").to_numpy()
    if scenarios is None:
        column = frame["scenario"]
        scenarios = (list(column.cat.categories) if isinstance(column.dtype, pd.CategoricalDtype)
                     else sorted(set(names)))
    rows = {}
    for name in [*[s for s in scenarios if (names == s).any()], "all"]:
        mask = np.ones(len(names), bool) if name == "all" else names == name
        truth, guess = labels[mask], scores[mask]
        both = len(np.unique(truth)) == 2
        rows[name] = {"auc": roc_auc_score(truth, guess) if both else np.nan,
                      "logloss": log_loss(truth, np.clip(guess, 1e-7, 1 - 1e-7), labels=[0, 1]),
                      "interactions": int(mask.sum()), "positive_rate": float(truth.mean())}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "scenario"
    return table
