"""Experiments: the runner behind `xscene run`, provenance of results, the claims ledger, and the book's
checks (the article's code, its derivations, cost and capacity, the scaling demo). The top of the
library below `xscene_lib.book` and `xscene_lib.cli`."""
from xscene_lib.experiments.article_code import (Finding, ListingError, ListingModel, audit, error_of, findings_table,
                                                 parameter_counts, reproduced, run_as_printed, shapes, summary, tokens)
from xscene_lib.experiments.capacity import (Sweep, dimension_sweep, encoding_seconds, overfitting_summary,
                                             scoring_seconds_per_user, sweep_name, trainable_parameters)
from xscene_lib.experiments.derivations import (affine_cosine_gradients, affine_cosine_scores, article_init,
                                                bpr_gradients, bpr_loss, check_gradients, cosine, cosine_gradient,
                                                cosine_spread_by_bias, in_batch_logits, in_batch_softmax_gradient,
                                                in_batch_softmax_loss, in_batch_vector_gradients, joint_scores_by_hand,
                                                output_scale, radial_gradient, scale_invariance)
from xscene_lib.experiments.frames import frames_digest, read_frames
from xscene_lib.experiments.ledger import Claim, pick, seed_range, verdict
from xscene_lib.experiments.provenance import PeakMemory, dataset_files, package_versions
from xscene_lib.experiments.registry import ModelSpec, model_names, model_spec, model_specs, register_model
from xscene_lib.experiments.runner import Results, compare, run_click_through, run_experiment
from xscene_lib.experiments.slices import COLD_MAX, cold_flags, domain_candidates, training_counts

__all__ = ['COLD_MAX', 'Claim', 'Finding', 'ListingError', 'ListingModel', 'ModelSpec', 'PeakMemory', 'Results',
           'Sweep', 'affine_cosine_gradients', 'affine_cosine_scores', 'article_init', 'audit', 'bpr_gradients',
           'bpr_loss', 'check_gradients', 'cold_flags', 'compare', 'cosine', 'cosine_gradient',
           'cosine_spread_by_bias', 'dataset_files', 'dimension_sweep', 'domain_candidates', 'encoding_seconds',
           'error_of', 'findings_table', 'frames_digest', 'in_batch_logits', 'in_batch_softmax_gradient',
           'in_batch_softmax_loss', 'in_batch_vector_gradients', 'joint_scores_by_hand', 'model_names', 'model_spec',
           'model_specs', 'output_scale', 'overfitting_summary', 'package_versions', 'parameter_counts', 'pick',
           'radial_gradient', 'read_frames', 'register_model', 'reproduced', 'run_as_printed', 'run_click_through',
           'run_experiment', 'scale_invariance', 'scoring_seconds_per_user', 'seed_range', 'shapes', 'summary',
           'sweep_name', 'tokens', 'trainable_parameters', 'training_counts', 'verdict']
