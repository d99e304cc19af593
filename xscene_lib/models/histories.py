"""Interaction rows as sequences for the sequential model: rows ordered by user and time, training windows of
a fixed length counted from the end of each history, and each user's latest items.

Items are stored as index + 1 so that PAD (0) can fill the columns before a history starts; the latest item is
always in the last column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xscene_lib.models.sequence_net import PAD


def timestamps_of(frame: pd.DataFrame) -> np.ndarray | None:
    """The frame's timestamps as int64, or None without a timestamp column. shape: (n_rows,)."""
    return frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame.columns else None


def chronological(users: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """The order of rows by user, then timestamp (if given), then row order. shape: (n_rows,)."""
    rows = np.arange(len(users))
    return np.lexsort((rows, users) if timestamps is None else (rows, timestamps, users))


def positions(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's position from its user's first row, and its user's number of rows (rows grouped by user)."""
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    return np.arange(len(users)) - np.repeat(starts, sizes), np.repeat(sizes, sizes)


def windows(users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, length: int) -> tuple[np.ndarray, ...]:
    """Training windows: input items (index + 1, PAD before), their scenarios, target items (-1: none), the
    targets' scenarios, each (n_windows, length), and the user of each window (n_windows,), a user's windows
    together and latest first; from rows grouped by user in time order."""
    position, size = positions(users)
    target = np.flatnonzero(position >= 1)  # rows predicted from the row before them
    from_end = (size - 1 - position)[target]  # 0 for a user's latest transition
    window, column = from_end // length, length - 1 - from_end % length
    _, row = np.unique(users[target].astype(np.int64) * (int(window.max(initial=0)) + 1) + window,
                       return_inverse=True)
    shape = (int(row.max(initial=-1)) + 1, length)
    inputs, input_scenarios = np.full(shape, PAD, np.int64), np.zeros(shape, np.int64)
    targets, target_scenarios = np.full(shape, -1, np.int64), np.zeros(shape, np.int64)
    inputs[row, column], input_scenarios[row, column] = items[target - 1] + 1, scenarios[target - 1]
    targets[row, column], target_scenarios[row, column] = items[target], scenarios[target]
    owner = np.zeros(shape[0], np.int64)
    owner[row] = users[target]
    return inputs, input_scenarios, targets, target_scenarios, owner


def recent(users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, n_users: int,
            length: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last `length` items (index + 1, PAD before) and their scenarios, from rows grouped by user in
    time order. shape: (n_users, length) each."""
    position, size = positions(users)
    from_end = size - 1 - position
    last = from_end < length
    sequence, scenario = np.full((n_users, length), PAD, np.int64), np.zeros((n_users, length), np.int64)
    sequence[users[last], length - 1 - from_end[last]] = items[last] + 1
    scenario[users[last], length - 1 - from_end[last]] = scenarios[last]
    return sequence, scenario
