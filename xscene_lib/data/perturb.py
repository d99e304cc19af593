"""Deliberately inconsistent data, for measuring what a model does with it: wrong scenario labels, missing texts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from xscene_lib.data.validation import DataError, check_number, require_columns


def relabel_scenarios(interactions: pd.DataFrame, share: float, scenarios: Sequence[str],
                      seed: int = 0) -> pd.DataFrame:
    """The interactions with a `share` of their scenario labels redrawn uniformly from `scenarios`."""
    require_columns(interactions, ("scenario",), "interactions")
    check_number(None, "share", share, minimum=0, maximum=1)
    if not len(scenarios):
        raise DataError("scenarios must name at least one scenario to draw labels from")
    rng = np.random.default_rng(seed)
    redrawn = rng.random(len(interactions)) < share  # (n,)
    labels = np.where(redrawn, rng.choice(np.asarray(scenarios, dtype=object), len(interactions)),
                      interactions["scenario"].astype(str).to_numpy(dtype=object))
    return interactions.assign(scenario=labels)


def blank_texts(texts: Sequence[str], share: float, placeholder: str, seed: int = 0) -> list[str]:
    """The texts with a `share` of them replaced by `placeholder` (a text encoders refuse to be empty)."""
    check_number(None, "share", share, minimum=0, maximum=1)
    if not isinstance(placeholder, str) or not placeholder.strip():
        raise DataError("placeholder must be a non-empty text, e.g. 'Unknown film.'; encoders refuse blank texts")
    replaced = np.random.default_rng(seed).random(len(texts)) < share  # (n,)
    return [placeholder if blank else text for text, blank in zip(texts, replaced)]
