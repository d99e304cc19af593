"""Text features: the encoder (pooling, order, batching, cache, errors) on a tiny BERT, PCA and item recipes."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertModel, BertTokenizer

from tests.conftest import save_tiny_bert
from xscene_lib.text import cache as text_cache
from xscene_lib.text import item_texts
from xscene_lib.text.recipes import RECIPES
from xscene_lib.text import normalize, reduce
from xscene_lib.text.pca import PCA
from xscene_lib.text import ModelNotFoundError, TextEncoder
from xscene_lib.text import TextCacheWarning
from xscene_lib.data import DataError

WORDS = ("the a of and movie story toy heat knife kitchen steel chef set tea green organic "
         "comedy drama action night day red blue big small old new").split()
TEXTS = ["toy story", "the big red kitchen knife set", "heat", "old chef and the new tea", "a movie"]


def _save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved with its tokenizer."""
    return save_tiny_bert(folder, WORDS, seed)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT's folder, shared by the session (never modified)."""
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The texts each call to the model received, recorded per call."""
    calls: list[list[str]] = []
    original = TextEncoder._encode_uncached

    def recording(self: TextEncoder, texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return original(self, texts)

    monkeypatch.setattr(TextEncoder, "_encode_uncached", recording)
    return calls


def _encoder(model: Path, **options: object) -> TextEncoder:
    """An encoder of the tiny BERT; one thread, since waking a second one costs more than its layers."""
    return TextEncoder(str(model), **{"cache": False, "device": "cpu", "num_threads": 1, **options})


# --- pooling, order, batching, normalisation -------------------------------------------------


def test_poolings_give_different_vectors_of_the_hidden_size(tiny_bert: Path) -> None:
    vectors = {p: _encoder(tiny_bert, pooling=p).encode(TEXTS) for p in ("mean", "cls", "pooler")}
    for pooled in vectors.values():
        assert pooled.shape == (len(TEXTS), 32) and pooled.dtype == np.float32
    assert not np.allclose(vectors["mean"], vectors["cls"], atol=1e-3)
    assert not np.allclose(vectors["cls"], vectors["pooler"], atol=1e-3)


def test_mean_pooling_averages_the_texts_own_tokens(tiny_bert: Path) -> None:
    short, long = "heat", "the big red kitchen knife set"
    padded = _encoder(tiny_bert, normalize=False).encode([long, short])[1]  # "heat" encoded with the long text
    tokenizer, model = BertTokenizer.from_pretrained(tiny_bert), BertModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        hidden = model(**tokenizer([short], return_tensors="pt")).last_hidden_state[0]  # (T, H), no padding
    np.testing.assert_allclose(padded, hidden.mean(dim=0).numpy(), atol=1e-5)


def test_input_order_and_duplicates_are_kept(tiny_bert: Path) -> None:
    encoder = _encoder(tiny_bert)
    forward = encoder.encode(TEXTS)
    np.testing.assert_allclose(encoder.encode(TEXTS[::-1]), forward[::-1], atol=1e-6)
    np.testing.assert_allclose(encoder.encode([TEXTS[2], TEXTS[0], TEXTS[2]]), forward[[2, 0, 2]], atol=1e-6)


def test_batch_size_does_not_change_the_vectors(tiny_bert: Path) -> None:
    results = [_encoder(tiny_bert, batch_size=size).encode(TEXTS) for size in (1, 2, 64)]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-5)


def test_normalisation_gives_unit_rows(tiny_bert: Path) -> None:
    np.testing.assert_allclose(np.linalg.norm(_encoder(tiny_bert).encode(TEXTS), axis=1), 1.0, atol=1e-5)
    raw = _encoder(tiny_bert, normalize=False).encode(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_int8_quantisation_stays_close_to_float32(tiny_bert: Path) -> None:
    full = _encoder(tiny_bert).encode(TEXTS)
    quantized = _encoder(tiny_bert, quantize=True).encode(TEXTS)
    assert quantized.shape == full.shape and (quantized * full).sum(axis=1).min() > 0.9


def test_thread_count_is_restored_and_progress_shown(tiny_bert: Path, capsys: pytest.CaptureFixture) -> None:
    before = torch.get_num_threads()
    _encoder(tiny_bert, num_threads=before + 1, show_progress=True).encode(TEXTS)
    assert torch.get_num_threads() == before
    assert "encoding texts" in capsys.readouterr().err


# --- the cache -----------------------------------------------------------------------------


def test_cache_hit_miss_and_partial(tiny_bert: Path, tmp_path: Path, encoded: list[list[str]]) -> None:
    first = _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(TEXTS + TEXTS[:1])
    assert encoded == [TEXTS]  # a miss: every distinct text, once
    again = _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(TEXTS)
    assert len(encoded) == 1 and np.array_equal(again, first[:len(TEXTS)])  # a hit: no model call
    mixed = _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(["night and day", TEXTS[1], "green tea"])
    assert encoded[1] == ["night and day", "green tea"]  # partial: only the new texts
    np.testing.assert_allclose(mixed, _encoder(tiny_bert).encode(["night and day", TEXTS[1], "green tea"]),
                               atol=1e-6)


@pytest.mark.parametrize("change", [{"pooling": "cls"}, {"max_length": 16}, {"normalize": False},
                                    {"quantize": True}, {"batch_size": 3}])
def test_a_changed_setting_misses_the_cache(tiny_bert: Path, tmp_path: Path, encoded: list[list[str]],
                                            change: dict[str, object]) -> None:
    _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(TEXTS)
    _encoder(tiny_bert, cache=True, cache_dir=tmp_path, **change).encode(TEXTS)
    assert len(encoded) == 2 and len(list(tmp_path.iterdir())) == 2


def test_changed_weights_miss_the_cache(tmp_path: Path, encoded: list[list[str]]) -> None:
    model = _save_tiny_bert(tmp_path / "model", seed=0)
    before = _encoder(model, cache=True, cache_dir=tmp_path / "cache").encode(TEXTS)
    _save_tiny_bert(model, seed=1)
    after = _encoder(model, cache=True, cache_dir=tmp_path / "cache").encode(TEXTS)
    assert len(encoded) == 2 and not np.allclose(before, after, atol=1e-3)


def _damage_shard(folder: Path) -> None:
    shard = next(folder.glob("shard-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])


def _foreign_settings(folder: Path) -> None:
    settings = json.loads((folder / text_cache.SETTINGS_FILE).read_text())
    (folder / text_cache.SETTINGS_FILE).write_text(json.dumps({**settings, "pooling": "cls"}))


def _wrong_dim(folder: Path) -> None:
    manifest = json.loads((folder / text_cache.MANIFEST).read_text())
    (folder / text_cache.MANIFEST).write_text(json.dumps({**manifest, "dim": 16}))


def _wrong_dtype(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = json.loads((folder / text_cache.MANIFEST).read_text())
    shard = folder / manifest["shards"][0]["file"]
    table = pq.read_table(shard)
    values = table.column("vector").combine_chunks().flatten().cast(pa.float64())
    pq.write_table(table.set_column(1, "vector", pa.FixedSizeListArray.from_arrays(values, 32)), shard)
    manifest["shards"][0]["sha256"] = text_cache.sha256_file(shard)
    (folder / text_cache.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, reason", [(_damage_shard, "SHA-256 mismatch"),
                                            (lambda f: next(f.glob("shard-*")).unlink(), "missing"),
                                            (_foreign_settings, "other settings"),
                                            (_wrong_dim, "expected 16 float32"),
                                            (_wrong_dtype, "expected 32 float32")])
def test_a_corrupt_or_foreign_cache_is_reported_and_rebuilt(tiny_bert: Path, tmp_path: Path,
                                                             encoded: list[list[str]], damage, reason: str) -> None:
    expected = _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(TEXTS)
    damage(next(tmp_path.iterdir()))
    with pytest.warns(TextCacheWarning, match=reason) as caught:
        rebuilt = _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(TEXTS)
    assert len(caught) == 1 and len(encoded) == 2
    np.testing.assert_allclose(rebuilt, expected, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(TEXTS)  # the rebuilt cache verifies
    assert len(encoded) == 2


def test_many_small_writes_are_merged_into_one_shard(tiny_bert: Path, tmp_path: Path) -> None:
    texts = [f"{a} {b}" for a in WORDS[:6] for b in WORDS[6:9]][:text_cache.MAX_SHARDS + 1]
    encoder = _encoder(tiny_bert, cache=True, cache_dir=tmp_path)  # the cache is reopened on every call
    for text in texts:
        encoder.encode([text])
    folder = next(tmp_path.iterdir())
    assert len(list(folder.glob("shard-*"))) == 1
    np.testing.assert_allclose(_encoder(tiny_bert, cache=True, cache_dir=tmp_path).encode(texts),
                               _encoder(tiny_bert).encode(texts), atol=1e-6)


# --- errors --------------------------------------------------------------------------------


def test_over_long_texts_are_truncated_with_one_warning(tiny_bert: Path) -> None:
    with pytest.warns(UserWarning, match="2 of 3 texts are longer than max_length=8") as caught:
        _encoder(tiny_bert, max_length=8).encode(["the " * 20, "heat", "toy " * 10])
    assert len(caught) == 1


@pytest.mark.parametrize("texts, error, message", [
    (["heat", None], TypeError, "position 1 is None"),
    (["heat", float("nan")], TypeError, "position 1 is nan"),
    (["heat", 3], TypeError, "position 1 is 3"),
    (["heat", ""], ValueError, "position 1 is empty"),
    (["heat", " \t"], ValueError, "position 1 is empty"),
    (np.array([1.0, 2.0]), TypeError, "dtype float64"),
    (pd.Series([1, 2]), TypeError, "dtype int64"),
    ("toy story", TypeError, "single string"),
])
def test_bad_inputs_name_the_problem(tiny_bert: Path, texts: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _encoder(tiny_bert).encode(texts)


def test_empty_input_gives_zero_rows(tiny_bert: Path) -> None:
    assert _encoder(tiny_bert).encode([]).shape == (0, 32)


def test_encode_items_gives_the_vectors_indexed_by_item_id(tiny_bert: Path) -> None:
    encoder = _encoder(tiny_bert)
    items = pd.DataFrame({"item_id": [7, 3, 5], "text": TEXTS[:3], "title": TEXTS[2::-1]})
    vectors = encoder.encode_items(items)
    assert list(vectors.index) == [7, 3, 5] and vectors.index.name == "item_id"
    assert vectors.shape == (3, 32) and (vectors.dtypes == np.float32).all()
    np.testing.assert_allclose(vectors.to_numpy(), encoder.encode(TEXTS[:3]), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_items(items, "title").loc[7], vectors.loc[5], atol=1e-6)
    with pytest.raises(DataError, match=r"items lacks column\(s\) \['plot'\]"):
        encoder.encode_items(items, column="plot")


def test_unknown_models_say_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"local folder .*nowhere.*hub.*TextEncoder\(\)"):
        TextEncoder(str(tmp_path / "nowhere")).encode(["heat"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        TextEncoder(str(tmp_path / "empty")).encode(["heat"])


def test_bad_settings_are_refused(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="pooling='max'"):
        _encoder(tiny_bert, pooling="max").encode(TEXTS)
    with pytest.raises(ValueError, match="batch_size"):
        _encoder(tiny_bert, batch_size=0).encode(TEXTS)
    with pytest.raises(ValueError, match="exceeds the 128 positions"):
        _encoder(tiny_bert, max_length=200).encode(TEXTS)


def test_pooler_pooling_refuses_an_untrained_pooler(tiny_bert: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_bert, tmp_path / "no-pooler")
    model = BertModel.from_pretrained(tiny_bert, add_pooling_layer=False)
    model.save_pretrained(tmp_path / "no-pooler")
    assert _encoder(tmp_path / "no-pooler", pooling="mean").encode(TEXTS).shape == (len(TEXTS), 32)
    with pytest.raises(ValueError, match="no trained pooler"):
        _encoder(tmp_path / "no-pooler", pooling="pooler").encode(TEXTS)


def test_a_texts_vector_does_not_depend_on_the_texts_encoded_with_it() -> None:
    words = "stainless steel chef knife kitchen set organic green tea cast iron pan wooden spoon".split()
    rng = np.random.default_rng(3)
    texts = list(dict.fromkeys(" ".join(rng.choice(words, size=rng.integers(1, 25))) for _ in range(160)))
    encoder = TextEncoder(cache=False, num_threads=1, show_progress=False)
    everything = encoder.encode(texts)  # (n, 384)
    for _ in range(3):  # other batchmates, other order: the same bits
        some = rng.permutation(len(texts))[:rng.integers(10, len(texts))]
        assert encoder.encode([texts[i] for i in some]).tobytes() == everything[some].tobytes()


def test_packaged_model_puts_related_products_closer() -> None:
    knife, knives, tea = TextEncoder(cache=False, num_threads=1).encode(
        ["stainless steel chef knife", "kitchen knife set", "organic green tea"])
    assert knife.shape == (384,) and knife @ knives > knife @ tea + 0.3


# --- PCA and normalisation ---------------------------------------------------------------------


def test_pca_known_answer_and_reproducible_transform() -> None:
    points = np.array([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]]) + [5.0, 1.0]
    pca = PCA.fit(points, 2)
    np.testing.assert_allclose(pca.explained_variance, [8 / 3, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(pca.explained_variance_ratio, [0.8, 0.2], atol=1e-6)
    np.testing.assert_allclose(pca.components, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(pca.transform(points[:1]), [[2.0, 0.0]], atol=1e-6)
    reduced, fitted = reduce(points, 1)
    np.testing.assert_allclose(reduced, [[1.0], [0.0], [-1.0], [0.0]], atol=1e-6)  # (4, 1), unit or zero rows
    np.testing.assert_array_equal(fitted.transform(points), fitted.transform(points))


def test_pca_refuses_more_dimensions_than_the_data_has() -> None:
    with pytest.raises(ValueError, match="from 1 to 3"):
        reduce(np.ones((3, 5)), 4)
    with pytest.raises(ValueError, match="2-D"):
        reduce(np.ones(5), 1)


def test_normalize_gives_unit_rows_and_keeps_zero_rows() -> None:
    np.testing.assert_allclose(normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


# --- item text recipes ---------------------------------------------------------------------


@pytest.fixture()
def movies() -> pd.DataFrame:
    return pd.DataFrame({"title": ["Toy Story", "Heat"], "year": pd.array([1995, None], dtype="Int64"),
                         "genres": ["Animation|Comedy", ""]}, index=[10, 20])


@pytest.mark.parametrize("recipe, expected", [
    ("title", ["Toy Story", "Heat"]),
    ("title_year", ["Toy Story (1995)", "Heat"]),
    ("title_year_genres", ["Toy Story (1995). Genres: Animation, Comedy.", "Heat"]),
    ("default", ["Toy Story (1995). Genres: Animation, Comedy.", "Heat"]),
])
def test_movie_recipes(movies: pd.DataFrame, recipe: str, expected: list[str]) -> None:
    texts = item_texts(movies, recipe)
    assert texts.tolist() == expected and texts.index.tolist() == [10, 20]


def test_products_default_to_their_title() -> None:
    products = pd.DataFrame({"title": ["Chef knife", "Green tea"], "domain": ["kitchen", "food"]})
    assert item_texts(products).tolist() == ["Chef knife", "Green tea"]


def test_recipe_errors_list_the_choices(movies: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown recipe 'plot'.*" + ".*".join(RECIPES)):
        item_texts(movies, "plot")
    with pytest.raises(ValueError, match=r"needs column\(s\) \['genres'\].*\['title', 'year'\]"):
        item_texts(movies.drop(columns="genres"), "title_year_genres")


def test_a_moved_model_folder_still_hits_the_cache(tiny_bert: Path, tmp_path: Path,
                                                  encoded: list[list[str]]) -> None:
    moved = tmp_path / "elsewhere" / tiny_bert.name
    shutil.copytree(tiny_bert, moved)
    _encoder(tiny_bert, cache=True, cache_dir=tmp_path / "cache").encode(TEXTS)
    _encoder(moved, cache=True, cache_dir=tmp_path / "cache").encode(TEXTS)
    assert len(encoded) == 1  # identity is the folder's name and content, not its path


def test_model_size_of_the_packaged_encoder() -> None:
    from xscene_lib.text import model_size

    size = model_size()
    assert size["layers"] == 6 and size["hidden_size"] == 384
    assert 20_000_000 < size["parameters"] < 25_000_000  # all-MiniLM-L6-v2: about 22.7 M


def test_a_killed_writers_leftovers_are_removed_by_the_next_reader(tmp_path: Path) -> None:
    cache = text_cache.VectorCache(tmp_path, {"model": "unit"})
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)  # (3, d=2)
    cache.add(["a", "b", "c"], vectors)
    listed = sorted(p.name for p in cache.folder.iterdir())
    (cache.folder / ".shard-0123456789abcdef.parquet.x1y2z3").write_bytes(b"half a shard")  # a killed write
    (cache.folder / "shard-fedcba9876543210.parquet").write_bytes(b"retired")  # a killed merge's old shard
    reader = text_cache.VectorCache(tmp_path, {"model": "unit"})
    found, cached = reader.lookup(["c", "a", "z"])
    assert found.tolist() == [True, True, False] and cached.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert sorted(p.name for p in cache.folder.iterdir()) == listed  # only settings, manifest and its shard
