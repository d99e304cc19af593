"""Figures of experiment results: per-scenario bars, metric by user history and item popularity, forest plots.

Every function takes the tables of xscene_lib.experiments.runner (`Results.table`, `Results.per_row`, `compare()`)
and returns a matplotlib Figure; showing or saving it is left to the caller. The metric is any per-row
column such as "ndcg@10" or "recall@20".
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from xscene_lib.data.validation import DataError, require_columns
from xscene_lib.evaluation.intervals import over_seeds

INTERVAL_COLUMNS = ("difference", "ci_low", "ci_high")  # the columns that mark a compare() table


def scenario_bars(table: pd.DataFrame, metric: str = "ndcg@10") -> Figure:
    """Bars per scenario: each model's mean over seeds with its std, or each compared pair's difference with its CI."""
    if set(INTERVAL_COLUMNS) <= set(_frame(table, "table").columns):
        _require(table, ["scenario", "baseline_model", "candidate_model", *INTERVAL_COLUMNS], "a compare() table")
        rows = table[table["slice"] == "all"] if "slice" in table.columns else table
        bars = rows.assign(series=rows["candidate_model"].astype(str) + " - " + rows["baseline_model"].astype(str),
                           value=rows["difference"], low=rows["ci_low"], high=rows["ci_high"])
        label = f"difference in {table['metric'].iloc[0] if 'metric' in table.columns else metric} (95% CI)"
    else:
        _require(table, ["model", "seed", "scenario", metric], "table")
        spread = over_seeds(table, metric, by=("model", "scenario"))
        bars = spread.assign(series=spread["model"], value=spread["mean"], low=spread["mean"] - spread["std"],
                             high=spread["mean"] + spread["std"])
        label = f"{metric} (mean ± std over seeds)"
    figure, ax = plt.subplots(figsize=(8, 4))
    _grouped_bars(ax, bars, group="scenario")
    ax.set(xlabel="scenario", ylabel=label)
    return figure


def metric_by_history_length(per_row: pd.DataFrame, train: pd.DataFrame, metric: str = "ndcg@10",
                             bins: Sequence[float] | None = None) -> Figure:
    """The metric against the user's number of training interactions, in log-spaced bins; one line per model."""
    _require(per_row, ["model", "user_id", metric], "per_row")
    _require(train, ["user_id"], "train")
    history = train.groupby("user_id").size()
    lengths = per_row["user_id"].map(history).fillna(0).to_numpy()
    edges = _log_edges(lengths) if bins is None else np.asarray(bins, dtype=np.float64)
    figure, ax = plt.subplots(figsize=(7, 4))
    _binned_lines(ax, per_row, lengths, edges, metric)
    ax.set(xscale="log", xlabel="user's training interactions (bin middle)", ylabel=metric)
    return figure


def cold_start_curve(per_row: pd.DataFrame, metric: str = "ndcg@10") -> Figure:
    """The metric against the test item's training count (lines per model), or cold vs warm bars from `cold_item`."""
    _require(per_row, ["model", metric], "per_row")
    figure, ax = plt.subplots(figsize=(7, 4))
    if "item_train_count" in per_row.columns:
        counts = per_row["item_train_count"].to_numpy(np.float64)
        _binned_lines(ax, per_row, counts + 1, _log_edges(counts + 1), metric)  # +1: a count of 0 has a place
        ax.set(xscale="log", xlabel="test item's training interactions + 1 (bin middle)", ylabel=metric)
    elif "cold_item" in per_row.columns:
        by = ["model", "cold_item"] + (["seed"] if "seed" in per_row.columns else [])
        per_seed = per_row.groupby(by, observed=True)[metric].mean().reset_index()
        spread = per_seed.groupby(["model", "cold_item"], observed=True)[metric].agg(["mean", "std"]).fillna(0.0)
        spread = spread.reset_index().sort_values("cold_item", ascending=False, kind="stable")  # cold first
        bars = spread.assign(series=spread["model"], value=spread["mean"], low=spread["mean"] - spread["std"],
                             high=spread["mean"] + spread["std"],
                             item=np.where(spread["cold_item"].astype(bool), "cold", "warm"))
        _grouped_bars(ax, bars, group="item")
        ax.set(xlabel="test item", ylabel=metric)
    else:
        plt.close(figure)
        raise DataError("per_row lacks both 'item_train_count' and 'cold_item'; take it from run_experiment")
    return figure


