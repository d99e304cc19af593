"""Item vectors that are not from a pretrained language model: the baselines a BERT encoder must beat.

- `tfidf_vectors`: TF-IDF of word unigrams and bigrams, reduced to `dim` dimensions by truncated SVD (latent
  semantic analysis) and L2-normalised. It knows the words of the texts and nothing else.
- `random_bert`: a model with exactly the packaged encoder's architecture and tokenizer but randomly
  initialised weights, saved to a folder that `TextEncoder` reads like any other model. Whatever it does
  well comes from the architecture and the tokens; whatever the pretrained model does better comes from
  pretraining.

    vectors = tfidf_vectors(texts, dim=384)               # (n, 384) float32, unit rows, input order
    folder = random_bert(seed=0)                          # BERT of all-MiniLM-L6-v2's shape, random weights
    vectors = TextEncoder(folder).encode(texts)           # (n, 384), cached under the random weights' fingerprint
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xscene_lib.data import loading as datasets
from xscene_lib.data.validation import DataError, DataTypeError, check_int
from xscene_lib.text.encoder import DEFAULT_MODEL, locate_model

RANDOM_MODELS_FOLDER = "models"  # under the data folder's cache/: where random_bert writes its models
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model")  # copied as they are, when present


def tfidf_vectors(texts: Sequence[str] | pd.Series, dim: int = 384, seed: int = 0,
                  ngram_range: tuple[int, int] = (1, 2)) -> np.ndarray:
    """TF-IDF vectors of the texts reduced to `dim` dimensions by truncated SVD, unit rows; shape: (n, dim) float32.

    A text with no word the vectoriser keeps (e.g. only punctuation) gets the zero vector.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    values = _checked_texts(texts)
    check_int(None, "dim", dim, minimum=1)
    check_int(None, "seed", seed, minimum=0)
    weights = TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=True).fit_transform(values)  # (n, vocabulary)
    most = min(weights.shape) - 1  # truncated SVD needs fewer components than texts and words
    if dim > most:
        raise DataError(f"dim={dim} is too large for {weights.shape[0]} texts with {weights.shape[1]} distinct "
                         f"terms; choose dim <= {most}")
    reduced = TruncatedSVD(n_components=dim, random_state=seed).fit_transform(weights)  # (n, dim)
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)  # (n, 1)
    return np.divide(reduced, norms, out=np.zeros_like(reduced), where=norms > 0).astype(np.float32)


def random_bert(like: str | os.PathLike = DEFAULT_MODEL, folder: str | os.PathLike | None = None,
                seed: int = 0) -> Path:
    """A folder holding a randomly initialised model of `like`'s exact configuration and its tokenizer.

    The same `like` and `seed` always give the same weights, so the text cache, which keys vectors by the
    weights' fingerprint, reuses them. An existing folder with weights is returned as it is.
    """
    import transformers

    check_int(None, "seed", seed, minimum=0)
    name, source = locate_model(like)
    target = Path(folder).expanduser() if folder is not None else (
        datasets.default_data_dir() / "cache" / RANDOM_MODELS_FOLDER / f"random-{Path(name).name}-seed{seed}")
    if (target / WEIGHTS_FILE).is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and holds no {WEIGHTS_FILE}; remove it or choose another folder")
    config = transformers.AutoConfig.from_pretrained(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModel.from_config(config)  # initialised as in pretraining, before any step
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model.save_pretrained(staging)
        for name in TOKENIZER_FILES:  # the packaged tokenizer, byte for byte
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars_were_on:
            transformers.utils.logging.enable_progress_bar()
    return target


def _checked_texts(texts: Sequence[str] | pd.Series) -> list[str]:
    """The texts as a list of strings, at least two; DataTypeError or DataError naming what is wrong."""
    if isinstance(texts, (str, bytes)):
        raise DataTypeError("texts must be a list of strings, got a single string")
    values = texts.tolist() if isinstance(texts, (pd.Series, np.ndarray)) else list(texts)
    for position, text in enumerate(values):
        if not isinstance(text, str):
            raise DataTypeError(f"text at position {position} is {text!r} ({type(text).__name__}), not a string")
    if len(values) < 2:
        raise DataError(f"TF-IDF needs at least two texts to weigh terms by, got {len(values)}")
    return values
