"""How sure a result is: spread over seeds, and paired bootstrap intervals over users.

Every claim in the book compares two models on the same test rows. `paired_bootstrap` resamples
users with replacement (a user's rows stay together) and reports the mean difference B - A with
its percentile confidence interval and a two-sided bootstrap p-value. `over_seeds` gives the mean
and standard deviation of a metric across training seeds (`seed_summary` as a table of cells), and
`verdict` turns an interval into the words the book may use about it. `seed_spread` adds how sure a
seed spread itself is (a chi-square interval: three seeds pin a standard deviation down to within a factor of
about 12) and the spread that row-by-row disagreement between the seeds alone produces. Where no per-user
rows exist (the click-through protocol scores AUC over all test rows, and its split is redrawn with every seed),
`seed_paired_difference` pairs two models by seed and gives a t interval over the seeds' differences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from xscene_lib.data.validation import DataError, check_int, check_number, require_columns

RESAMPLES_AT_ONCE = 256  # bootstrap resamples drawn per block, bounding memory to 256 * n_users indices


def over_seeds(results: pd.DataFrame, metric: str, by: Sequence[str] = ("model", "scenario")) -> pd.DataFrame:
    """Mean, standard deviation and number of seeds of one metric per group of a results table."""
    groups = list(by)
    _require(results, [*groups, "seed", metric], "results")
    table = results.groupby(groups, observed=True, sort=False)[metric].agg(["mean", "std", "count"])
    return table.rename(columns={"count": "seeds"}).fillna({"std": 0.0}).reset_index()


def seed_summary(results: pd.DataFrame, metrics: Sequence[str], by: str = "model") -> pd.DataFrame:
    """A table of "mean ± std over seeds" cells: one row per `by` value, one column per (metric, scenario).

    Scenarios keep the order in which `results` first lists them (a run lists the dataset's scenarios in
    their own order, then "all"); a cell never wraps, its spaces being non-breaking.
    """
    cells = {}
    for metric in metrics:
        spread = over_seeds(results, metric, (by, "scenario"))
        spread["cell"] = spread["mean"].map("{:.4f}".format) + "\u00a0±\u00a0" + spread["std"].map("{:.4f}".format)
        table = spread.pivot(index=by, columns="scenario", values="cell")
        cells[metric] = table.reindex(columns=pd.unique(spread["scenario"]))
    return pd.concat(cells, axis=1)


def seed_paired_difference(results: pd.DataFrame, metric: str, baseline: str, candidate: str, *,
                           by: Sequence[str] = ("scenario",), confidence: float = 0.95) -> pd.DataFrame:
    """candidate - baseline per group, paired by seed: mean difference and its t interval over the seeds.

    results has columns model, seed, `metric` and `by`; with one common seed the interval is NaN (no claim).
    """
    groups = list(by)
    _require(results, ["model", "seed", *groups, metric], "results")
    check_number("seed_paired_difference", "confidence", confidence, above=0, below=1)
    wide = results[results["model"].isin([baseline, candidate])].pivot_table(
        index=[*groups, "seed"], columns="model", values=metric, observed=True, sort=False)
    missing = [name for name in (baseline, candidate) if name not in wide.columns]
    if missing:
        raise DataError(f"results lack model {missing[0]!r}; found {sorted(results['model'].unique())}")
    differences = (wide[candidate] - wide[baseline]).dropna().rename("difference").reset_index()
    rows = []
    for key, part in differences.groupby(groups, observed=True, sort=False):
        n, mean = len(part), float(part["difference"].mean())
        half = (stats.t.ppf((1 + confidence) / 2, n - 1) * part["difference"].std(ddof=1) / np.sqrt(n)
                if n > 1 else np.nan)
        rows.append({**dict(zip(groups, key if isinstance(key, tuple) else (key,))), "difference": mean,
                     "ci_low": mean - half, "ci_high": mean + half, "seeds": n})
    return pd.DataFrame(rows)


def seed_spread(per_row: pd.DataFrame, metric: str, *, key: Sequence[str] = ("user_id", "item_id"),
                confidence: float = 0.95) -> pd.DataFrame:
    """Per model: seeds, mean and std over seeds of the metric, the std's interval, and its row-noise spread.

    per_row holds one row per (model, seed, test row) with the columns model, seed, `key` (naming a test row)
    and `metric`. The std's interval assumes normally distributed seed means: (k - 1) s^2 / sigma^2 is
    chi-square with k - 1 degrees of freedom for k seeds (std and interval NaN for one seed). row_noise is
    sqrt(mean over test rows of the variance over seeds / n_rows): the std the seed means would have if the seeds
    were equally good models that differ only in which rows they happen to get right. A std well above it
    means some seeds are systematically better or worse than others.
    """
    keys = list(key)
    _require(per_row, ["model", "seed", *keys, metric], "per_row")
    check_number("seed_spread", "confidence", confidence, above=0, below=1, hint="e.g. 0.95")
    rows = []
    for model, part in per_row.groupby("model", observed=True, sort=False):
        wide = part.pivot_table(index=keys, columns="seed", values=metric, aggfunc="mean", observed=True)
        if wide.isna().any().any():
            raise DataError(f"model {model!r}: its seeds scored different test rows; evaluate every seed on the "
                            f"same rows")
        values = wide.to_numpy(np.float64)  # (n_rows, k)
        k, means = values.shape[1], values.mean(axis=0)  # (k,): each seed's mean over the rows
        std = low = high = noise = np.nan  # one seed has no spread to measure
        if k > 1:
            std = float(means.std(ddof=1))
            low, high = (std * np.sqrt((k - 1) / stats.chi2.ppf(q, k - 1)) for q in ((1 + confidence) / 2,
                                                                                      (1 - confidence) / 2))
            noise = float(np.sqrt(values.var(axis=1, ddof=1).mean() / len(values)))
        rows.append({"model": model, "seeds": k, "mean": float(means.mean()), "std": std, "std_low": float(low),
                     "std_high": float(high), "row_noise": noise, "rows": len(values)})
    return pd.DataFrame(rows)


def verdict(ci_low: float, ci_high: float, above: str = "above zero", below: str = "below zero",
            neither: str = "no difference can be told") -> str:
    """The words an interval of a difference allows: `above` if it lies above zero, `below` if under, else `neither`."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)) or ci_low > ci_high:
        raise DataError(f"an interval is two finite numbers, low <= high; got [{ci_low}, {ci_high}]")
    return above if ci_low > 0 else below if ci_high < 0 else neither


