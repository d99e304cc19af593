"""bench/cold_gate.py: the gates on the id part, by the items' training counts, with known answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cold_gate_bench", ROOT / "bench" / "cold_gate.py")
cold_gate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cold_gate)


def test_each_gate_scales_the_id_part_by_the_training_count() -> None:
    counts = np.array([0, 1, 2, 3, 5, 6, 20, 21])
    gates = cold_gate.gates(counts)
    assert list(gates) == ["as fitted", "id part off at n <= 2", "id part off at n <= 5", "id part off at n <= 20",
                           "id part x n/(n+1)", "id part x n/(n+3)", "text part only"]
    np.testing.assert_array_equal(gates["as fitted"], [0, 1, 1, 1, 1, 1, 1, 1])  # never-seen items have no id part
    np.testing.assert_array_equal(gates["id part off at n <= 5"], [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(gates["id part off at n <= 20"], [0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(gates["id part x n/(n+3)"], [0, 1 / 4, 2 / 5, 1 / 2, 5 / 8, 6 / 9, 20 / 23, 21 / 24])
    np.testing.assert_array_equal(gates["text part only"], np.zeros(8))
    assert all(gate.dtype == np.float32 and gate.shape == counts.shape for gate in gates.values())
