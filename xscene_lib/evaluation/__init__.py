"""Evaluation: the tie-aware ranking kernel, full-ranking and sampled metrics, seeds and bootstrap
intervals, figures, and text neighbours. Imports only xscene_lib.data (models are used through their
`score` method).

Names are imported from their modules when first used, so the models' early stopping (which needs only
`metrics`) does not load matplotlib and seaborn for `plots`.
"""
from xscene_lib.lazy_exports import lazy_exports

_EXPORTS = {
    # intervals
    "format_interval": "intervals",
    "over_seeds": "intervals",
    "paired_bootstrap": "intervals",
    "seed_paired_difference": "intervals",
    "seed_spread": "intervals",
    "seed_summary": "intervals",
    "verdict": "intervals",
    # metrics
    "in_scenario_order": "metrics",
    "item_coverage": "metrics",
    "ranking_metrics": "metrics",
    "sampled_ranks": "metrics",
    "summarise": "metrics",
    "target_ranks": "metrics",
    # plots
    "cold_start_curve": "plots",
    "comparison_forest": "plots",
    "metric_by_history_length": "plots",
    "scenario_bars": "plots",
    # ranking
    "rank_among": "ranking",
    "tie_aware_ranks": "ranking",
    # similarity
    "co_consumption_gap": "similarity",
    "co_consumption_pairs": "similarity",
    "nearest_items": "similarity",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