def comparison_forest(compare_table: pd.DataFrame) -> Figure:
    """Forest plot: each compared pair's difference with its CI, one row per pair, slice and scenario."""
    _require(compare_table, ["scenario", *INTERVAL_COLUMNS], "compare_table")
    rows = compare_table.reset_index(drop=True)
    parts = [rows[column].astype(str) for column in ("candidate_model", "baseline_model") if column in rows.columns]
    pair = parts[0] + " - " + parts[1] + " | " if len(parts) == 2 else ""
    slices = rows["slice"].astype(str) + " | " if "slice" in rows.columns else ""
    labels = pair + slices + rows["scenario"].astype(str)
    positions = np.arange(len(rows))[::-1]  # first row at the top
    figure, ax = plt.subplots(figsize=(7, 1.5 + 0.3 * len(rows)))
    ax.errorbar(rows["difference"], positions, xerr=[rows["difference"] - rows["ci_low"],
                rows["ci_high"] - rows["difference"]], fmt="o", color=sns.color_palette()[0], capsize=3)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    metric = f" in {rows['metric'].iloc[0]}" if "metric" in rows.columns else ""
    ax.set(yticks=positions, yticklabels=labels.tolist(), xlabel=f"difference{metric} (95% CI)")
    figure.tight_layout()
    return figure


def _grouped_bars(ax: Axes, bars: pd.DataFrame, group: str) -> None:
    """One cluster of bars per value of `group`, one bar per series, error bars from low to high."""
    groups = list(dict.fromkeys(bars[group].astype(str)))
    series = list(dict.fromkeys(bars["series"].astype(str)))
    width = 0.8 / len(series)
    for number, (name, color) in enumerate(zip(series, sns.color_palette(n_colors=len(series)))):
        part = bars[bars["series"].astype(str) == name]
        part = part.set_index(part[group].astype(str)).reindex(groups)
        x = np.arange(len(groups)) - 0.4 + width * (number + 0.5)
        error = np.vstack([part["value"] - part["low"], part["high"] - part["value"]])
        ax.bar(x, part["value"], width, yerr=error, capsize=3, color=color, label=name)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them


def _binned_lines(ax: Axes, per_row: pd.DataFrame, values: np.ndarray, edges: np.ndarray, metric: str) -> None:
    """One line per model: the mean metric of the rows whose value falls in each bin, at the bin's middle."""
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        raise DataError(f"bins must be at least two increasing positive edges, got {edges.tolist()}")
    which = np.digitize(values, edges[1:-1])  # bin number of each row, values outside go to the end bins
    middles = np.sqrt(edges[:-1] * edges[1:])  # geometric middle, for a log axis
    means = per_row[metric].astype(np.float64).groupby([per_row["model"].astype(str), which]).mean()
    models = list(dict.fromkeys(per_row["model"].astype(str)))
    for name, color in zip(models, sns.color_palette(n_colors=len(models))):
        line = means.loc[name]
        ax.plot(middles[line.index.to_numpy()], line.to_numpy(), marker="o", color=color, label=name)
    ax.legend(fontsize="small")


def _log_edges(values: np.ndarray, n_bins: int = 8) -> np.ndarray:
    """Up to n_bins log-spaced bin edges covering values >= 1."""
    top = max(float(np.max(values, initial=1.0)), 1.0) + 1.0
    return np.unique(np.geomspace(1.0, top, n_bins + 1).round(6))


def _frame(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """`frame`, if it is a non-empty DataFrame."""
    require_columns(frame, [], what)
    if frame.empty:
        raise DataError(f"{what} has no rows; run the experiment first")
    return frame


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """A clear DataError unless `frame` is a non-empty DataFrame with these columns."""
    require_columns(_frame(frame, what), columns, what)
