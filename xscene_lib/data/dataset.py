"""Interaction data for multi-scenario recommendation: validation, description, filtering, splits, views."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xscene_lib.data.validation import DataError, check_flag, check_int, require_columns


INTERACTION_COLUMNS = ("user_id", "item_id", "scenario", "timestamp", "rating")
SPLIT_NAMES = ("train", "valid", "test")
_EXACT_FLOAT_LIMIT = 2.0 ** 53  # from here on float64 skips integers: ids read as floats could merge


def _first(values: pd.Series) -> object:
    return values.iloc[:1].tolist()[0]


def _fail_if_not_frame_with(frame: pd.DataFrame, what: str, required: tuple[str, ...]) -> None:
    require_columns(frame, required, what, f"rename your columns or pass a frame with {', '.join(required)}")
    if frame.empty:
        raise DataError(f"{what} is empty; pass a frame with at least one row")


def _fail_if_na(values: pd.Series, what: str) -> None:
    missing = values.isna()
    if missing.any():
        raise DataError(f"{what} column '{values.name}' has {int(missing.sum()):,} missing value(s) "
                        f"(first at row {missing.idxmax()!r}); fill or drop those rows")


def _as_int64(values: pd.Series, what: str, fix: str = "map them to integer ids, e.g. with pd.factorize") -> pd.Series:
    _fail_if_na(values, what)
    if pd.api.types.is_datetime64_any_dtype(values):
        naive = values.dt.tz_convert(None) if values.dt.tz is not None else values
        return naive.astype("datetime64[s]").astype("int64")
    if pd.api.types.is_bool_dtype(values):
        raise DataError(f"{what} column '{values.name}' holds booleans, not integers; {fix}")
    numbers = values if pd.api.types.is_integer_dtype(values) else pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        raise DataError(f"{what} column '{values.name}' must hold integers; {int(bad.sum()):,} value(s) are not, "
                        f"e.g. {_first(values[bad])!r} at row {bad.idxmax()!r}; {fix}")
    _fail_if_inexact(values, numbers, what, fix)
    return numbers.astype("int64")


def _fail_if_inexact(values: pd.Series, numbers: pd.Series, what: str, fix: str) -> None:
    """A DataError for integers that int64 cannot hold (or a float64 conversion made inexact): they would merge."""
    if pd.api.types.is_float_dtype(numbers):
        beyond = numbers.abs() >= _EXACT_FLOAT_LIMIT
    elif pd.api.types.is_unsigned_integer_dtype(numbers) or numbers.dtype == object:
        beyond = (numbers > np.iinfo(np.int64).max) | (numbers < np.iinfo(np.int64).min)
    else:
        return
    if beyond.any():
        raise DataError(f"{what} column '{values.name}' holds {int(beyond.sum()):,} integer(s) beyond the 64-bit "
                        f"range (or too long to convert exactly), e.g. {_first(values[beyond])!r} at row "
                        f"{beyond.idxmax()!r}, so distinct values could merge; {fix}")


def _as_float32(values: pd.Series, what: str) -> pd.Series:
    _fail_if_na(values, what)
    numbers = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_bool_dtype(values) else values * np.nan
    if numbers.isna().any():
        raise DataError(f"{what} column '{values.name}' must be numeric, e.g. {_first(values[numbers.isna()])!r} "
                        f"is not; map it to numbers or drop the column (a missing rating column means 1.0)")
    with np.errstate(over="ignore"):
        single = numbers.astype("float32")
    infinite = ~np.isfinite(single)
    if infinite.any():
        raise DataError(f"{what} column '{values.name}' must hold finite numbers within float32 range, e.g. "
                        f"{_first(values[infinite])!r} at row {infinite.idxmax()!r} is not; fix or drop those rows")
    return single


def _as_text(values: pd.Series, what: str) -> pd.Series:
    _fail_if_na(values, what)
    text = values.astype("str")
    blank = text.str.strip() == ""
    if blank.any():
        raise DataError(f"{what} column '{values.name}' has {int(blank.sum()):,} empty value(s) "
                        f"(first at row {blank.idxmax()!r}); give every row a non-empty string")
    return text


def _fail_if_duplicated(frame: pd.DataFrame, what: str, keys: list[str]) -> None:
    duplicated = frame.duplicated(subset=keys)
    if duplicated.any():
        example = frame.loc[duplicated.idxmax(), keys].to_dict()
        raise DataError(f"{what} has {int(duplicated.sum()):,} duplicate row(s) on {keys}, e.g. {example}; "
                        f"drop them with .drop_duplicates({keys})")


def _fail_if_unknown(ids: pd.Series, known: pd.Series, what: str) -> None:
    unknown = ~ids.isin(known)
    if unknown.any():
        raise DataError(f"{int(unknown.sum()):,} interaction(s) refer to {ids.name} values missing from {what}, "
                        f"e.g. {_first(ids[unknown])}; add them to {what} or drop those interactions")


def _clean_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    table = interactions.reset_index(drop=True)
    clean = pd.DataFrame({"user_id": _as_int64(table["user_id"], "interactions"),
                          "item_id": _as_int64(table["item_id"], "interactions"),
                          "scenario": _as_text(table["scenario"], "interactions"),
                          "timestamp": _as_int64(table["timestamp"], "interactions", fix="convert them to integers "
                                                 "such as unix seconds, or pass datetime64 values")})
    clean["rating"] = _as_float32(table["rating"], "interactions") if "rating" in table else np.float32(1.0)
    for column in table.columns.difference(INTERACTION_COLUMNS, sort=False):
        clean[column] = table[column]
    if "split" in clean:
        clean["split"] = _as_text(clean["split"], "interactions")
        odd = ~clean["split"].isin(SPLIT_NAMES)
        if odd.any():
            raise DataError(f"interactions column 'split' may only hold {list(SPLIT_NAMES)}, found "
                            f"{_first(clean['split'][odd])!r}; fix it or drop the column to split by time")
    _fail_if_duplicated(clean, "interactions", ["user_id", "item_id", "scenario", "timestamp"])
    return clean


def _scenario_order(given: list[str] | None, raw: pd.Series, clean: pd.Series) -> list[str]:
    if given is None and isinstance(raw.dtype, pd.CategoricalDtype):
        given = list(raw.cat.categories)
    present = set(clean.unique())
    order = sorted(present) if given is None else [str(name) for name in given]
    if len(set(order)) != len(order):
        raise DataError(f"scenarios {order} lists a name twice; list each scenario once")
    if "all" in order:
        raise DataError("scenario name 'all' is reserved for the totals in describe(); rename that scenario")
    unlisted = sorted(present - set(order))
    if unlisted:
        raise DataError(f"interactions use scenario(s) {unlisted} that are not in scenarios={order}; "
                        f"add them to scenarios or drop those rows")
    empty = [name for name in order if name not in present]
    if empty:
        raise DataError(f"scenario(s) {empty} have no interactions; leave them out of scenarios "
                        f"(for a categorical column: .cat.remove_unused_categories())")
    return order


def _sequence_order(interactions: pd.DataFrame) -> np.ndarray:
    return np.lexsort((interactions["timestamp"].to_numpy(), interactions["user_id"].to_numpy()))


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Interactions tagged with a scenario, items with text, and users, validated and normalised."""

    name: str
    interactions: pd.DataFrame  # INTERACTION_COLUMNS (+ optional "split" given by the source, + extra columns)
    items: pd.DataFrame  # item_id (unique), text (non-empty) + metadata
    users: pd.DataFrame  # user_id (unique) + metadata
    scenarios: list[str]  # fixed order used by describe() and by models
    view: str  # scenario view the scenarios come from ("age", "genre", "domain" or "custom")

    @classmethod
    def from_frames(cls, interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None = None, *,
                    name: str = "custom", view: str = "custom", scenarios: list[str] | None = None) -> Dataset:
        """Validate the frames, normalise their dtypes and build a Dataset."""
        _fail_if_not_frame_with(interactions, "interactions", INTERACTION_COLUMNS[:4])
        _fail_if_not_frame_with(items, "items", ("item_id", "text"))
        clean = _clean_interactions(interactions)
        order = _scenario_order(scenarios, interactions["scenario"], clean["scenario"])
        item_table = items.reset_index(drop=True).assign(item_id=lambda f: _as_int64(f["item_id"], "items"),
                                                         text=lambda f: _as_text(f["text"], "items"))
        _fail_if_duplicated(item_table, "items", ["item_id"])
        _fail_if_unknown(clean["item_id"], item_table["item_id"], "items")
        if users is None:
            users = pd.DataFrame({"user_id": np.sort(clean["user_id"].unique())})
        _fail_if_not_frame_with(users, "users", ("user_id",))
        user_table = users.reset_index(drop=True).assign(user_id=lambda f: _as_int64(f["user_id"], "users"))
        _fail_if_duplicated(user_table, "users", ["user_id"])
        _fail_if_unknown(clean["user_id"], user_table["user_id"], "users")
        return cls(str(name), clean, item_table, user_table, order, str(view))

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, view={self.view!r}, scenarios={self.scenarios}, "
                f"interactions={len(self.interactions):,}, items={len(self.items):,}, users={len(self.users):,})")

    def describe(self) -> Description:
        """Per-scenario counts and density, plus user and item overlap between scenarios."""
        frame = self.interactions
        table = frame.groupby("scenario").agg(users=("user_id", "nunique"), items=("item_id", "nunique"),
                                              interactions=("user_id", "size")).reindex(self.scenarios)
        table.loc["all"] = [frame["user_id"].nunique(), frame["item_id"].nunique(), len(frame)]
        table = table.astype("int64")
        table["density"] = table["interactions"] / (table["users"] * table["items"])
        table.index.name = "scenario"
        return Description(table, self._overlap("user_id"), self._overlap("item_id"))

    def _overlap(self, column: str) -> pd.DataFrame:
        pairs = self.interactions[[column, "scenario"]].drop_duplicates()
        presence = pd.crosstab(pairs[column], pairs["scenario"]).reindex(columns=self.scenarios).astype("int64")
        overlap = presence.T @ presence
        overlap.index.name, overlap.columns.name = "scenario", "scenario"
        return overlap

    def filter(self, *, scenarios: list[str] | None = None, min_user_interactions: int = 1,
               min_item_interactions: int = 1) -> Dataset:
        """Keep the listed scenarios, then users and items with enough interactions (iterated k-core)."""
        kept = self.scenarios if scenarios is None else [scenarios] if isinstance(scenarios, str) else list(scenarios)
        unknown = [name for name in kept if name not in self.scenarios]
        if unknown or not kept:
            raise DataError(f"filter(scenarios={kept}) needs known scenario names; unknown: {unknown}, "
                            f"known: {self.scenarios}")
        for label, value in (("min_user_interactions", min_user_interactions),
                             ("min_item_interactions", min_item_interactions)):
            check_int(None, label, value, minimum=1)
        frame = self.interactions[self.interactions["scenario"].isin(kept)]
        while True:
            user_counts = frame.groupby("user_id")["user_id"].transform("size")
            item_counts = frame.groupby("item_id")["item_id"].transform("size")
            enough = (user_counts >= min_user_interactions) & (item_counts >= min_item_interactions)
            if enough.all():
                break
            frame = frame[enough]
        emptied = [name for name in kept if name not in set(frame["scenario"].unique())]
        if emptied:
            raise DataError(f"scenario(s) {emptied} have no interactions left after filtering with "
                            f"min_user_interactions={min_user_interactions}, min_item_interactions="
                            f"{min_item_interactions}; lower the thresholds or leave those scenarios out")
        items = self.items[self.items["item_id"].isin(frame["item_id"])].reset_index(drop=True)
        users = self.users[self.users["user_id"].isin(frame["user_id"])].reset_index(drop=True)
        order = [name for name in self.scenarios if name in kept]
        return Dataset(self.name, frame.reset_index(drop=True), items, users, order, self.view)

    def split(self, *, valid_size: int = 1, test_size: int = 1, per_scenario: bool = False) -> Split:
        """Temporal leave-last-out split per user (or per user and scenario); a given `split` column wins."""
        frame = self.interactions.iloc[_sequence_order(self.interactions)].reset_index(drop=True)
        if "split" in frame.columns:
            if (valid_size, test_size, per_scenario) != (1, 1, False):
                raise DataError(f"dataset '{self.name}' comes with its split given by the source (column 'split'); "
                                f"call split() without arguments, or drop the column to split by time")
            parts = [frame[frame["split"] == name].drop(columns="split").reset_index(drop=True)
                     for name in SPLIT_NAMES]
            return Split(*parts)
        check_int(None, "valid_size", valid_size, minimum=0)
        check_int(None, "test_size", test_size, minimum=0)
        if valid_size == 0 and test_size == 0:
            raise DataError("valid_size and test_size are both 0, so nothing would be held out; set one to 1 or more")
        check_flag(None, "per_scenario", per_scenario)
        groups = frame.groupby(["user_id", "scenario"] if per_scenario else ["user_id"], sort=False)
        from_end = groups.cumcount(ascending=False).to_numpy()
        long_enough = groups["user_id"].transform("size").to_numpy() > valid_size + test_size
        test = long_enough & (from_end < test_size)
        valid = long_enough & ~test & (from_end < test_size + valid_size)
        train = ~(test | valid)
        return Split(*(frame[mask].reset_index(drop=True) for mask in (train, valid, test)))


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({column: [f"{value:,}" if pd.api.types.is_integer_dtype(values) else f"{value * 100:.3g}%"
                                  for value in values] for column, values in frame.items()}, index=frame.index)


