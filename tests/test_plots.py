import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xscene_lib.data import DataError  # noqa: E402
from xscene_lib.evaluation import cold_start_curve, comparison_forest, metric_by_history_length, scenario_bars  # noqa: E402

# 2 models x 2 seeds x 3 scenarios, as in Results.table
TABLE = pd.DataFrame([(model, seed, scenario, 0.1 * (seed + 1) + (model == "joint") * 0.05)
                      for model in ("bpr", "joint") for seed in (0, 1) for scenario in ("young", "old", "all")],
                     columns=["model", "seed", "scenario", "ndcg@10"])
# 2 pairs x 2 slices x 2 scenarios, as from experiment.compare
COMPARE = pd.DataFrame([(candidate, "bpr", slice_name, scenario, 0.02, -0.01, 0.05, "ndcg@10")
                        for candidate in ("joint", "article") for slice_name in ("all", "cold items")
                        for scenario in ("young", "all")],
                       columns=["candidate_model", "baseline_model", "slice", "scenario", "difference", "ci_low",
                                "ci_high", "metric"])
# users 1..4 with 1, 2, 4 and 8 training rows; each model has one test row per user and seed
TRAIN = pd.DataFrame({"user_id": np.repeat([1, 2, 3, 4], [1, 2, 4, 8])})
PER_ROW = pd.DataFrame([(model, seed, user, 0.1 * user, user * 3 - 3, user <= 2)
                        for model in ("bpr", "joint", "popularity") for seed in (0, 1) for user in (1, 2, 3, 4)],
                       columns=["model", "seed", "user_id", "ndcg@10", "item_train_count", "cold_item"])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_scenario_bars_draw_one_bar_per_model_and_scenario():
    figure = scenario_bars(TABLE)
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    assert len(ax.patches) == 2 * 3
    heights = sorted(round(bar.get_height(), 6) for bar in ax.patches)
    assert heights == [0.15] * 3 + [0.2] * 3  # means over the two seeds


def test_scenario_bars_of_a_compare_table_show_each_pairs_difference_on_all_items():
    (ax,) = scenario_bars(COMPARE).axes
    assert len(ax.patches) == 2 * 2  # the cold-items slice is left out
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["joint - bpr", "article - bpr"]


def test_metric_by_history_length_draws_one_line_per_model():
    (ax,) = metric_by_history_length(PER_ROW, TRAIN).axes
    assert len(ax.get_lines()) == 3
    (ax,) = metric_by_history_length(PER_ROW, TRAIN, bins=[1, 3, 100]).axes
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 2, 2]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.15, 0.35])  # users 1-2, users 3-4


def test_cold_start_curve_draws_lines_by_item_count_or_cold_and_warm_bars():
    (ax,) = cold_start_curve(PER_ROW).axes
    assert len(ax.get_lines()) == 3
    (ax,) = cold_start_curve(PER_ROW.drop(columns="item_train_count")).axes
    assert len(ax.patches) == 3 * 2
    assert [label.get_text() for label in ax.get_xticklabels()] == ["cold", "warm"]


def test_comparison_forest_has_a_row_per_comparison():
    (ax,) = comparison_forest(COMPARE).axes
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert len(labels) == len(COMPARE)
    assert labels[0] == "joint - bpr | all | young"


def test_plots_reject_missing_columns_and_bad_bins():
    with pytest.raises(DataError, match="lacks column"):
        scenario_bars(TABLE, metric="recall@10")
    with pytest.raises(DataError, match="no rows"):
        scenario_bars(TABLE.iloc[:0])
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        comparison_forest([1, 2])
    with pytest.raises(DataError, match="lacks column"):
        comparison_forest(COMPARE.drop(columns="ci_low"))
    with pytest.raises(DataError, match="lacks column"):
        metric_by_history_length(PER_ROW, TRAIN.rename(columns={"user_id": "user"}))
    with pytest.raises(DataError, match="bins"):
        metric_by_history_length(PER_ROW, TRAIN, bins=[5, 1])
    with pytest.raises(DataError, match="item_train_count"):
        cold_start_curve(PER_ROW.drop(columns=["item_train_count", "cold_item"]))
