"""The audit of the article's listing: static findings, runs as printed, and the PyTorch reproduction."""

from __future__ import annotations

import pytest
import torch

from xscene_lib.experiments import article_code
from xscene_lib.experiments import ListingError, ListingModel, audit, run_as_printed
from xscene_lib.experiments.article_code import LISTING


def _problems_at(findings: list[article_code.Finding], line: int) -> str:
    return " | ".join(f.problem for f in findings if f.line == line)


def test_listing_is_the_article_code() -> None:
    lines = LISTING.splitlines()
    assert len(lines) == 56
    assert lines[0] == "import tensorflow as tf" and lines[-1] == "    print(scores)"
    assert lines[19] == "    embeddings = Embedding(input_dim, hidden_dim)(inputs)"


def test_audit_finds_the_known_problems_at_their_lines() -> None:
    findings = audit()
    assert [f.line for f in findings] == [1, 2, 3, 8, 20, 21, 30, 36, 42, 45, 46]
    assert {f.evidence for f in findings} == {"static analysis"}
    assert "`processed_data`" in _problems_at(findings, 8) and "line 42" in _problems_at(findings, 8)
    assert "`raw_data`" in _problems_at(findings, 42)
    assert "1 Input" in _problems_at(findings, 36) and "list of 2" in _problems_at(findings, 36)
    assert "id 0" in _problems_at(findings, 20)
    assert "itself" in _problems_at(findings, 21)
    assert "TFBertModel" in _problems_at(findings, 3)
    assert findings[4].code == "embeddings = Embedding(input_dim, hidden_dim)(inputs)"


def test_audit_of_correct_code_finds_nothing() -> None:
    code = ("import numpy as np\nLIMIT = 3\n\ndef top(scores):\n    order = np.argsort(scores)\n"
            "    return order[:LIMIT]\n\nif __name__ == '__main__':\n    data = [3, 1, 2]\n    print(top(data))\n")
    assert audit(code) == []


def test_audit_checks_generalise_to_other_code() -> None:
    code = ("from tensorflow import keras\n"
            "def build():\n"
            "    a = keras.Input(shape=(4,))\n    b = keras.Input(shape=(4,))\n"
            "    return keras.Model([a, b], keras.layers.Dot(axes=1)([a, b]))\n"
            "model = build()\nmodel.predict([x])\n")
    findings = audit(code)
    assert [f.line for f in findings] == [1, 7, 7]  # the import; `x` undefined; 1 input given to a 2-input model
    assert "list of 1" in findings[1].problem + findings[2].problem


@pytest.mark.parametrize("bad", ["def broken(:\n    pass\n", b"import os"])
def test_audit_of_text_that_is_not_python_says_so(bad: object) -> None:
    with pytest.raises(ListingError, match="not valid Python|must be Python source"):
        audit(bad)


def test_runs_as_printed_stop_at_each_successive_error() -> None:
    first = run_as_printed()
    assert (first.line, first.problem) == (1, "ModuleNotFoundError: No module named 'tensorflow'")
    second = run_as_printed(stand_ins=("tensorflow",))
    assert second.line == 3 and second.problem.startswith("ImportError") and "TFBertModel" in second.problem
    third = run_as_printed(stand_ins=("tensorflow", "transformers"))
    assert (third.line, third.problem) == (42, "NameError: name 'raw_data' is not defined")
    fourth = run_as_printed(stand_ins=("tensorflow", "transformers"), raw_data=[])
    assert (fourth.line, fourth.code) == (8, "return processed_data")
    assert {f.evidence for f in (first, second, third, fourth)} == {"run as printed"}


def test_a_listing_that_runs_to_the_end_gives_none() -> None:
    assert run_as_printed("x = 1\nif __name__ == '__main__':\n    y = x + 1\n") is None


def test_float_inputs_collapse_to_id_zero_and_the_output_ignores_the_input() -> None:
    torch.manual_seed(0)
    model = ListingModel(input_dim=8, hidden_dim=8)
    inputs = torch.tanh(torch.randn(5, 8) * 3)  # (5, 8): pooled-like values in (-1, 1), all different
    steps = model.steps(inputs)
    assert steps["ids (cast to int32)"].abs().max() == 0
    assert steps["embeddings"].shape == (5, 8, 8) and steps["dot_product"].shape == (5, 8, 8)
    assert steps["flattened"].shape == (5, 64) and steps["outputs"].shape == (5, 1)
    row = model.embedding.weight[0]  # every example looks up row 0 at all 8 positions: Gram = 8 * row row^T
    torch.testing.assert_close(steps["dot_product"][0], 8 * torch.outer(row, row))
    torch.testing.assert_close(steps["outputs"], steps["outputs"][:1].expand(5, 1))
    table = article_code.shapes(steps)
    assert table.set_index("step").loc["flattened", "largest difference from example 0"] == 0


def test_integer_inputs_do_change_the_output() -> None:
    torch.manual_seed(0)
    model = ListingModel(input_dim=8, hidden_dim=8)
    ids = torch.tensor([[0] * 8, [1, 2, 3, 4, 5, 6, 7, 0]], dtype=torch.float32)
    outputs = model(ids)
    assert not torch.allclose(outputs[0], outputs[1])


def test_parameter_counts_of_the_768_model() -> None:
    counts = article_code.parameter_counts(ListingModel(768, 768))
    assert counts == {"embedding": 768 * 768, "dense": 768 * 768 + 1, "total": 2 * 768 * 768 + 1}
    assert counts["dense"] == 589_825


def test_pytorch_refuses_float_ids_and_two_inputs() -> None:
    inputs = torch.rand(3, 4)
    assert article_code.error_of(torch.nn.Embedding(4, 4), inputs).startswith("RuntimeError")
    assert article_code.error_of(ListingModel(4, 4), inputs, inputs).startswith("TypeError")
    assert article_code.error_of(ListingModel(4, 4), inputs) == ""


def test_summary_keeps_one_row_per_line_strongest_evidence_first() -> None:
    findings = [*audit(), run_as_printed(), article_code.reproduced(36, "TypeError: two inputs")]
    table = article_code.summary(findings).set_index("line")
    assert table.loc[1, "evidence"] == "run as printed + static analysis"
    assert table.loc[1, "problem"].startswith("ModuleNotFoundError")
    assert table.loc[36, "evidence"] == "static analysis + reproduced in PyTorch"
    assert len(table) == len({f.line for f in findings})


def test_reproduced_rejects_a_line_outside_the_listing() -> None:
    with pytest.raises(ListingError, match="outside the listing"):
        article_code.reproduced(57, "error")


def test_the_english_tokenizer_does_not_know_the_article_examples() -> None:
    table = article_code.tokens(["商品A1", "Toy Story (1995)"])
    assert table["unknown share"].iloc[0] > 0.5 and table["unknown share"].iloc[1] == 0