def format_interval(low: float, high: float, digits: int = 4) -> str:
    """An interval as the book prints it, signed and `digits` decimals: "[-0.0012, +0.0034]"."""
    check_int("format_interval", "digits", digits, minimum=0)
    for name, value in (("low", low), ("high", high)):
        check_number("format_interval", name, value)
    if low > high:
        raise DataError(f"format_interval: low ({low}) is above high ({high}); pass the interval's ends in order")
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def paired_bootstrap(per_row: pd.DataFrame, metric: str, baseline: str, candidate: str, *,
                     by: Sequence[str] = ("scenario",), unit: str = "user_id", n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Difference candidate - baseline in a per-row metric, per group and overall, with a bootstrap CI.

    `per_row` holds one row per (model, test row[, seed]) with columns model, `unit`, the groups and
    the metric (e.g. the output of metrics.ranking_metrics with a model column). Rows of several
    seeds are averaged per unit first. Returns one row per group plus "all": n_units, baseline,
    candidate, difference, ci_low, ci_high, p_value.
    """
    groups = list(by)
    _require(per_row, ["model", unit, *groups, metric], "per_row")
    check_int("paired_bootstrap", "n_resamples", n_resamples, minimum=100)
    check_number("paired_bootstrap", "confidence", confidence, above=0.5, below=1.0, hint="e.g. 0.95")
    models = set(per_row["model"].astype(str))
    absent = [name for name in (baseline, candidate) if name not in models]
    if absent:
        raise DataError(f"model(s) {absent} are not in per_row; models present: {sorted(models)}")
    keys = [*groups, unit]
    wide = (per_row[per_row["model"].astype(str).isin([baseline, candidate])]
            .groupby([*keys, "model"], observed=True)[metric].mean().unstack("model"))
    unpaired = wide[[baseline, candidate]].isna().any(axis=1)
    if unpaired.any():
        raise DataError(f"{int(unpaired.sum())} (group, {unit}) pairs have a result for only one of the two models; "
                        f"evaluate both models on the same test rows")
    wide = wide.reset_index()
    rng = np.random.default_rng(seed)
    rows = [_compare(part, baseline, candidate, unit, n_resamples, confidence, rng) | dict(zip(groups, name))
            for name, part in wide.groupby(groups, observed=True, sort=False)] if groups else []
    # overall: a unit that appears in several groups counts once, with its rows averaged
    overall = wide.groupby(unit)[[baseline, candidate]].mean().reset_index()
    rows.append(_compare(overall, baseline, candidate, unit, n_resamples, confidence, rng)
                | {column: "all" for column in groups})
    columns = [*groups, "n_units", "baseline", "candidate", "difference", "ci_low", "ci_high", "p_value"]
    return pd.DataFrame(rows)[columns]


def _compare(part: pd.DataFrame, baseline: str, candidate: str, unit: str, n_resamples: int,
             confidence: float, rng: np.random.Generator) -> dict[str, float]:
    """Mean difference of one group of units, with its percentile interval and two-sided p-value."""
    per_unit = part.groupby(unit)[[baseline, candidate]].mean()
    differences = (per_unit[candidate] - per_unit[baseline]).to_numpy(np.float64)  # (n_units,)
    n = len(differences)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, RESAMPLES_AT_ONCE):
        count = min(RESAMPLES_AT_ONCE, n_resamples - start)
        means[start:start + count] = differences[rng.integers(0, n, size=(count, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    observed = float(differences.mean())
    # share of resampled means on the other side of zero, doubled: how often the sign could flip
    p_value = min(1.0, 2.0 * min((means <= 0).mean(), (means >= 0).mean())) if observed != 0 else 1.0
    return {"n_units": n, "baseline": float(per_unit[baseline].mean()), "candidate": float(per_unit[candidate].mean()),
            "difference": observed, "ci_low": float(np.quantile(means, tail)),
            "ci_high": float(np.quantile(means, 1.0 - tail)), "p_value": float(p_value)}


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """A clear error when `frame` is not a non-empty DataFrame with these columns."""
    require_columns(frame, columns, what)
    if frame.empty:
        raise DataError(f"{what} has no rows; evaluate the models first")
