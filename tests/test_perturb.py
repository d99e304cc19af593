"""Perturbations: the share changed, the rest untouched, seeded, bad parameters refused."""

import pandas as pd
import pytest

from xscene_lib.data import DataError
from xscene_lib.data import blank_texts, relabel_scenarios

FRAME = pd.DataFrame({"user_id": range(2000), "item_id": range(2000), "scenario": ["a"] * 2000})


def test_relabelling_redraws_about_the_share_and_nothing_at_zero():
    assert relabel_scenarios(FRAME, 0.0, ["a", "b"])["scenario"].eq("a").all()
    changed = relabel_scenarios(FRAME, 1.0, ["b"], seed=3)
    assert changed["scenario"].eq("b").all() and changed["item_id"].equals(FRAME["item_id"])
    half = relabel_scenarios(FRAME, 0.5, ["b"], seed=3)["scenario"].eq("b").mean()
    assert 0.45 < half < 0.55
    pd.testing.assert_frame_equal(relabel_scenarios(FRAME, 0.5, ["a", "b"], seed=1),
                                  relabel_scenarios(FRAME, 0.5, ["a", "b"], seed=1))


def test_blanking_replaces_the_share_with_the_placeholder():
    texts = [f"film {i}" for i in range(1000)]
    assert blank_texts(texts, 0.0, "Unknown.") == texts
    assert set(blank_texts(texts, 1.0, "Unknown.")) == {"Unknown."}
    kept = [t for t in blank_texts(texts, 0.3, "Unknown.", seed=2) if t != "Unknown."]
    assert 650 < len(kept) < 750 and all(t in texts for t in kept)


@pytest.mark.parametrize("share", [-0.1, 1.5, "half", True])
def test_bad_shares_and_placeholders_are_refused(share):
    with pytest.raises(DataError, match="share must be a number between 0 and 1"):
        relabel_scenarios(FRAME, share, ["a"])
    with pytest.raises(DataError, match="placeholder"):
        blank_texts(["x"], 0.5, "  ")
    with pytest.raises(DataError, match="lacks column"):
        relabel_scenarios(FRAME.drop(columns="scenario"), 0.5, ["a"])
