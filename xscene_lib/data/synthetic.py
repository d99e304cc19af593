"""A seeded toy multi-scenario dataset with planted, scenario-specific topic preferences and known truth.

Every item has one latent topic and a text made of that topic's words (plus one generic word), so a text
encoder can recover the topic. Every user has base preferences over topics; every scenario adds its own shift
to all users' preferences, so the same user prefers different topics in different scenarios. Interactions are
sampled per (user, scenario) without replacement, with probability proportional to exp(affinity); each user's
interactions, across scenarios, then get strictly increasing timestamps in a random order unrelated to the
draws, so the latest interaction is as typical as any other.

With two scenarios they are named "mobile" and "desktop" (one user browsing on two devices); otherwise
"s0", "s1", ... . For tests and the toy case study only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xscene_lib.data.dataset import Dataset
from xscene_lib.data.validation import DataError, check_number, check_positive_int

TOPIC_WORDS = (
    ("guitar", "drums", "melody", "concert", "chorus", "album"),
    ("recipe", "spice", "oven", "pasta", "flavour", "baking"),
    ("football", "stadium", "coach", "league", "goal", "training"),
    ("travel", "beach", "passport", "hotel", "island", "flight"),
    ("galaxy", "telescope", "physics", "planet", "orbit", "experiment"),
    ("garden", "flower", "seeds", "soil", "compost", "tulip"),
    ("cinema", "director", "actor", "screenplay", "premiere", "camera"),
    ("fashion", "jacket", "fabric", "runway", "denim", "sneakers"),
)
GENERIC_WORDS = ("new", "classic", "great", "popular", "deluxe", "essential")
WORDS_PER_TEXT = 4
PREFERENCE_SCALE = 1.5
SHIFT_SCALE = 1.5
START_TIMESTAMP = 1_700_000_000
SECONDS_BETWEEN_INTERACTIONS = 3_600


@dataclass(frozen=True, eq=False, repr=False)
class SyntheticTruth:
    """The planted ground truth behind `synthetic`: item topics, user preferences and scenario shifts."""

    item_topics: np.ndarray  # (n_items,): topic of item_id i
    user_preferences: np.ndarray  # (n_users, n_topics): base preference of user_id u for each topic
    scenario_shifts: np.ndarray  # (n_scenarios, n_topics): added to every user's preferences in that scenario
    scenarios: list[str]  # scenario names, row order of scenario_shifts

    def affinity(self, scenario: str | int) -> np.ndarray:
        """True score of every (user_id, item_id) pair in a scenario, shape (n_users, n_items)."""
        if isinstance(scenario, str):
            if scenario not in self.scenarios:
                raise DataError(f"unknown scenario '{scenario}'; known: {self.scenarios}")
            scenario = self.scenarios.index(scenario)
        if not 0 <= scenario < len(self.scenarios):
            raise DataError(f"scenario index {scenario} out of range; there are {len(self.scenarios)} scenarios")
        return (self.user_preferences + self.scenario_shifts[scenario])[:, self.item_topics]

    def __repr__(self) -> str:
        n_users, n_topics = self.user_preferences.shape
        return (f"SyntheticTruth(scenarios={self.scenarios}, n_users={n_users}, "
                f"n_items={len(self.item_topics)}, n_topics={n_topics})")


def _topic_vocabulary(n_topics: int) -> np.ndarray:
    generated = [tuple(f"topic{topic}term{word}" for word in range(len(TOPIC_WORDS[0])))
                 for topic in range(len(TOPIC_WORDS), n_topics)]
    return np.array((list(TOPIC_WORDS) + generated)[:n_topics])


def _item_texts(item_topics: np.ndarray, rng: np.random.Generator) -> list[str]:
    vocabulary = _topic_vocabulary(int(item_topics.max()) + 1)
    picks = rng.random((len(item_topics), vocabulary.shape[1])).argsort(axis=1)[:, :WORDS_PER_TEXT]
    words = vocabulary[item_topics[:, None], picks]
    generic = np.array(GENERIC_WORDS)[rng.integers(len(GENERIC_WORDS), size=len(item_topics))]
    return [" ".join((first, *rest)) for first, rest in zip(generic, words)]


def synthetic(n_users: int = 200, n_items: int = 300, n_scenarios: int = 2, n_topics: int = 4,
              interactions_per_user: int = 20, seed: int = 0, *, preference_scale: float = PREFERENCE_SCALE,
              shift_scale: float = SHIFT_SCALE) -> tuple[Dataset, SyntheticTruth]:
    """A seeded multi-scenario dataset with planted scenario-specific preferences, and its ground truth.

    preference_scale and shift_scale are the standard deviations of the users' base preferences and of the
    scenario shifts: the larger shift_scale is against preference_scale, the more the scenarios differ.
    """
    for label, value in (("n_users", n_users), ("n_items", n_items), ("n_scenarios", n_scenarios),
                         ("n_topics", n_topics), ("interactions_per_user", interactions_per_user)):
        check_positive_int(None, label, value)
    for label, value in (("preference_scale", preference_scale), ("shift_scale", shift_scale)):
        check_number(None, label, value, positive=False)
    if n_topics > n_items:
        raise DataError(f"n_topics={n_topics} exceeds n_items={n_items}; every topic needs an item")
    if not n_scenarios <= interactions_per_user <= n_items:
        raise DataError(f"interactions_per_user={interactions_per_user} must lie between n_scenarios="
                        f"{n_scenarios} (one per scenario) and n_items={n_items} (items are not repeated)")
    rng = np.random.default_rng(seed)
    names = ["mobile", "desktop"] if n_scenarios == 2 else [f"s{index}" for index in range(n_scenarios)]
    truth = SyntheticTruth(item_topics=rng.permutation(np.arange(n_items) % n_topics),
                           user_preferences=rng.normal(0.0, preference_scale, (n_users, n_topics)),
                           scenario_shifts=rng.normal(0.0, shift_scale, (n_scenarios, n_topics)),
                           scenarios=names)
    scenario_mix = rng.dirichlet(np.ones(n_scenarios), size=n_users)
    counts = 1 + rng.multinomial(interactions_per_user - n_scenarios, scenario_mix)
    parts = []
    for index, name in enumerate(names):
        noisy = truth.affinity(index) + rng.gumbel(size=(n_users, n_items))
        ranked = np.argsort(-noisy, axis=1)  # Gumbel top-k: sampling without replacement, in draw order
        users, draws = np.nonzero(np.arange(n_items)[None, :] < counts[:, index][:, None])
        moments = rng.random((n_users, n_items))  # time order independent of draw order
        parts.append(pd.DataFrame({"user_id": users, "item_id": ranked[users, draws], "scenario": name,
                                   "moment": moments[users, draws]}))
    interactions = pd.concat(parts, ignore_index=True).sort_values(["user_id", "moment"], kind="stable")
    position = interactions.groupby("user_id").cumcount().to_numpy()
    interactions["timestamp"] = START_TIMESTAMP + SECONDS_BETWEEN_INTERACTIONS * position
    items = pd.DataFrame({"item_id": np.arange(n_items), "text": _item_texts(truth.item_topics, rng)})
    users = pd.DataFrame({"user_id": np.arange(n_users)})
    dataset = Dataset.from_frames(interactions.drop(columns="moment"), items, users, name="synthetic",
                                  view="custom", scenarios=names)
    return dataset, truth
