"""Int8 text encoders for CPUs: dynamic quantisation of a BERT model's Linear layers.

Dynamic quantisation scales each layer's whole input by its largest value. BERT's inputs carry a few
outlier channels (tens of times the typical value) that leave typical values only a few int8 steps:
all-MiniLM-L6-v2 then drops to a cosine of 0.88-0.95 with float32. Those channels are computed in
float32 and the rest in int8 (a mixed-precision decomposition), which keeps the cosine near 0.99.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

OUTLIER_RATIO = 4.0  # an input channel peaking above 4x the median channel's peak stays float32
MAX_OUTLIERS = 16  # per layer
CALIBRATION_TEXTS = 32  # seeded random vocabulary, the same every run: vectors depend on nothing else
INT8_SCHEME = f"dynamic int8, per-channel weights, inputs above {OUTLIER_RATIO}x median in float32 (<= {MAX_OUTLIERS})"


def quantize_int8(model: torch.nn.Module, tokenizer: object) -> torch.nn.Module:
    """The model with every Linear layer in dynamic int8 (per-channel weights), outlier inputs in float32."""
    peaks = _input_peaks(model, _calibration_batch(tokenizer))  # layer name -> (K,)
    for name, linear in [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]:
        peak = peaks.get(name, torch.zeros(linear.in_features))
        outliers = torch.nonzero(peak > OUTLIER_RATIO * peak.median()).flatten()  # (k,)
        outliers = outliers[peak[outliers].argsort(descending=True)[:MAX_OUTLIERS]].sort().values
        model.set_submodule(name, _Int8Linear(linear, outliers))
    return model


class _Int8Linear(torch.nn.Module):
    """A Linear layer run in dynamic int8, except for a few input channels computed in float32."""

    def __init__(self, linear: torch.nn.Linear, outliers: torch.Tensor) -> None:
        super().__init__()
        keep = torch.ones(linear.in_features)
        keep[outliers] = 0.0
        self.register_buffer("keep", keep)  # (K,) zero at the outlier channels
        self.register_buffer("outliers", outliers)  # (k,)
        self.register_buffer("outlier_weight", linear.weight.detach()[:, outliers].clone())  # (N, k)
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao, not a dependency
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
            self.int8 = torch.ao.quantization.quantize_dynamic(
                torch.nn.Sequential(linear), {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig})[0]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """shape: (..., K) -> (..., N)."""
        if not len(self.outliers):
            return self.int8(inputs)
        return self.int8(inputs * self.keep) + inputs[..., self.outliers] @ self.outlier_weight.T


def _calibration_batch(tokenizer: object) -> dict[str, torch.Tensor]:
    """Texts of seeded random vocabulary tokens, tokenised as usual; shape: each (CALIBRATION_TEXTS, T)."""
    generator = np.random.default_rng(0)
    texts = [tokenizer.decode(generator.integers(0, len(tokenizer), 30), skip_special_tokens=True) or "a"
             for _ in range(CALIBRATION_TEXTS)]
    return tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")


def _input_peaks(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The largest absolute input of each channel of each Linear layer over one batch; shape: name -> (K,)."""
    peaks: dict[str, torch.Tensor] = {}

    def record(name: str, inputs: torch.Tensor) -> None:
        peak = inputs.detach().abs().reshape(-1, inputs.shape[-1]).amax(dim=0)  # (K,)
        peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak

    hooks = [module.register_forward_hook(lambda _, inputs, __, name=name: record(name, inputs[0]))
             for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    return peaks
