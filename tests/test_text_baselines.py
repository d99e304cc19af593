"""Text baselines: TF-IDF vectors and a randomly initialised BERT of the packaged model's shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from xscene_lib.text import TextEncoder, locate_model, model_fingerprint
from xscene_lib.text import random_bert, tfidf_vectors

TEXTS = ["red apple pie", "green apple tart", "red cherry pie", "blue whale song", "apple pie recipe",
         "whale watching trip"]


def test_tfidf_shape_norms_and_dtype() -> None:
    vectors = tfidf_vectors(TEXTS, dim=3)
    assert vectors.shape == (6, 3) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_tfidf_keeps_input_order_and_is_deterministic() -> None:
    vectors = tfidf_vectors(TEXTS, dim=3, seed=1)
    np.testing.assert_array_equal(vectors, tfidf_vectors(TEXTS, dim=3, seed=1))
    assert vectors[0] @ vectors[4] > vectors[0] @ vectors[3]  # "apple pie" is nearer "red apple pie" than whales
    assert vectors[3] @ vectors[5] > vectors[3] @ vectors[0]


def test_tfidf_text_without_terms_is_the_zero_vector() -> None:
    vectors = tfidf_vectors([*TEXTS, "!!"], dim=3)
    np.testing.assert_array_equal(vectors[-1], 0.0)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"texts": "one text"}, TypeError, "single string"),
    ({"texts": ["a text", None]}, TypeError, "position 1"),
    ({"texts": ["only one"]}, ValueError, "at least two"),
    ({"texts": TEXTS, "dim": 0}, ValueError, "dim must be"),
    ({"texts": TEXTS, "dim": 50}, ValueError, "choose dim <="),
    ({"texts": TEXTS, "seed": -1}, ValueError, "seed must be"),
])
def test_tfidf_bad_input_says_what_to_do(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        tfidf_vectors(**kwargs)


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_bert(folder=tmp_path_factory.mktemp("models") / "random", seed=3)


def test_random_bert_has_the_packaged_config_and_tokenizer(random_folder: Path) -> None:
    packaged = locate_model("all-MiniLM-L6-v2")[1]
    ignored = {"transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"}
    theirs, ours = (json.loads((folder / "config.json").read_text()) for folder in (packaged, random_folder))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        assert ours[key] == theirs[key]
    assert {k: v for k, v in ours.items() if k not in ignored and k in theirs} == \
        {k: v for k, v in theirs.items() if k not in ignored and k in ours}
    assert (random_folder / "tokenizer.json").read_text() == (packaged / "tokenizer.json").read_text()


def test_random_bert_weights_differ_from_the_packaged_ones(random_folder: Path) -> None:
    packaged = load_file(str(locate_model("all-MiniLM-L6-v2")[1] / "model.safetensors"))
    random = load_file(str(random_folder / "model.safetensors"))
    key = next(k for k in random if k.endswith("word_embeddings.weight"))
    packaged_key = next(k for k in packaged if k.endswith("word_embeddings.weight"))
    assert random[key].shape == packaged[packaged_key].shape
    assert not np.allclose(random[key], packaged[packaged_key])


def test_random_bert_is_reproducible_per_seed(random_folder: Path, tmp_path: Path) -> None:
    again = random_bert(folder=tmp_path / "again", seed=3)
    other = random_bert(folder=tmp_path / "other", seed=4)
    assert model_fingerprint(again) == model_fingerprint(random_folder) != model_fingerprint(other)
    assert random_bert(folder=again, seed=3) == again  # an existing model is reused


def test_random_bert_encodes_with_text_encoder(random_folder: Path, tmp_path: Path) -> None:
    vectors = TextEncoder(random_folder, cache_dir=tmp_path / "cache").encode(TEXTS[:3])
    packaged = TextEncoder(cache_dir=tmp_path / "cache").encode(TEXTS[:3])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors, packaged, atol=1e-2)  # the cache did not hand back the packaged vectors


def test_random_bert_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed must be"):
        random_bert(folder=tmp_path / "x", seed=-1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError, match="remove it"):
        random_bert(folder=tmp_path / "busy")
