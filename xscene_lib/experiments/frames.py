"""Your own data as a folder of Parquet frames (what `xscene run --frames DIR` reads), and its fingerprint.

    DIR/interactions.parquet   user_id, item_id, scenario, timestamp[, rating][, split]
    DIR/items.parquet          item_id, text[, metadata]
    DIR/users.parquet          user_id[, metadata]            (optional)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from xscene_lib.data.dataset import INTERACTION_COLUMNS, Dataset
from xscene_lib.data.validation import DataError

FRAME_FILES = ("interactions", "items", "users")  # users is optional


def read_frames(folder: str | Path, *, name: str | None = None) -> Dataset:
    """A Dataset from DIR/interactions.parquet, DIR/items.parquet and (if there) DIR/users.parquet.

    The dataset is named after the folder unless `name` is given; results of the runner go to a folder
    named after it.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"frames folder {str(root)!r} does not exist; pass a folder holding interactions.parquet "
                        f"and items.parquet")
    missing = [f"{part}.parquet" for part in FRAME_FILES[:2] if not (root / f"{part}.parquet").is_file()]
    if missing:
        raise DataError(f"frames folder {str(root)!r} lacks {missing}; write interactions "
                        f"({', '.join(INTERACTION_COLUMNS)}; rating optional) and items (item_id, text) there "
                        f"with DataFrame.to_parquet")
    frames = {part: _read(root / f"{part}.parquet") for part in FRAME_FILES if (root / f"{part}.parquet").is_file()}
    try:
        return Dataset.from_frames(frames["interactions"], frames["items"], frames.get("users"),
                                   name=name if name is not None else root.resolve().name)
    except DataError as error:
        raise DataError(f"frames in {str(root)!r}: {error}") from error


def _read(path: Path) -> pd.DataFrame:
    """One Parquet file as a DataFrame; a DataError if it cannot be read."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {str(path)!r} as Parquet ({error}); write it with DataFrame.to_parquet") \
            from error


def frames_digest(data: Dataset) -> str:
    """SHA-256 of a dataset's interactions, item texts and user ids: the provenance of data given as frames."""
    if not isinstance(data, Dataset):
        raise DataError(f"frames_digest needs a Dataset, got {type(data).__name__}")
    digest = hashlib.sha256()
    parts = (data.interactions[[c for c in (*INTERACTION_COLUMNS, "split") if c in data.interactions.columns]],
             data.items[["item_id", "text"]], data.users[["user_id"]])
    for frame in parts:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
