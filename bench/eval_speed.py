"""Evaluation speed on this machine: full ranking of ml-1m, and the wall time of the ml-100k experiment.

(a) Full-ranking evaluation (`target_ranks` + `ranking_metrics`) of every ml-1m test row (age scenarios)
    against all items, with a BPR-MF fitted for one epoch. Target: under 2 s. For reference, the same ranks
    are computed by a naive loop, one user at a time, over the first 200 test users; its time is scaled to
    all users to give the speed-up, and its ranks are checked against the vectorised ones.
(b) The wall-clock seconds of the ml-100k experiment (all models, 3 seeds), read from
    results/ml-100k-age/manifest.json when that run exists. Target: under 600 s.

    python bench/eval_speed.py

The last line gives each measured figure as a ratio to its target (below 1 meets it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xscene_lib.data import loading as datasets
from xscene_lib.models import BPRMF
from xscene_lib.evaluation import ranking_metrics, target_ranks
from xscene_lib.models import Recommender

SOURCES = ("local", "mirror", "fallback")
REFERENCE_USERS = 200  # users ranked by the naive loop
EVAL_TARGET_S = 2.0
EXPERIMENT_TARGET_S = 600.0
MANIFEST = Path(__file__).resolve().parent.parent / "results" / "ml-100k-age" / "manifest.json"


def naive_ranks(model: Recommender, seen: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Ranks of the test rows computed one user at a time, ties counted half, the user's seen items left out."""
    item_position = {item: position for position, item in enumerate(model.item_ids_)}
    seen_by_user = seen.groupby("user_id")["item_id"].agg(set).to_dict()
    ranks = np.empty(len(test))
    for user, rows in test.groupby("user_id").groups.items():
        for row in rows:
            scenario, target = test.at[row, "scenario"], test.at[row, "item_id"]
            scores = model.score([user], scenario)[0]  # (n_items,)
            keep = np.ones(len(scores), dtype=bool)
            keep[[item_position[item] for item in seen_by_user.get(user, ()) if item in item_position]] = False
            keep[item_position[target]] = True
            others = np.delete(scores, item_position[target])[np.delete(keep, item_position[target])]
            target_score = scores[item_position[target]]
            ranks[test.index.get_loc(row)] = 1 + (others > target_score).sum() + (others == target_score).sum() / 2
    return ranks


def evaluation_speed() -> dict[str, float]:
    """Fit BPR-MF for one epoch on ml-1m; time full-ranking evaluation and the naive reference loop."""
    dataset = datasets.load("ml-1m", "age", sources=SOURCES, verbose=False)
    split = dataset.split()
    model = BPRMF(num_epochs=1, show_progress=False).fit(split.train, items=dataset.items["item_id"])
    started = time.perf_counter()
    per_row = ranking_metrics(target_ranks(model, split.train, split.test), ks=(10, 20))
    vectorised_s = time.perf_counter() - started
    users = np.sort(split.test["user_id"].unique())
    in_sample = split.test["user_id"].isin(users[:REFERENCE_USERS]).to_numpy()
    started = time.perf_counter()
    reference = naive_ranks(model, split.train, split.test[in_sample].reset_index(drop=True))
    naive_sample_s = time.perf_counter() - started
    vectorised = per_row.loc[in_sample, "rank"].to_numpy()  # per_row keeps the order of split.test
    naive_all_s = naive_sample_s * len(users) / min(REFERENCE_USERS, len(users))
    return {"test_rows": len(split.test), "test_users": len(users), "items": len(model.item_ids_),
            "vectorised_s": vectorised_s, "naive_sample_s": naive_sample_s, "naive_all_s": naive_all_s,
            "ranks_agree": bool(np.allclose(reference, vectorised)), "ndcg@10": float(per_row["ndcg@10"].mean())}


def experiment_seconds() -> tuple[float | None, str]:
    """The ml-100k experiment's run seconds (all its runs, even across resumed invocations) and what it ran."""
    if not MANIFEST.exists():
        return None, f"not run ({MANIFEST.relative_to(MANIFEST.parents[2])} does not exist)"
    manifest = json.loads(MANIFEST.read_text())
    seconds = manifest.get("run_seconds_total", manifest["wall_seconds"])
    return float(seconds), (f"{len(manifest['models'])} models x {len(manifest['seeds'])} seeds"
                                             f"{' (smoke)' if manifest.get('smoke') else ''}")


def main() -> None:
    """Measure, print a table and a last line with the figures."""
    speed = evaluation_speed()
    wall, how = experiment_seconds()
    print(f"ml-1m age: {speed['test_rows']} test rows, {speed['test_users']} users, {speed['items']} items; "
          f"BPR-MF 1 epoch, ndcg@10 {speed['ndcg@10']:.4f}")
    print(f"{'measure':<52} {'seconds':>10} {'target':>8}")
    print(f"{'(a) full ranking, target_ranks + ranking_metrics':<52} {speed['vectorised_s']:>10.2f} "
          f"{EVAL_TARGET_S:>8.0f}")
    print(f"{f'    naive loop, first {REFERENCE_USERS} users':<52} {speed['naive_sample_s']:>10.2f} {'':>8}")
    print(f"{'    naive loop, scaled to all users':<52} {speed['naive_all_s']:>10.2f} {'':>8}")
    print(f"{'(b) ml-100k experiment, wall clock':<52} {'-' if wall is None else f'{wall:.1f}':>10} "
          f"{EXPERIMENT_TARGET_S:>8.0f}   {how}")
    speed_up = speed["naive_all_s"] / speed["vectorised_s"]
    experiment = "not run" if wall is None else f"{wall:.1f} s = {wall / EXPERIMENT_TARGET_S:.2f} x target"
    print(f"eval {speed['vectorised_s']:.2f} s = {speed['vectorised_s'] / EVAL_TARGET_S:.2f} x target, "
          f"speed-up {speed_up:.0f}x over the naive loop (ranks agree: {speed['ranks_agree']}); "
          f"ml-100k experiment {experiment}")


if __name__ == "__main__":
    main()
