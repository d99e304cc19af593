"""Sharded text encoding: N processes started by torchrun each encode a contiguous share of the texts and write
a part; the merged cache equals the one a single process builds, bit for bit; clear errors for bad parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import save_tiny_bert
from xscene_lib.training import encode_in_shards
from xscene_lib.training import DistributedError, share
from xscene_lib.text import TextEncoder
from xscene_lib.text import PartsError, merge_parts, part_name, text_hash, write_part
from xscene_lib.text.cache import MANIFEST

WORDS = "red blue green small big old new toy story knife set tea chef night day movie".split()
JOB_TIMEOUT_S = 120  # the two-process job takes seconds; a hung one fails the test instead of blocking it


def _texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 1 to 9 words (so batches differ in padding), with one repeated text."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 10))) for _ in range(n)]
    return texts + texts[:1]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved with its tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), WORDS)


def _encoder(model: Path, cache_dir: Path) -> TextEncoder:
    return TextEncoder(str(model), batch_size=8, device="cpu", num_threads=1, cache_dir=cache_dir,
                       show_progress=False)


def _cache_contents(encoder: TextEncoder) -> tuple[list[str], np.ndarray, list[str]]:
    """The hashes and vectors of the cache in stored order, and the SHA-256 of each shard file."""
    cache = encoder.vector_cache()
    found, vectors = cache.lookup(list(cache._loaded()))
    assert found.all()
    manifest = json.loads((cache.folder / MANIFEST).read_text())
    return list(cache._loaded()), vectors, [shard["sha256"] for shard in manifest["shards"]]


def test_shares_are_contiguous_disjoint_and_cover_everything() -> None:
    for n, world in ((10, 3), (2, 3), (0, 2), (7, 1)):
        parts = [share(n, rank, world) for rank in range(world)]
        assert [i for part in parts for i in range(n)[part]] == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
    with pytest.raises(DistributedError, match="outside"):
        share(5, 2, 2)


def test_two_processes_build_the_cache_one_process_builds(tiny_bert: Path, tmp_path: Path) -> None:
    texts = _texts(45)  # 43 distinct texts in batches of 8: 6 batches, 3 per process
    single = _encoder(tiny_bert, tmp_path / "single")
    expected = single.encode(texts)
    sharded = _encoder(tiny_bert, tmp_path / "sharded")
    assert encode_in_shards(sharded, texts, 2, timeout_s=JOB_TIMEOUT_S) == len(set(texts)) == 43
    hashes, vectors, files = _cache_contents(sharded)
    single_hashes, single_vectors, single_files = _cache_contents(single)
    assert hashes == single_hashes  # the same texts, in the same order
    assert np.array_equal(vectors, single_vectors)  # identical vectors, bit for bit
    assert files == single_files  # even the shard files are the same bytes
    assert not list((tmp_path / "sharded").glob(".*parts"))  # the parts are gone once merged
    assert np.array_equal(sharded.encode(texts), expected)  # now served from the cache
    assert encode_in_shards(sharded, texts, 2, timeout_s=JOB_TIMEOUT_S) == 0  # nothing left to encode


def _parts(tiny_bert: Path, tmp_path: Path, n_shards: int, written: list[int]) -> tuple[TextEncoder, list[str]]:
    """Write the parts `written` of an n_shards job over six texts by hand; return the encoder and hashes."""
    encoder = _encoder(tiny_bert, tmp_path / "cache")
    uncached = _encoder(tiny_bert, tmp_path / "cache")
    uncached.cache = False
    texts = _texts(6)[:6]
    hashes = [text_hash(t) for t in texts]
    for shard in written:
        rows = share(len(texts), shard, n_shards)
        write_part(tmp_path / "parts", shard, n_shards, encoder.vector_cache(), hashes[rows],
                   uncached.encode(texts[rows]))
    return encoder, hashes


def test_a_missing_part_is_named(tiny_bert: Path, tmp_path: Path) -> None:
    encoder, hashes = _parts(tiny_bert, tmp_path, 3, written=[0, 2])
    with pytest.raises(PartsError, match=r"part\(s\) \[1\] of 3 are missing"):
        merge_parts(tmp_path / "parts", 3, encoder.vector_cache(), hashes)
    assert not encoder.vector_cache().folder.exists()  # nothing half-merged


def test_parts_of_another_world_size_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    encoder, hashes = _parts(tiny_bert, tmp_path, 3, written=[0, 1, 2])
    with pytest.raises(PartsError, match="job of 3 processes, not 2"):
        merge_parts(tmp_path / "parts", 2, encoder.vector_cache(), hashes)


def test_all_parts_merge_in_the_order_asked_for(tiny_bert: Path, tmp_path: Path) -> None:
    encoder, hashes = _parts(tiny_bert, tmp_path, 3, written=[0, 1, 2])
    merge_parts(tmp_path / "parts", 3, encoder.vector_cache(), hashes[::-1])
    assert list(encoder.vector_cache()._loaded()) == hashes[::-1]
    with pytest.raises(PartsError, match="lack 1 of the 7"):
        merge_parts(tmp_path / "parts", 3, encoder.vector_cache(), hashes + [text_hash("not encoded")])


def test_a_worker_started_with_the_wrong_world_size_fails_clearly(tiny_bert: Path, tmp_path: Path) -> None:
    encoder = _encoder(tiny_bert, tmp_path / "cache")
    job = tmp_path / "parts" / "job.json"
    job.parent.mkdir()
    job.write_text(json.dumps({"encoder": {"model": str(tiny_bert), "device": "cpu"}, "shards": [["toy"]] * 3}))
    from xscene_lib.training import torchrun

    with pytest.raises(DistributedError, match="2 processes were started for a job of 3 shards"):
        torchrun(["-m", "xscene_lib.training.sharded_encoding", str(job)], 2, timeout_s=JOB_TIMEOUT_S)
    assert not list(job.parent.glob("part-*")) and encoder is not None


def test_bad_shard_counts_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    from xscene_lib.data import DataError

    with pytest.raises(DataError, match="positive integer"):
        encode_in_shards(_encoder(tiny_bert, tmp_path), ["toy"], 0)


def test_part_names_sort_by_shard() -> None:
    assert sorted(part_name(i, 12) for i in (10, 2, 0)) == [part_name(0, 12), part_name(2, 12), part_name(10, 12)]