@dataclass(frozen=True, eq=False)
class Description:
    """Counts per scenario (plus "all") and how many users and items scenarios share."""

    table: pd.DataFrame
    user_overlap: pd.DataFrame
    item_overlap: pd.DataFrame

    def _sections(self) -> list[tuple[str, pd.DataFrame]]:
        return [("Scenarios (density = interactions / (users * items))", self.table),
                ("Shared users between scenarios", self.user_overlap),
                ("Shared items between scenarios", self.item_overlap)]

    def __str__(self) -> str:
        return "\n\n".join(f"{title}\n{_formatted(frame).to_string()}" for title, frame in self._sections())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return "".join(f"<p><b>{title}</b></p>{_formatted(frame).to_html()}" for title, frame in self._sections())


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """Train, validation and test interactions, each ordered by user then time."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def __repr__(self) -> str:
        return f"Split(train={len(self.train):,}, valid={len(self.valid):,}, test={len(self.test):,})"

    def without_repeats(self) -> Split:
        """The split without the valid and test rows whose item the user already has in train.

        Where a user meets one item in several scenarios (the synthetic data), such a row asks the model to
        find an item it was trained on, which full ranking with training items left out does not measure.
        """
        seen = pd.MultiIndex.from_frame(self.train[["user_id", "item_id"]])
        new = lambda rows: rows[~pd.MultiIndex.from_frame(rows[["user_id", "item_id"]]).isin(seen)]  # noqa: E731
        return Split(self.train, new(self.valid).reset_index(drop=True), new(self.test).reset_index(drop=True))

    def first_test_users(self, n_users: int) -> Split:
        """The split restricted to the n_users smallest user ids among the test users (all three parts)."""
        check_int(None, "n_users", n_users, minimum=1)
        users = np.sort(self.test["user_id"].unique())[:n_users]
        keep = lambda frame: frame[frame["user_id"].isin(users)].reset_index(drop=True)  # noqa: E731
        return Split(keep(self.train), keep(self.valid), keep(self.test))


def cold_start(split: Split, *, by: str = "user", max_train_interactions: int = 5,
               per_scenario: bool = True) -> pd.DataFrame:
    """Test interactions whose user (or item) has at most `max_train_interactions` training interactions."""
    if not isinstance(split, Split):
        raise DataError(f"cold_start needs a Split (from Dataset.split()), got {type(split).__name__}")
    if by not in ("user", "item"):
        raise DataError(f"cold_start(by={by!r}) is not supported; use by='user' or by='item'")
    check_int(None, "max_train_interactions", max_train_interactions, minimum=0)
    check_flag(None, "per_scenario", per_scenario)
    keys = [f"{by}_id", "scenario"] if per_scenario else [f"{by}_id"]
    counts = split.train.groupby(keys).size().rename("_train_count").reset_index()
    seen = split.test[keys].merge(counts, on=keys, how="left")["_train_count"].fillna(0).to_numpy()
    return split.test[seen <= max_train_interactions].reset_index(drop=True)
