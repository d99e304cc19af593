"""Experiments: the runner behind `xscene run`, provenance of results, the claims ledger, and the book's
checks (the article's code, its derivations, cost and capacity, the scaling demo). The top of the
library below `xscene_lib.book` and `xscene_lib.cli`.

Names are imported from their modules when first used, so importing one module of this package (the book
build imports `key_numbers`, the command line `registry`) does not load torch and every model.
"""
from xscene_lib.lazy_exports import lazy_exports

_EXPORTS = {
    # article_code
    "audit": "article_code",
    "error_of": "article_code",
    "Finding": "article_code",
    "findings_table": "article_code",
    "ListingError": "article_code",
    "ListingModel": "article_code",
    "parameter_counts": "article_code",
    "reproduced": "article_code",
    "run_as_printed": "article_code",
    "shapes": "article_code",
    "summary": "article_code",
    "tokens": "article_code",
    # capacity
    "dimension_sweep": "capacity",
    "encoding_seconds": "capacity",
    "overfitting_summary": "capacity",
    "scoring_seconds_per_user": "capacity",
    "Sweep": "capacity",
    "sweep_name": "capacity",
    "trainable_parameters": "capacity",
    # configs
    "config_path": "configs",
    "read_config": "configs",
    "tuned_settings": "configs",
    "write_config": "configs",
    # derivations
    "affine_cosine_gradients": "derivations",
    "affine_cosine_scores": "derivations",
    "article_init": "derivations",
    "bpr_gradients": "derivations",
    "bpr_loss": "derivations",
    "check_gradients": "derivations",
    "cosine": "derivations",
    "cosine_gradient": "derivations",
    "cosine_spread_by_bias": "derivations",
    "in_batch_logits": "derivations",
    "in_batch_softmax_gradient": "derivations",
    "in_batch_softmax_loss": "derivations",
    "in_batch_vector_gradients": "derivations",
    "joint_scores_by_hand": "derivations",
    "output_scale": "derivations",
    "radial_gradient": "derivations",
    "scale_invariance": "derivations",
    # frames
    "frames_digest": "frames",
    "read_frames": "frames",
    # ledger
    "Claim": "ledger",
    "pick": "ledger",
    "seed_range": "ledger",
    "verdict": "ledger",
    # provenance
    "dataset_files": "provenance",
    "package_versions": "provenance",
    "PeakMemory": "provenance",
    # recorded
    "recorded_experiment": "recorded",
    "RECORDED_DIR": "recorded",
    # registry
    "model_names": "registry",
    "model_spec": "registry",
    "model_specs": "registry",
    "ModelSpec": "registry",
    "register_model": "registry",
    # runner
    "compare": "runner",
    "Results": "runner",
    "run_click_through": "runner",
    "run_experiment": "runner",
    # slices
    "cold_flags": "slices",
    "COLD_MAX": "slices",
    "domain_candidates": "slices",
    "training_counts": "slices",
    # tuning
    "tunable_models": "tuning",
    "tune": "tuning",
    "TuningResult": "tuning",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
