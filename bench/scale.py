"""Benchmark: top-10 retrieval from FAISS indexes (exact, IVF, HNSW) against full-ranking brute force, for
catalogues of 10k, 100k and 1M item vectors, in one run.

Item vectors: the 3,883 real ml-1m item text vectors (xscene_lib.text.encoder.TextEncoder, 384 d, unit length) come
first in every catalogue; the rest are DRAWN: a Gaussian with the real vectors' mean and covariance, each draw
scaled to unit length like the real ones. Queries: users' mean text vector over the items they rated
(1,000 ml-1m users drawn with a seed), unit length. Score: inner product.

For each catalogue size:

- brute force: scores of every item (queries @ items.T), then a full sort of each row, as
  Recommender.recommend ranks, in chunks of queries;
- exact / ivf / hnsw: xscene_lib.models.retrieval.ItemIndex at its default build settings (HNSW's can be changed:
  --hnsw-m, --ef-construction): build seconds, size of the index as FAISS writes it, ms per query for one
  batch search of all queries, and recall@10 against exact; the IVF index is searched at several nprobe,
  the HNSW index at several efSearch (--nprobe, --ef-search), without rebuilding.

The real catalogue alone (3,883 items) is measured first. Large catalogues are searched with fewer queries
(--work: items x queries), the same queries for every method of a size. HNSW is built up to --hnsw-max-items
only: its build takes minutes at 100k items on 2 busy cores.

The speed-up is brute force's ms per query over the index's, both measured in this run. The last line gives,
per size, each index's speed-up and the approximate indexes' recall@10.

    python bench/scale.py [--sizes 10000 100000 1000000] [--queries 1000] [--kinds exact ivf hnsw]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import scipy.sparse as sp

from xscene_lib.data import loading as datasets
from xscene_lib.models.fitting import history_means
from xscene_lib.models import ItemIndex, recall_at_k
from xscene_lib.data import write_atomically
from xscene_lib.text import TextEncoder

SOURCES = ("local", "mirror", "fallback")
K = 10
DRAW_CHUNK = 50_000  # drawn vectors made at once
BRUTE_CHUNK = 20_000_000  # scores held at once by the brute force (80 MB of float32)


def unit_rows(values: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1. shape: (n, d) -> (n, d)."""
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def real_vectors(n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ml-1m item text vectors and n_queries users' mean item vector. shape: (n_items, d), (n_queries, d)."""
    dataset = datasets.load("ml-1m", sources=SOURCES, verbose=False)
    items = TextEncoder(show_progress=False).encode(dataset.items["text"].tolist()).astype(np.float32)
    item_row = pd.Index(dataset.items["item_id"]).get_indexer(dataset.interactions["item_id"])
    user_ids, user_row = np.unique(dataset.interactions["user_id"].to_numpy(), return_inverse=True)
    seen = sp.csr_matrix((np.ones(len(item_row), np.float32), (user_row, item_row)),
                         shape=(len(user_ids), len(items)))
    seen.data[:] = 1.0
    chosen = np.sort(np.random.default_rng(seed).choice(len(user_ids), size=n_queries, replace=False))
    return items, unit_rows(history_means(seen[chosen], items)).astype(np.float32)


def catalogue(real: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The real vectors, then draws from a Gaussian with their mean and covariance, unit length. shape: (size, d)."""
    mean = real.mean(axis=0, dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(real.T.astype(np.float64)))
    root = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))  # root @ root.T = covariance
    out = np.empty((size, real.shape[1]), np.float32)
    out[:min(size, len(real))] = real[:size]
    rng = np.random.default_rng(seed)
    for start in range(len(real), size, DRAW_CHUNK):
        stop = min(size, start + DRAW_CHUNK)
        out[start:stop] = unit_rows(mean + rng.standard_normal((stop - start, real.shape[1])) @ root.T)
    return out


def brute_force(items: np.ndarray, queries: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds, and the top K of each query by scoring every item and sorting each row fully. shape: (B, K)."""
    rows = max(1, BRUTE_CHUNK // len(items))
    started, top = time.perf_counter(), []
    for start in range(0, len(queries), rows):
        scores = queries[start:start + rows] @ items.T  # (rows, n_items)
        top.append(np.argsort(-scores, axis=1, kind="stable")[:, :K])
    return time.perf_counter() - started, np.concatenate(top)


def index_mib(index: ItemIndex) -> float:
    """Size of the FAISS index as FAISS writes it (vectors, graph or lists), MiB; nothing is stored."""
    written = [0]

    def count(chunk: bytes) -> int:
        written[0] += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index.index_, writer)
    del writer  # flushes
    return written[0] / 2**20


def measure(items: np.ndarray, queries: np.ndarray, kinds: list[str], sweeps: dict[str, list[int]],
            build: dict[str, dict[str, int]]) -> list[dict]:
    """One catalogue: brute force, then every index kind built once and searched at each setting of its sweep."""
    seconds, brute_top = brute_force(items, queries)
    rows = [{"method": "brute force (full sort)", "build_s": np.nan, "mib": items.nbytes / 2**20,
             "ms_per_query": 1000 * seconds / len(queries), "recall": np.nan, "setting": "numpy matmul + argsort"}]
    exact_top = None
    for kind in kinds:
        gc.collect()
        started = time.perf_counter()
        index = ItemIndex(kind, **build.get(kind, {})).fit(items)
        build_s, mib = time.perf_counter() - started, index_mib(index)
        parameter = {"exact": None, "ivf": "nprobe", "hnsw": "ef_search"}[kind]
        values = sweeps[kind] if parameter else [None]
        if kind == "ivf":  # nprobe beyond nlist searches every cell, as nprobe = nlist does
            values = sorted({min(value, index.index_.nlist) for value in values})
        for value in values:
            if parameter:
                setattr(index, parameter, value)
            started = time.perf_counter()
            _, top = index.search(queries, K)
            search_s = time.perf_counter() - started
            if kind == "exact":
                exact_top, recall = top, recall_at_k(top, brute_top)  # exact must find what brute force finds
            else:
                recall = recall_at_k(top, exact_top) if exact_top is not None else np.nan
            setting = "IndexFlatIP"
            if kind == "ivf":
                setting = f"IVFFlat nlist={index.index_.nlist} nprobe={value}"
            elif kind == "hnsw":
                setting = f"HNSWFlat M={index.m} efConstruction={index.ef_construction} efSearch={value}"
            rows.append({"method": kind, "build_s": build_s, "mib": mib, "ms_per_query": 1000 * search_s / len(queries),
                         "recall": recall, "setting": setting, "value": value})
        del index
    for row in rows:
        row["speedup"] = rows[0]["ms_per_query"] / row["ms_per_query"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--kinds", nargs="+", choices=("exact", "ivf", "hnsw"), default=["exact", "ivf", "hnsw"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 16, 64, 256], help="IVF cells searched")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256], help="HNSW candidates")
    parser.add_argument("--hnsw-m", type=int, default=ItemIndex().m, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=ItemIndex().ef_construction, help="HNSW build "
                        "candidates")
    parser.add_argument("--hnsw-max-items", type=int, default=100_000, help="largest catalogue given an HNSW "
                        "index (its build is the slowest step: minutes at 100k items on 2 busy cores)")
    parser.add_argument("--work", type=float, default=2e8, help="items x queries per method and catalogue: "
                        "large catalogues are searched with fewer queries (all of them up to this)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("results/scale.csv"), help="the table as CSV, with the "
                        "load average and versions in each row (the book's Scaling up chapter plots it)")
    arguments = parser.parse_args()
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]

    real, queries = real_vectors(arguments.queries, arguments.seed)
    items = catalogue(real, max(arguments.sizes), arguments.seed)
    sweeps = {"ivf": arguments.nprobe, "hnsw": arguments.ef_search}
    build = {"hnsw": {"m": arguments.hnsw_m, "ef_construction": arguments.ef_construction}}
    print(f"item vectors: the {len(real):,} real ml-1m item text vectors ({real.shape[1]} d, TextEncoder) first, "
          f"then vectors DRAWN from a Gaussian with their mean and covariance, scaled to unit length; queries: "
          f"{len(queries):,} ml-1m users' mean item text vector, unit length; inner product, top {K}")
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {os.cpu_count()} cores; "
          f"load average at the start {load_at_start:.1f}")
    print(f"\n{'items':>9} {'real':>6} {'queries':>7} {'method':24} {'build s':>8} {'MiB':>7} {'ms/query':>9} "
          f"{'speed-up':>9} {'recall@10':>9}  setting")
    figures, table = [], []
    for size in [len(real)] + sorted(arguments.sizes):
        n_queries = int(min(len(queries), max(10, arguments.work // size)))
        kinds = [kind for kind in arguments.kinds if kind != "hnsw" or size <= arguments.hnsw_max_items]
        rows = measure(items[:size], queries[:n_queries], kinds, sweeps, build)
        table += [{"items": size, "real_items": min(size, len(real)), "queries": n_queries, **row} for row in rows]
        for row in rows:
            recall = "" if np.isnan(row["recall"]) else f"{row['recall']:.4f}"
            build_text = "" if np.isnan(row["build_s"]) else f"{row['build_s']:.2f}"
            print(f"{size:>9,} {min(size, len(real)):>6,} {n_queries:>7,} {row['method']:24} {build_text:>8} "
                  f"{row['mib']:>7.0f} {row['ms_per_query']:>9.3f} {row['speedup']:>8.1f}x {recall:>9}  "
                  f"{row['setting']}", flush=True)
            label = ("real" if size == len(real) else f"{size / 1000:g}k") + f"_{row['method']}" \
                + ("" if row.get("value") is None else f"{row['value']}")
            if row["method"] != "brute force (full sort)":
                figures.append(f"{label}_speedup={row['speedup']:.3g}")
            if row["method"] in ("ivf", "hnsw"):
                figures.append(f"{label}_recall10={row['recall']:.3f}")
        if "hnsw" in arguments.kinds and "hnsw" not in kinds:
            print(f"{size:>9,} {'':>6} {'':>7} {'hnsw':24} not built: more than --hnsw-max-items "
                  f"{arguments.hnsw_max_items:,}", flush=True)
    print("(speed-up: brute force's ms/query over the method's, same run, same queries; recall@10: exact's row "
          "against brute force's top 10, the others against exact's; MiB: the index as FAISS writes it, for brute "
          "force the item matrix; ivf/hnsw: built once, searched at each nprobe/efSearch)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}; total {time.perf_counter() - started:.0f} s")
    record = pd.DataFrame(table).assign(load_start=load_at_start, load_end=os.getloadavg()[0], cores=os.cpu_count(),
                                        faiss=faiss.__version__, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(arguments.output, lambda path: record.to_csv(path, index=False))
    print(f"table written to {arguments.output}")
    print("scale: " + " ".join(figures))


if __name__ == "__main__":
    main()
