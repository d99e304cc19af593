"""Tie-aware ranking: the rank of a target item among the items competing with it, ties counted half.

Every rank in the book comes from here: `metrics.target_ranks` (full ranking), `metrics.sampled_ranks` (the
target against sampled negatives) and `models.scenario_weights.blended_ranks` (full ranking of a blend).
The rivals of a target are the other items that compete with it, and

    rank = 1 + (rivals scored strictly higher) + (rivals scored equally) / 2,

the target's expected position when ties are broken at random, so a model that scores everything alike gets
no credit for luck. In a full ranking the rivals are every item of the row except the target and the row's
excluded items (the user's own items); the target is never excluded from its own ranking. A NaN score
compares as neither higher nor equal; callers that must not meet NaN check for it first.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xscene_lib.data.validation import DataError


def tie_aware_ranks(scores: np.ndarray, targets: np.ndarray,
                    excluded: sp.spmatrix | sp.sparray | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rank of each row's target among the row's items not excluded, and how many items compete.

    shape: scores (B, n_items); targets (B,) column indices; excluded (B, n_items), sparse or boolean, nonzero =
    left out; returns ranks (B,) float64 and n_candidates (B,) int64, the target counted among the candidates.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets) if np.size(targets) else np.zeros(0, dtype=np.intp)
    _check_targets(scores, targets)
    rows = np.arange(len(scores))
    target_scores = scores[rows, targets]  # (B,)
    higher = np.count_nonzero(scores > target_scores[:, None], axis=1)  # (B,)
    tied = np.count_nonzero(scores == target_scores[:, None], axis=1)  # (B,), the target itself included
    tied -= target_scores == target_scores  # ... unless NaN, which equals nothing
    n_candidates = np.full(len(scores), scores.shape[1], dtype=np.int64)
    if excluded is not None:
        out_rows, out_columns = _excluded_pairs(excluded, targets, scores.shape)  # (n_out,) each
        out_scores, their_targets = scores[out_rows, out_columns], target_scores[out_rows]  # (n_out,) each
        higher -= np.bincount(out_rows[out_scores > their_targets], minlength=len(scores))
        tied -= np.bincount(out_rows[out_scores == their_targets], minlength=len(scores))
        n_candidates -= np.bincount(out_rows, minlength=len(scores))
    return _tie_aware(higher, tied), n_candidates


def rank_among(target_scores: np.ndarray, rival_scores: np.ndarray) -> np.ndarray:
    """The rank of each target among its rivals alone, e.g. its sampled negatives.

    shape: target_scores (B,); rival_scores (B, n_rivals); returns (B,) float64, between 1 and n_rivals + 1.
    """
    target_scores, rival_scores = np.asarray(target_scores), np.asarray(rival_scores)
    if rival_scores.ndim != 2 or target_scores.shape != rival_scores.shape[:1]:
        raise DataError(f"rank_among needs target_scores of shape (B,) and rival_scores of shape (B, n_rivals); "
                        f"got {target_scores.shape} and {rival_scores.shape}")
    target = target_scores[:, None]  # (B, 1)
    return _tie_aware(np.count_nonzero(rival_scores > target, axis=1), np.count_nonzero(rival_scores == target, axis=1))


def _tie_aware(higher: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """The rank from the counts of rivals scored higher and scored equally. shape: (B,) each."""
    return 1.0 + higher + tied / 2.0


def _check_targets(scores: np.ndarray, targets: np.ndarray) -> None:
    if scores.ndim != 2 or targets.shape != scores.shape[:1]:
        raise DataError(f"tie_aware_ranks needs scores of shape (B, n_items) and one target per row, shape (B,); "
                        f"got {scores.shape} and {targets.shape}")
    if targets.size and (not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0
                         or targets.max() >= scores.shape[1]):
        raise DataError(f"targets must be column indices between 0 and {scores.shape[1] - 1} (item positions, "
                        f"not item ids)")


def _excluded_pairs(excluded: sp.spmatrix | sp.sparray | np.ndarray, targets: np.ndarray,
                    shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) of each excluded item, distinct, the row's target left in. shape: (n_out,) each."""
    if tuple(excluded.shape) != tuple(shape):
        raise DataError(f"excluded must have the shape of scores, {tuple(shape)}, got {tuple(excluded.shape)}")
    if sp.issparse(excluded):
        pairs = sp.coo_matrix(excluded, copy=True)
        pairs.sum_duplicates()
        pairs.eliminate_zeros()
        out_rows, out_columns = pairs.row.astype(np.intp), pairs.col.astype(np.intp)
    else:
        out_rows, out_columns = np.nonzero(np.asarray(excluded))
    keep = out_columns != targets[out_rows]  # the target always competes
    return out_rows[keep], out_columns[keep]
