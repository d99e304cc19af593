"""Runs inside .venv-peers (RecBole's own environment): trains one RecBole model on pre-split atomic files and
writes its test metrics and the rank of every test interaction. bench/peer_recbole.py starts it; see there.

    python bench/recbole_worker.py --model BPR --dataset NAME --config RUN.yaml --out DIR [--valid-only]

DIR receives result.json (RecBole's own test and validation metrics, epochs, times, sizes) and ranks.csv, one
row per test interaction: user_id, item_id (our ids), higher and tied (how many candidates scored above and
equal to the target), candidates (items ranked: all items but the padding and the user's train and valid
items), and topk_position, the target's place in the top-k list that RecBole's own evaluation builds from the
same scores with torch.topk (0 when it is not in that list).

With --valid-only (a tuning trial, bench/peer_tune.py) it trains and stops: result.json holds the validation
metrics and epochs only, no test metric is computed and no ranks.csv is written.

With --domains FILE (a CSV of item_id, scenario: the items each scenario ranks, when scenarios are item domains)
and --test-scenarios FILE (user_id, item_id, scenario of each test row), a test row is ranked only against the
items of its scenario, as our models are; RecBole's own test metrics still rank every item.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed


def numpy_aliases() -> None:
    """Give NumPy 2 the aliases RecBole 1.2.1 reads at start-up (np.float_, np.complex_, np.unicode_), so the
    worker also runs where NumPy 2 is installed (e.g. a GPU machine's Python); with NumPy 1 nothing changes."""
    for alias, kind in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if alias not in np.__dict__:
            setattr(np, alias, kind)


def outside_masks(dataset: object, domains: Path | None, test_scenarios: Path | None) -> tuple[dict, dict]:
    """Each scenario's (item_num,) mask of the items outside it, and the scenario of each (user, item) test pair
    in RecBole's indices; both empty without --domains."""
    if domains is None:
        return {}, {}
    items = pd.read_csv(domains)
    masks = {}
    for scenario, group in items.groupby("scenario"):
        inside = dataset.token2id(dataset.iid_field, group["item_id"].astype(str).to_numpy())
        mask = torch.ones(dataset.item_num, dtype=torch.bool)
        mask[torch.as_tensor(inside)] = False
        masks[str(scenario)] = mask
    rows = pd.read_csv(test_scenarios)
    users = dataset.token2id(dataset.uid_field, rows["user_id"].astype(str).to_numpy())
    wanted = dataset.token2id(dataset.iid_field, rows["item_id"].astype(str).to_numpy())
    return masks, {(int(u), int(i)): str(s) for u, i, s in zip(users, wanted, rows["scenario"])}


def seen_items(dataset: object, history: Path | None) -> dict[int, torch.Tensor]:
    """Each user's train and valid items in RecBole's indices, from --history; empty without it."""
    if history is None:
        return {}
    rows = pd.read_csv(history)
    users = dataset.token2id(dataset.uid_field, rows["user_id"].astype(str).to_numpy())
    items = dataset.token2id(dataset.iid_field, rows["item_id"].astype(str).to_numpy())
    return {int(user): torch.as_tensor(group.to_numpy()) for user, group in pd.Series(items).groupby(users)}


def test_ranks(model: torch.nn.Module, test_data: object, dataset: object, max_k: int,
               masks: dict | None = None, scenario_of: dict | None = None,
               seen: dict[int, torch.Tensor] | None = None) -> pd.DataFrame:
    """How each test interaction's item ranks among the user's candidates under the trained model's scores
    (only the items of its scenario's domain when `masks` are given; `seen` items left out when the loader
    gives no history, as for sequential models)."""
    model.eval()
    parts = []
    with torch.no_grad():
        for interaction, history, positive_u, positive_i in test_data:  # scored on the model's device (a GPU with
            scores = model.full_sort_predict(interaction.to(model.device))  # use_gpu), ranked on the CPU
            scores = scores.view(-1, dataset.item_num).cpu()  # (batch_users, item_num)
            scores[:, 0] = -np.inf  # the padding item
            if history is not None:
                scores[history] = -np.inf  # the user's train and valid items
            elif seen:  # one score row per test interaction
                for row, user in enumerate(interaction[dataset.uid_field].tolist()):
                    if user in seen:
                        scores[row, seen[user]] = -np.inf
            rows = scores[positive_u]  # (n_rows, item_num)
            users = interaction[dataset.uid_field][positive_u].numpy()
            if masks:
                outside = torch.stack([masks[scenario_of[(int(u), int(i))]] for u, i in zip(users, positive_i)])
                rows = rows.masked_fill(outside, -np.inf)  # (n_rows, item_num): other domains do not compete
            target = rows[torch.arange(len(positive_i)), positive_i]  # (n_rows,)
            _, top = torch.topk(rows, max_k, dim=-1)  # the call RecBole's evaluation makes
            found = top == positive_i[:, None]  # (n_rows, max_k)
            parts.append(pd.DataFrame({
                "user_id": dataset.id2token(dataset.uid_field, users).astype(np.int64),
                "item_id": dataset.id2token(dataset.iid_field, positive_i.numpy()).astype(np.int64),
                "higher": (rows > target[:, None]).sum(dim=1).numpy(),
                "tied": (rows == target[:, None]).sum(dim=1).numpy() - 1,
                "candidates": torch.isfinite(rows).sum(dim=1).numpy(),
                "topk_position": torch.where(found.any(dim=1), found.int().argmax(dim=1) + 1, 0).numpy(),
            }))
    return pd.concat(parts, ignore_index=True)


def plain(result: dict | None) -> dict[str, float]:
    """RecBole's metric dict with plain float values (it may hold numpy or torch numbers)."""
    return {str(key): float(value) for key, value in (result or {}).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a RecBole model, e.g. BPR, ItemKNN, LightGCN, SASRec")
    parser.add_argument("--dataset", required=True, help="the atomic files' name under the config's data_path")
    parser.add_argument("--config", required=True, type=Path, help="the RecBole YAML config of this run")
    parser.add_argument("--out", required=True, type=Path, help="folder for result.json and ranks.csv")
    parser.add_argument("--domains", type=Path, help="CSV of item_id, scenario: rank within the test row's domain")
    parser.add_argument("--test-scenarios", type=Path, help="CSV of user_id, item_id, scenario of the test rows")
    parser.add_argument("--history", type=Path,
                        help="CSV of user_id, item_id: the items left out of each test row's ranking when RecBole's "
                             "loader gives none (sequential models)")
    parser.add_argument("--valid-only", action="store_true",
                        help="train and report the validation metrics only; the test rows are not evaluated")
    options = parser.parse_args()

    numpy_aliases()
    config = Config(model=options.model, dataset=options.dataset, config_file_list=[str(options.config)])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])  # as RecBole's run_recbole does before building
    # RecBole's loaders keep their Dataset in `_dataset` (`dataset` is torch's index list); run_recbole uses it too
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    valid_scores: list[float] = []
    start = time.perf_counter()
    _, best_valid = trainer.fit(train_data, valid_data, verbose=False, saved=not options.valid_only,
                                show_progress=False, callback_fn=lambda epoch, score: valid_scores.append(float(score)))
    fit_s = time.perf_counter() - start
    options.out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": config["model"], "recbole": recbole.__version__, "torch": torch.__version__,
        "seed": config["seed"], "users": dataset.user_num - 1, "items": dataset.item_num - 1,
        "interactions": dict(zip(("train", "valid", "test"), map(int, dataset.file_size_list))),
        "max_epochs": trainer.epochs, "epochs_run": len(valid_scores),  # ItemKNN's trainer: one pass
        "best_epoch": int(np.argmax(valid_scores)) + 1 if valid_scores else None,
        "fit_s": fit_s, "valid": plain(best_valid),
    }
    if options.valid_only:  # a tuning trial: the test rows stay unread
        (options.out / "result.json").write_text(json.dumps(result, indent=2))
        return
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    ranks = test_ranks(model, test_data, dataset, max(config["topk"]),
                       *outside_masks(dataset, options.domains, options.test_scenarios),
                       seen_items(dataset, options.history))
    test_s = time.perf_counter() - start

    ranks.to_csv(options.out / "ranks.csv", index=False)
    result.update(test_s=test_s, test=plain(test_result))
    (options.out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
