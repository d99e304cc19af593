"""The models `run_experiment`, `run_click_through` and `xscene run` know: one `ModelSpec` per name.

    model_names(protocol="top-k")                    # the top-k models, in the book's order
    model_names(needs_text=True)                     # those that read item text vectors
    model_spec("joint").factory(seed=0, smoke=True)  # an unfitted JointModel, one epoch
    model_spec("joint").build(0, False, {"dim": 128})  # the same with settings of your own (e.g. tuned ones)

Each factory returns an unfitted estimator; smoke mode trains for one epoch. The model classes are imported
when a factory is first called, so listing names (the command line's --help) does not load torch.
`register_model` adds a model of your own, after which the runner and `xscene run` accept its name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xscene_lib.data.validation import DataError

PROTOCOLS = ("top-k", "click-through")
Factory = Callable[[int, bool], Any]  # (seed, smoke) -> an unfitted model
_RUN_ARGUMENTS = ("seed", "show_progress", "checkpoint_dir", "distributed")  # how a model runs, never settings


@dataclass(frozen=True)
class ModelSpec:
    """A named model: how to make it, what it is, whether it reads item text, its protocol, whether it trains."""

    name: str
    factory: Factory
    description: str
    needs_text: bool  # fit receives the item text vectors (else None)
    protocol: str  # "top-k" (full ranking of held-out items) or "click-through" (AUC and log loss)
    trainable: bool  # trained by gradient descent: seeds and smoke mode change it

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise DataError(f"ModelSpec(protocol={self.protocol!r}) is unknown; choose one of {PROTOCOLS}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataError(f"ModelSpec(name={self.name!r}) must be a non-empty string")
        if not callable(self.factory):
            raise DataError(f"ModelSpec(factory=...) of {self.name!r} must be callable as factory(seed, smoke)")

    def build(self, seed: int, smoke: bool, settings: Mapping[str, Any] | None = None) -> Any:
        """An unfitted model from the factory with `settings` (constructor arguments) replacing its defaults.

        Smoke mode's one epoch wins over a num_epochs in settings; a name the constructor lacks is a DataError.
        """
        model = self.factory(seed, smoke)
        if settings is None:
            return model
        if not isinstance(settings, Mapping):
            raise DataError(f"settings of model {self.name!r} must be a mapping of constructor arguments to "
                            f"values, got {type(settings).__name__}")
        accepted = [name for name in inspect.signature(type(model)).parameters if name not in _RUN_ARGUMENTS]
        unknown = sorted(set(settings) - set(accepted))
        if unknown:
            raise DataError(f"settings {unknown} are not arguments of model {self.name!r} "
                            f"({type(model).__name__}); choose from {accepted}")
        for name, value in settings.items():
            if not (smoke and name == "num_epochs"):
                setattr(model, name, value)  # the constructor only stores its arguments
        return model


def _factory(module: str, cls: str, *, trained: bool = True, **settings: Any) -> Factory:
    """A factory of xscene_lib.models.<module>.<cls> with these settings (plus seed and smoke's one epoch)."""

    def make(seed: int, smoke: bool) -> Any:
        model_class = getattr(importlib.import_module(f"xscene_lib.models.{module}"), cls)
        if not trained:
            return model_class(**settings)
        return model_class(seed=seed, show_progress=False, **settings, **({"num_epochs": 1} if smoke else {}))

    return make


_SPECS = (
    ModelSpec("popularity", _factory("baselines", "Popularity", trained=False),
              "items by training interactions in the scenario", False, "top-k", False),
    ModelSpec("itemknn", _factory("baselines", "ItemKNN", trained=False),
              "item-item cosine neighbours of the user's history", False, "top-k", False),
    ModelSpec("bpr", _factory("bpr", "BPRMF"), "BPR matrix factorisation over all scenarios, ids only",
              False, "top-k", True),
    ModelSpec("single-scenario", _factory("bpr", "SingleScenario"), "one BPR-MF per scenario", False, "top-k", True),
    ModelSpec("text-zero-shot", _factory("baselines", "TextZeroShot", trained=False),
              "cosine of an item's text vector to the user's mean history vector", True, "top-k", False),
    ModelSpec("article", _factory("article", "ArticleModel"), "the article's model as written", True, "top-k", True),
    ModelSpec("joint", _factory("joint", "JointModel"), "the joint model: text + ids, scenario adaptation",
              True, "top-k", True),
    ModelSpec("joint-no-text", _factory("joint", "JointModel", use_text=False), "the joint model without text",
              False, "top-k", True),
    ModelSpec("joint-no-id", _factory("joint", "JointModel", use_id=False), "the joint model without item ids",
              True, "top-k", True),
    ModelSpec("joint-no-adaptation", _factory("joint", "JointModel", adaptation=None),
              "the joint model without scenario adaptation", True, "top-k", True),
    ModelSpec("sasrec", _factory("sequential", "SequentialModel", use_text=False, adaptation=None),
              "SASRec: causal self-attention over each user's history in time order, ids only", False, "top-k", True),
    ModelSpec("seq-joint", _factory("sequential", "SequentialModel", use_text=True),
              "the sequential joint model: SASRec with ids + whitened text experts (UniSRec), FiLM to the scenario",
              True, "top-k", True),
    ModelSpec("seq-joint-no-text", _factory("sequential", "SequentialModel", use_text=False),
              "the sequential joint model without text (ids, FiLM to the scenario)", False, "top-k", True),
    ModelSpec("shared-bottom", _factory("ctr", "SharedBottom"), "shared bottom MLP, one tower per scenario",
              False, "click-through", True),
    ModelSpec("star", _factory("ctr", "STAR"), "STAR: star topology with partitioned normalisation",
              False, "click-through", True),
    ModelSpec("joint-ctr", _factory("ctr", "JointCTR"), "the joint model with a pointwise click head",
              True, "click-through", True),
    ModelSpec("joint-ctr-no-text", _factory("ctr", "JointCTR", use_text=False),
              "the pointwise joint model without text", False, "click-through", True),
)
MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}  # name -> spec, in the book's order


