"""The article's step 2 of feature extraction: reduce text vectors with PCA (fitted once, applied to
all) and L2-normalise them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xscene_lib.data.validation import DataError, check_int


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero); shape: (n, d) float32."""
    vectors = _checked_matrix(vectors, "vectors")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (n, 1)
    return (vectors / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class PCA:
    """A fitted principal component projection: subtract the mean, project on the top components."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows, largest variance first
    explained_variance: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,) share of the total variance

    @classmethod
    def fit(cls, vectors: np.ndarray, dim: int) -> PCA:
        """Fit the top `dim` components of the vectors; shape: vectors (n, D)."""
        data = _checked_matrix(vectors, "vectors").astype(np.float64)  # (n, D)
        limit = min(data.shape)
        check_int(None, "dim", dim, minimum=1, maximum=limit,
                  hint=f"{limit} is the smaller of {data.shape[0]:,} vectors and {data.shape[1]:,} features")
        mean = data.mean(axis=0)  # (D,)
        _, singular, rows = np.linalg.svd(data - mean, full_matrices=False)  # rows: (min(n, D), D)
        signs = np.sign(rows[np.arange(len(rows)), np.abs(rows).argmax(axis=1)])  # largest entry made positive
        variance = singular**2 / max(data.shape[0] - 1, 1)
        total = variance.sum()
        ratio = variance / total if total > 0 else np.zeros_like(variance)
        return cls(mean, rows[:dim] * signs[:dim, None], variance[:dim], ratio[:dim])

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Project vectors on the fitted components; shape: (n, D) -> (n, k) float32."""
        data = _checked_matrix(vectors, "vectors")
        if data.shape[1] != self.mean.shape[0]:
            raise DataError(f"vectors have {data.shape[1]} features, the PCA was fitted on {self.mean.shape[0]}")
        return ((data.astype(np.float64) - self.mean) @ self.components.T).astype(np.float32)


def reduce(vectors: np.ndarray, dim: int, renormalize: bool = True) -> tuple[np.ndarray, PCA]:
    """PCA fitted once on all vectors and applied to all, then unit rows; shape: (n, D) -> (n, dim)."""
    pca = PCA.fit(vectors, dim)
    reduced = pca.transform(vectors)
    return (normalize(reduced) if renormalize else reduced), pca


def _checked_matrix(vectors: np.ndarray, what: str) -> np.ndarray:
    """The vectors as a finite 2-D float32 array; DataError otherwise."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.dtype.kind not in "fiu" or array.shape[0] == 0:
        raise DataError(f"{what} must be a non-empty 2-D numeric array (n, d), got shape {array.shape} "
                        f"of dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise DataError(f"{what} hold NaN or infinite values; clean them first")
    return array.astype(np.float32, copy=False)
