"""Train the joint model (or BPR-MF) on the synthetic data, on one process or on several started by torchrun.

    python -m xscene_lib.experiments.scaling_demo --out single.json                            # one process
    python -m torch.distributed.run --standalone --nproc-per-node 2 \\
        -m xscene_lib.experiments.scaling_demo --out two.json                      # two processes, gloo on CPU

Every process trains; rank 0 validates, writes the checkpoints (with --checkpoint-dir), evaluates on the test
rows and writes --out: the per-epoch history, test NDCG@10 and Recall@10, and the weights (next to --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from xscene_lib.training import distributed
from xscene_lib.evaluation import metrics
from xscene_lib.models.bpr import BPRMF
from xscene_lib.models.joint import JointModel
from xscene_lib.data.synthetic import synthetic


def main() -> None:
    """Fit, then (rank 0) evaluate and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("joint", "bpr"), default="joint")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per process: the processes share the cores
    data, truth = synthetic(n_users=args.users, n_items=150, n_topics=6, interactions_per_user=20, seed=0)
    split = data.split()
    noise = np.random.default_rng(0).normal(scale=0.1, size=(150, 6))
    vectors = pd.DataFrame(np.eye(6)[truth.item_topics] + noise, index=np.arange(150))  # one-hot topic + noise
    launched = distributed.launched()  # started by torchrun: train on every process it started
    settings = dict(num_epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, show_progress=False,
                    checkpoint_dir=args.checkpoint_dir, distributed=launched)
    if args.model == "joint":
        model = JointModel(dim=16, learning_rate=1e-2, **settings).fit(split.train, vectors, valid=split.valid)
    else:
        model = BPRMF(dim=16, **settings).fit(split.train, items=vectors.index, valid=split.valid)
    group = distributed.setup() if launched else distributed.SINGLE
    if group.is_main:
        ranks = metrics.target_ranks(model, split.train, split.test)
        scores = metrics.ranking_metrics(ranks, ks=(10,))[["ndcg@10", "recall@10"]].mean()
        history = model.history_.frame.drop(columns="seconds").to_dict("list")
        result = {"world_size": group.world_size, "history": history, "best_epoch": model.history_.best_epoch,
                  **{name: float(value) for name, value in scores.items()}}
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        weights = {name: t.contiguous() for name, t in model.module_.state_dict().items()}
        save_file(weights, str(args.out.with_suffix(".safetensors")))
        print(json.dumps(result))
    distributed.teardown()


if __name__ == "__main__":
    main()
