"""The claims ledger: each claim of the article beside the measurement that tests it, its interval and a verdict.

A claim predicts the sign of a difference (candidate - baseline): text features should raise NDCG, a joint
model should cost more seconds to fit. The verdict is read off the interval alone:

    interval entirely on the predicted side of zero   -> "supported"
    interval entirely on the other side               -> "not supported"
    interval contains zero                            -> "no conclusion possible at this size"

The intervals come from `experiment.compare` (paired bootstrap over users, 95%) for accuracy, and from
`seed_range` (the smallest and largest per-seed difference) for costs such as fit seconds, which have one
value per training run rather than per user. The ledger keeps the kind of interval beside each number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from xscene_lib.evaluation import intervals
from xscene_lib.data.validation import DataError, check_choice, require_columns

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
NO_CONCLUSION = "no conclusion possible at this size"
SIGNS = (1, -1)  # a claim predicts a positive or a negative difference (candidate - baseline)
SIGN_HINT = "+1 if the claim predicts a positive difference, -1 if a negative one"
BOOTSTRAP_INTERVAL = "95% paired bootstrap over users"
LEDGER_COLUMNS = ("claim", "section", "measured", "dataset", "difference", "ci_low", "ci_high", "interval",
                  "verdict", "chapter")


@dataclass(frozen=True)
class Claim:
    """One claim of the article and the sign of the difference (candidate - baseline) it predicts."""

    claim: str  # the article's claim, in plain words
    section: str  # the article's section that makes it, e.g. "3.3"
    measured: str  # what is measured to test it, e.g. "NDCG@10: joint - joint-no-text, all test users"
    dataset: str  # where it was measured, e.g. "ml-100k (age)"
    predicted_sign: int = 1  # +1: the claim predicts a positive difference, -1: a negative one
    chapter: str = ""  # the book page that measures it in detail, e.g. "joint_training"

    def __post_init__(self) -> None:
        check_choice("Claim", "predicted_sign", self.predicted_sign, SIGNS, hint=SIGN_HINT)


def verdict(ci_low: float, ci_high: float, predicted_sign: int = 1) -> str:
    """The verdict on a claim that predicts a difference of `predicted_sign`, from its interval."""
    check_choice("verdict", "predicted_sign", predicted_sign, SIGNS, hint=SIGN_HINT)
    up, down = (SUPPORTED, NOT_SUPPORTED) if predicted_sign == 1 else (NOT_SUPPORTED, SUPPORTED)
    return intervals.verdict(ci_low, ci_high, above=up, below=down, neither=NO_CONCLUSION)


def pick(compared: pd.DataFrame, baseline: str, candidate: str, *, slice_name: str = "all",
         scenario: str = "all") -> pd.Series:
    """The one row of a compare() table for this pair, slice and scenario (with its interval kind)."""
    require_columns(compared, ["baseline_model", "candidate_model", "slice", "scenario", "difference", "ci_low",
                               "ci_high"], "the compare() table")
    rows = compared[(compared["baseline_model"] == baseline) & (compared["candidate_model"] == candidate)
                    & (compared["slice"] == slice_name) & (compared["scenario"].astype(str) == scenario)]
    if len(rows) != 1:
        pairs = sorted(set(zip(compared["candidate_model"], compared["baseline_model"])))
        raise DataError(f"expected one row for {candidate} - {baseline}, slice {slice_name!r}, scenario "
                        f"{scenario!r}, found {len(rows)}; pairs present (candidate, baseline): {pairs}")
    row = rows.iloc[0].copy()
    row["interval"] = BOOTSTRAP_INTERVAL
    return row


def seed_range(table: pd.DataFrame, column: str, baseline: str, candidate: str) -> pd.Series:
    """Mean per-seed difference candidate - baseline of a per-run column, with its range over seeds.

    `table` is `Results.table` (one row per model, seed and scenario); a run's value, e.g. fit_seconds,
    is read from its "all" row. Seeds run by only one of the two models are left out.
    """
    require_columns(table, ["model", "seed", "scenario", column], "table")
    runs = table[table["scenario"].astype(str) == "all"].pivot_table(index="seed", columns="model", values=column)
    absent = [name for name in (baseline, candidate) if name not in runs.columns]
    if absent:
        raise DataError(f"model(s) {absent} have no runs in the table; models present: {sorted(runs.columns)}")
    differences = (runs[candidate] - runs[baseline]).dropna()  # (n_seeds,)
    if differences.empty:
        raise DataError(f"{candidate} and {baseline} share no seed; run both with the same seeds")
    return pd.Series({"baseline": float(runs[baseline].mean()), "candidate": float(runs[candidate].mean()),
                      "difference": float(differences.mean()), "ci_low": float(differences.min()),
                      "ci_high": float(differences.max()), "interval": f"range over {len(differences)} seed(s)"})


def ledger(entries: Sequence[tuple[Claim, pd.Series | Mapping]]) -> pd.DataFrame:
    """The ledger table: one row per (claim, measurement) with difference, interval, its kind and the verdict."""
    if not entries:
        raise DataError("the ledger needs at least one (Claim, measurement) pair")
    rows = []
    for claim, measurement in entries:
        if not isinstance(claim, Claim):
            raise DataError(f"each entry must start with a Claim, got {type(claim).__name__}")
        values = {key: measurement[key] for key in ("difference", "ci_low", "ci_high") if key in measurement}
        if len(values) < 3:
            raise DataError(f"the measurement of {claim.claim!r} needs difference, ci_low and ci_high "
                            f"(a row of compare() via pick(), or seed_range())")
        low, high = float(values["ci_low"]), float(values["ci_high"])
        rows.append({"claim": claim.claim, "section": claim.section, "measured": claim.measured,
                     "dataset": claim.dataset, "difference": float(values["difference"]), "ci_low": low,
                     "ci_high": high, "interval": measurement.get("interval", BOOTSTRAP_INTERVAL),
                     "verdict": verdict(low, high, claim.predicted_sign), "chapter": claim.chapter})
    return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS))
