"""Our split as RecBole's atomic files: the interactions of each part, the item catalogue, and for RecBole's
sequential models the same rows as (history, next item) sequences. bench/peer_recbole.py and bench/peer_tune.py
export with it; see peer_recbole.py for how the files are read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xscene_lib.data import Dataset, Split
from xscene_lib.experiments.slices import domain_candidates

# RecBole's sequential models read pre-built sequences (export_sequences); a few of its common ones
SEQUENTIAL = frozenset({"SASRec", "GRU4Rec", "BERT4Rec", "NARM", "STAMP", "Caser", "LightSANs", "CORE"})
MAX_ITEM_LIST_LENGTH = 50  # RecBole's default, and our sequential models' max_length


def atomic(frame: pd.DataFrame, columns: dict[str, str]) -> str:
    """A frame as a RecBole atomic file: tab-separated, header `name:type`, one row per line."""
    header = "\t".join(f"{name}:{kind}" for name, kind in columns.items())
    body = frame[list(columns)].to_csv(sep="\t", header=False, index=False)
    return f"{header}\n{body}"


def export(ds: Dataset, split: Split, folder: Path, name: str) -> None:
    """Write the split as NAME.{train,valid,test}.inter and the catalogue as NAME.item under folder/NAME/."""
    target = folder / name
    target.mkdir(parents=True)
    columns = {"user_id": "token", "item_id": "token", "timestamp": "float"}
    for part, frame in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        (target / f"{name}.{part}.inter").write_text(atomic(frame, columns))
    (target / f"{name}.item").write_text(atomic(ds.items, {"item_id": "token"}))
    candidates = domain_candidates(ds)
    if candidates is not None:  # the items each scenario ranks, and the scenario of each test row
        pd.DataFrame([(item, scenario) for scenario, items in candidates.items() for item in items],
                     columns=["item_id", "scenario"]).to_csv(folder / "domains.csv", index=False)
        split.test[["user_id", "item_id", "scenario"]].to_csv(folder / "test_scenarios.csv", index=False)


def export_sequences(ds: Dataset, split: Split, folder: Path, name: str, length: int) -> None:
    """The split for RecBole's sequential models, under folder/NAME/: a row per prediction, the target item_id
    after item_id_list, the last `length` items before it (space-separated, oldest first), as ours see them.

    Train rows predict every training interaction but a user's first from the ones before it; a validation
    row is predicted from the user's training history, a test row from training and validation history. The
    user's train and valid items go to folder/history.csv, which the worker leaves out of the test ranking.
    """
    target = folder / name
    target.mkdir(parents=True)
    train = split.train.sort_values(["user_id", "timestamp"], kind="stable")  # ours: rows in order on equal times
    histories = train.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()
    columns = {"user_id": "token", "item_id_list": "token_seq", "item_id": "token"}

    def before(items: list, end: int) -> str:  # the last `length` items before position `end`
        return " ".join(map(str, items[max(0, end - length):end]))

    rows = [(user, before(items, position), item) for user, items in histories.items()
            for position, item in enumerate(items) if position > 0]
    parts = {"train": pd.DataFrame(rows, columns=list(columns))}
    for part, frame in (("valid", split.valid), ("test", split.test)):  # each row then joins its user's history
        rows = []
        for user, item in zip(frame["user_id"], frame["item_id"]):
            history = histories.setdefault(user, [])
            rows.append((user, before(history, len(history)), item))
            history.append(item)
        parts[part] = pd.DataFrame(rows, columns=list(columns))
    for part, frame in parts.items():
        (target / f"{name}.{part}.inter").write_text(atomic(frame, columns))
    (target / f"{name}.item").write_text(atomic(ds.items, {"item_id": "token"}))
    pd.concat([split.train, split.valid])[["user_id", "item_id"]].to_csv(folder / "history.csv", index=False)


def export_for(ds: Dataset, split: Split, folder: Path, name: str, models: list[str]) -> None:
    """The split as RecBole's atomic files, and as sequences (NAME-seq) when a sequential model is among `models`."""
    export(ds, split, folder, name)
    if SEQUENTIAL.intersection(models):
        export_sequences(ds, split, folder, f"{name}-seq", MAX_ITEM_LIST_LENGTH)
