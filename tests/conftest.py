"""Shared fixtures: real datasets fetched once per test session, never from the origin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xscene_lib.data import loading as datasets
from xscene_lib.data import Dataset

REAL_SOURCES = ("local", "mirror", "fallback")


def mirrors_holding(dirname: str) -> list[Path]:
    """The folders of $XSCENE_MIRROR (relative ones against the current folder) that hold `dirname`/."""
    entries = [e for e in os.environ.get(datasets.MIRROR_ENV, "").split(os.pathsep) if e.strip()]
    return [Path(e).resolve() for e in entries if (Path(e).resolve() / dirname).is_dir()]


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder (raw/ and cache/) shared by every test that needs the real datasets."""
    return tmp_path_factory.mktemp("xscene-data")


@pytest.fixture(scope="session")
def ml100k_data_dir(real_data_dir: Path) -> Path:
    """The shared data folder with ml-100k fetched and cached."""
    datasets.fetch("ml-100k", data_dir=real_data_dir, sources=REAL_SOURCES, verbose=False)
    return real_data_dir


@pytest.fixture(scope="session")
def ml1m(real_data_dir: Path) -> Dataset:
    """ml-1m loaded with its default (age) scenarios."""
    return datasets.load("ml-1m", data_dir=real_data_dir, sources=REAL_SOURCES, verbose=False)


@pytest.fixture(scope="session")
def food_kitchen(real_data_dir: Path) -> Dataset:
    """food-kitchen loaded from a mirror; skipped when no mirror holds it."""
    if not mirrors_holding("food_kitchen"):
        pytest.skip(f"food-kitchen has no offline fallback: set {datasets.MIRROR_ENV} to a folder holding "
                    f"food_kitchen/ (e.g. ../shared/data) to run this test")
    return datasets.load("food-kitchen", data_dir=real_data_dir, sources=REAL_SOURCES, verbose=False)


@pytest.fixture()
def ml100k_mirror(ml100k_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mirror folder holding verified ml-100k atomic files, set as the only $XSCENE_MIRROR."""
    mirror = tmp_path / "mirror"
    (mirror / "ml-100k").mkdir(parents=True)
    for file in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
        (mirror / "ml-100k" / file).write_bytes((ml100k_data_dir / "raw" / "ml-100k" / file).read_bytes())
    monkeypatch.setenv(datasets.MIRROR_ENV, str(mirror))
    return mirror


def save_tiny_bert(folder: Path, words: list[str], seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary of `words`, saved with its tokenizer in `folder`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder
