"""Benchmark: does seq-joint's text part carry cold items, and would a frequency gate on its id part help?

The cold-item target asks seq-joint to be at least as good as text zero-shot on items with few training
interactions. An item's vector is v_i = m_i e_i + u_i (id part, text part; sequential.py), and ID dropout in
training is meant to make u_i carry an item alone. This script fits the model once (the dataset's tuned settings
from configs/ when it has them, else the defaults; --settings overrides some), then scores the **validation**
rows from the training rows alone (`SequentialModel.set_history`) with the id part scaled by a gate g of the
item's training count n_i, v_i = g(n_i) e_i + u_i:

- as fitted: g = 1 for items seen in training (the model as trained);
- hard gates: g = [n_i > t], the id part dropped for items with at most t training interactions;
- soft gates: g = n_i / (n_i + k), shrinking rare items' id parts towards zero;
- text part only: g = 0 for every item (what a never-seen item gets);

beside text zero-shot (the cosine of the user's mean history text with the item's). It prints NDCG@10 on all
validation rows, on cold items (at most COLD_MAX training interactions in the row's scenario) and on the others,
and each gate minus "as fitted" with its 95% paired bootstrap interval over users. The test rows are never read:
a gate that won here could be chosen on validation without touching the test split.

    python bench/cold_gate.py --dataset food-kitchen --scenarios domain
    python bench/cold_gate.py --dataset ml-100k --scenarios age --settings '{"id_dropout": 0.5}'
    python bench/cold_gate.py --dataset ml-100k --scenarios age --settings '{"text_components": 384}' --tag text-384

Output: the table on screen and in bench/results/cold_gate/<dataset>-<view>[-<tag>].csv; the last line holds
the figures (NDCG@10 on cold validation items: as fitted, the best gate, text only, text zero-shot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xscene_lib.data import loading as datasets
from xscene_lib.evaluation.intervals import paired_bootstrap
from xscene_lib.evaluation.metrics import ranking_metrics, target_ranks
from xscene_lib.experiments.configs import tuned_settings
from xscene_lib.experiments.registry import model_specs
from xscene_lib.experiments.runner import _item_vectors
from xscene_lib.experiments.slices import cold_flags, domain_candidates
from xscene_lib.text.encoder import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
HARD = (2, 5, 20)  # t of the hard gates
SOFT = (1, 3)  # k of the soft gates
BASE = "as fitted"


def gates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each gate's factor on the id part, by item. shape: (n_items,) each, from counts (n_items,)."""
    seen = (counts > 0).astype(np.float32)
    out = {BASE: seen}
    out |= {f"id part off at n <= {t}": (counts > t).astype(np.float32) for t in HARD}
    out |= {f"id part x n/(n+{k})": (counts / (counts + k)).astype(np.float32) for k in SOFT}
    out["text part only"] = np.zeros_like(seen)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="food-kitchen")
    parser.add_argument("--scenarios", default="domain")
    parser.add_argument("--model", default="seq-joint", help="a text-aware sequential model of the registry")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=None, help="JSON of settings over the config's (or defaults)")
    parser.add_argument("--tag", default="", help="suffix of the output file, e.g. for other --settings")
    parser.add_argument("--out", default=str(HERE / "results" / "cold_gate"))
    args = parser.parse_args()

    data = datasets.load(args.dataset, args.scenarios)
    split = data.split()
    settings = tuned_settings(data.name, data.view).get(args.model, {})
    settings = {**settings, **json.loads(args.settings or "{}")}
    spec, zero_shot = model_specs([args.model, "text-zero-shot"], "top-k")
    if not spec.needs_text:
        sys.exit(f"{args.model} uses no text; give a text-aware sequential model such as seq-joint")
    vectors = _item_vectors(data, DEFAULT_MODEL, None)  # (n_items, d), from the text cache when there
    fits = {"text zero-shot": zero_shot.build(args.seed, False, None), BASE: spec.build(args.seed, False, settings)}
    for model in fits.values():
        model.fit(split.train, vectors, items=data.items["item_id"], valid=split.valid)
    model = fits[BASE].set_history(split.train)  # validation rows are predicted from the training rows
    valid = split.valid
    cold = cold_flags(dataclasses.replace(split, test=valid))["cold_item"].to_numpy()  # (n_valid,), slices.COLD_MAX
    candidates = domain_candidates(data)

    def ndcg(recommender: object) -> pd.DataFrame:
        ranks = target_ranks(recommender, split.train, valid, candidates=candidates)
        return ranking_metrics(ranks, ks=(10,))[["user_id", "ndcg@10"]].assign(cold=cold)

    rows = [ndcg(fits["text zero-shot"]).assign(model="text zero-shot")]
    id_part = model.module_.item_id.weight.detach().clone()  # (n_items, dim): e_i
    for name, gate in gates(model.popularity_.sum(axis=0)).items():
        model.module_.item_id.weight.data = id_part * torch.as_tensor(gate)[:, None]
        rows.append(ndcg(model).assign(model=name))
    model.module_.item_id.weight.data = id_part
    per_row = pd.concat(rows, ignore_index=True)
    per_row["slice"] = np.where(per_row["cold"], "cold items", "other items")
    table = []
    for name in per_row["model"].unique():
        mine = per_row[per_row["model"] == name]
        line = {"model": name, "all": mine["ndcg@10"].mean(), "cold items": mine.loc[mine["cold"], "ndcg@10"].mean(),
                "other items": mine.loc[~mine["cold"], "ndcg@10"].mean()}
        if name != BASE:
            versus = paired_bootstrap(per_row, "ndcg@10", BASE, name, by=("slice",)).set_index("slice")
            for part in ("all", "cold items"):
                line[f"{part}: diff"], line[f"{part}: low"], line[f"{part}: high"] = \
                    versus.loc[part, ["difference", "ci_low", "ci_high"]]
        table.append(line)
    table = pd.DataFrame(table).set_index("model")
    n_cold = int(cold.sum())
    print(f"{data.name}/{data.view}, {args.model} seed {args.seed}, settings {settings or 'defaults'}; validation "
          f"rows {len(valid):,}, cold items {n_cold:,}; best epoch {model.history_.best_epoch} of "
          f"{len(model.history_.epochs)}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string())
    out = Path(args.out) / f"{data.name}-{data.view}{'-' + args.tag if args.tag else ''}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.assign(n_valid=len(valid), n_cold=n_cold, settings=json.dumps(settings)).to_csv(out.with_suffix(".tmp"))
    os.replace(out.with_suffix(".tmp"), out)  # atomic
    gated = table.drop(index=[BASE, "text zero-shot", "text part only"])["cold items"]
    print(f"cold validation NDCG@10: as fitted {table.loc[BASE, 'cold items']:.4f}, best gate {gated.max():.4f} "
          f"({gated.idxmax()}), text part only {table.loc['text part only', 'cold items']:.4f}, text zero-shot "
          f"{table.loc['text zero-shot', 'cold items']:.4f} (n={n_cold})")


if __name__ == "__main__":
    main()