def model_names(protocol: str | None = None, *, needs_text: bool | None = None,
                trainable: bool | None = None) -> list[str]:
    """Names of the registered models, in registry order, optionally of one protocol, text need or trainability."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise DataError(f"protocol={protocol!r} is unknown; choose one of {PROTOCOLS}")
    return [spec.name for spec in MODEL_SPECS.values()
            if (protocol is None or spec.protocol == protocol)
            and (needs_text is None or spec.needs_text == needs_text)
            and (trainable is None or spec.trainable == trainable)]


def model_spec(name: str, protocol: str | None = None) -> ModelSpec:
    """The registered model `name` (of `protocol`, if given); a DataError listing the known names otherwise."""
    spec = MODEL_SPECS.get(name) if isinstance(name, str) else None
    if spec is None or (protocol is not None and spec.protocol != protocol):
        kind = f"{protocol} " if protocol is not None else ""
        raise DataError(f"unknown {kind}model {name!r}; choose from {model_names(protocol)}")
    return spec


def model_specs(names: Sequence[str], protocol: str) -> list[ModelSpec]:
    """The specs of a non-empty list of model names of one protocol; a DataError names every unknown one."""
    if isinstance(names, str) or not names:
        raise DataError(f"models must be a non-empty list of names, got {names!r}; choose from "
                        f"{model_names(protocol)}")
    unknown = [name for name in names if name not in model_names(protocol)]
    if unknown:
        raise DataError(f"unknown {protocol} model(s) {unknown}; choose from {model_names(protocol)}")
    return [MODEL_SPECS[name] for name in names]


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model to the registry (or, with replace=True, replace the one of that name)."""
    if not isinstance(spec, ModelSpec):
        raise DataError(f"register_model needs a ModelSpec, got {type(spec).__name__}")
    if spec.name in MODEL_SPECS and not replace:
        raise DataError(f"model {spec.name!r} is already registered; pick another name or pass replace=True")
    MODEL_SPECS[spec.name] = spec
