"""Evaluation: the tie-aware ranking kernel, full-ranking and sampled metrics, seeds and bootstrap
intervals, figures, and text neighbours. Imports only xscene_lib.data (models are used through their
`score` method)."""
from xscene_lib.evaluation.intervals import format_interval, over_seeds, paired_bootstrap, seed_summary, verdict
from xscene_lib.evaluation.metrics import item_coverage, ranking_metrics, sampled_ranks, summarise, target_ranks
from xscene_lib.evaluation.plots import cold_start_curve, comparison_forest, metric_by_history_length, scenario_bars
from xscene_lib.evaluation.ranking import rank_among, tie_aware_ranks
from xscene_lib.evaluation.similarity import co_consumption_gap, co_consumption_pairs, nearest_items

__all__ = ['co_consumption_gap', 'co_consumption_pairs', 'cold_start_curve', 'comparison_forest', 'format_interval',
           'item_coverage', 'metric_by_history_length', 'nearest_items', 'over_seeds', 'paired_bootstrap',
           'rank_among', 'ranking_metrics', 'sampled_ranks', 'scenario_bars', 'seed_summary', 'summarise',
           'target_ranks', 'tie_aware_ranks', 'verdict']
