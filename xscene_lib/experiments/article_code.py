"""The article's code (its section 5.2) as printed, and an audit of how and where it fails.

The listing is TensorFlow/Keras with Hugging Face transformers. It is examined three ways, and every finding says
which one produced it:

- static analysis: `audit` parses the listing with `ast` and checks names, inputs and layer calls;
- a run as printed: `run_as_printed` executes the listing as a script in this interpreter; the libraries that are
  absent here (TensorFlow) or lack the listing's classes (transformers >= 5 has no TFBertModel) can be stood in
  for by mock modules, so each run gets one step further and stops at the next real error;
- reproduction in PyTorch: `ListingModel` is the listing's `create_joint_model`, layer for layer, with Keras's
  semantics (Keras's Embedding casts a float input to int32 before the look-up), so its shapes, parameter counts
  and outputs are those of the Keras model; Keras's own error messages are quoted, not produced.
"""

from __future__ import annotations

import ast
import builtins
import traceback
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import MagicMock

import pandas as pd
import torch

from xscene_lib.text.encoder import DEFAULT_MODEL, locate_model

# Section 5.2 "源代码详细实现" of the Chinese article the book follows (see the Preface), kept verbatim in
# article_listing.txt because it is the object under study. Line numbers in the findings count from its first line.
LISTING = (Path(__file__).with_name("article_listing.txt")).read_text(encoding="utf-8")

KERAS_INPUT_COUNT_ERROR = 'ValueError: Layer "model" expects 1 input(s), but it received 2 input tensors.'
KERAS_SPLIT_ERROR = "ValueError: `validation_split` is only supported for Tensors or NumPy arrays"


class ListingError(ValueError):
    """A listing that cannot be audited (not Python); the message says where it fails to parse."""


@dataclass(frozen=True)
class Finding:
    """One problem of the listing: where it is, what goes wrong and how that was established."""

    line: int  # 1-based line in the listing
    code: str  # that line, stripped
    problem: str
    evidence: str  # one of EVIDENCE


EVIDENCE = ("run as printed", "static analysis", "reproduced in PyTorch")  # summary() quotes the first one present


# --- static analysis ------------------------------------------------------------------------------


def audit(listing: str = LISTING) -> list[Finding]:
    """The listing's problems that static analysis finds, in line order."""
    tree = _parsed(listing)
    lines = listing.splitlines()
    found = [*_undefined_names(tree), *_tensorflow_apis(tree), *_embedding_of_float_input(tree),
             *_dot_with_itself(tree), *_input_count_mismatch(tree), *_keyword_problems(tree)]
    return [Finding(line, lines[line - 1].strip(), problem, "static analysis") for line, problem in sorted(found)]


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """The findings as a table, one row each."""
    return pd.DataFrame([vars(finding) for finding in findings], columns=["line", "code", "problem", "evidence"])


def summary(findings: list[Finding]) -> pd.DataFrame:
    """One row per line of the listing: every way its problem was established, and the first one's words."""
    table = findings_table(findings)
    table = table.assign(rank=table["evidence"].map(EVIDENCE.index)).sort_values(["line", "rank"], kind="stable")
    return table.groupby("line", as_index=False).agg(
        code=("code", "first"), evidence=("evidence", lambda kinds: " + ".join(dict.fromkeys(kinds))),
        problem=("problem", "first"))


def reproduced(line: int, error: str, listing: str = LISTING) -> Finding:
    """A finding for a listing line whose failure was reproduced in PyTorch, with `error` as the problem."""
    lines = listing.splitlines()
    if not 1 <= line <= len(lines):
        raise ListingError(f"line {line} is outside the listing (lines 1 to {len(lines)})")
    return Finding(line, lines[line - 1].strip(), error, "reproduced in PyTorch")


def _parsed(listing: str) -> ast.Module:
    if not isinstance(listing, str):
        raise ListingError(f"the listing must be Python source text (a str), got {type(listing).__name__}")
    try:
        return ast.parse(listing)
    except SyntaxError as error:
        raise ListingError(f"the listing is not valid Python: {error.msg} at line {error.lineno}; "
                           f"pass the code exactly as printed") from error


def _call_name(node: ast.AST) -> str:
    """The called name of a call node: `Embedding` for Embedding(...) and tf.keras.layers.Embedding(...)."""
    function = node.func if isinstance(node, ast.Call) else node
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")


def _bound_names(nodes: list[ast.stmt]) -> set[str]:
    """Names that statements bind: assignment targets, imports, definitions."""
    names = set()
    for node in (child for statement in nodes for child in ast.walk(statement)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _undefined_names(tree: ast.Module) -> list[tuple[int, str]]:
    """Names read where nothing defines them: NameError when the line runs."""
    found = []
    defined = set(dir(builtins)) | {"__name__"}
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    globals_ = defined | _bound_names([n for n in tree.body if not isinstance(n, ast.If)])  # not the main block
    for function in functions:
        local = {a.arg for a in function.args.args} | _bound_names(function.body)
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local | globals_:
                found.append((node.lineno, f"`{function.name}` reads `{node.id}`, which it neither receives nor "
                                           f"assigns{_assigned_from(tree, node.id, function.name)}: NameError"))
    statements = [s for s in tree.body if not isinstance(s, ast.FunctionDef)]
    while statements:  # module level, in execution order; the `if __name__ == "__main__"` body is flattened
        statement = statements.pop(0)
        if isinstance(statement, ast.If):
            statements[:0] = statement.body
            statement = statement.test
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in defined | globals_:
                found.append((node.lineno, f"`{node.id}` is read before anything assigns it: NameError"))
        defined |= _bound_names([statement]) if isinstance(statement, ast.stmt) else set()
    return found


def _assigned_from(tree: ast.Module, name: str, function: str) -> str:
    """', and the only global of that name is assigned from this function's own result' where that is so."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _call_name(node.value) == function \
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return f"; the only `{name}` is the global that line {node.lineno} assigns from this call's result"
    return ""


def _tensorflow_apis(tree: ast.Module) -> list[tuple[int, str]]:
    """Imports of TensorFlow and of transformers' TensorFlow classes."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorflow" for a in node.names) or \
                isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tensorflow":
            found.append((node.lineno, "needs TensorFlow; where it is not installed: ModuleNotFoundError"))
        elif isinstance(node, ast.ImportFrom) and any(a.name.startswith("TF") for a in node.names):
            names = ", ".join(a.name for a in node.names if a.name.startswith("TF"))
            found.append((node.lineno, f"{names}: a TensorFlow class that transformers 5 no longer ships: ImportError"))
    return found


def _embedding_of_float_input(tree: ast.Module) -> list[tuple[int, str]]:
    """An Embedding layer called on a float `Input` (Keras's default dtype is float32)."""
    floats = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
              and _call_name(node.value) == "Input" and not any(k.arg == "dtype" for k in node.value.keywords)
              for target in node.targets if isinstance(target, ast.Name)}
    return [(node.lineno, "an Embedding looks up integer ids, but its input is a float Input of width input_dim: "
                          "Keras casts it to int32, so every pooled value in (-1, 1) becomes id 0")
            for node in ast.walk(tree) if isinstance(node, ast.Call) and _call_name(node.func) == "Embedding"
            and any(isinstance(arg, ast.Name) and arg.id in floats for arg in node.args)]


def _dot_with_itself(tree: ast.Module) -> list[tuple[int, str]]:
    """A Dot layer applied to the same tensor twice."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node.func) == "Dot" and node.args \
                and isinstance(node.args[0], ast.List) and len(node.args[0].elts) == 2:
            first, second = (ast.dump(element) for element in node.args[0].elts)
            if first == second:
                found.append((node.lineno, "the dot product of a tensor with itself: no user-item pair enters the "
                                           "model, and the result is a Gram matrix, not a similarity"))
    return found


def _input_count_mismatch(tree: ast.Module) -> list[tuple[int, str]]:
    """`predict`/`fit` called with a list of n inputs on a model built with a different number of `Input`s."""
    counts = [sum(_call_name(n) == "Input" for n in ast.walk(f) if isinstance(n, ast.Call))
              for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
              and any(isinstance(n, ast.Call) and _call_name(n) == "Model" for n in ast.walk(f))]
    if len(counts) != 1:  # no model, or several: nothing to compare against
        return []
    return [(node.lineno, f"the model has {counts[0]} Input but is given a list of {len(node.args[0].elts)}: "
                          f"Keras refuses it ({KERAS_INPUT_COUNT_ERROR})")
            for node in ast.walk(tree) if isinstance(node, ast.Call) and _call_name(node.func) in ("predict", "fit")
            and node.args and isinstance(node.args[0], (ast.List, ast.Tuple))
            and len(node.args[0].elts) != counts[0]]


def _keyword_problems(tree: ast.Module) -> list[tuple[int, str]]:
    """validation_split on data that are not arrays, and a Chinese checkpoint for the book's English texts."""
    found = []
    for node in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        if any(k.arg == "validation_split" for k in node.keywords):
            found.append((node.lineno, "Keras accepts validation_split only for tensors or NumPy arrays, not Python "
                                       f"lists ({KERAS_SPLIT_ERROR}), and holds out the last rows, unshuffled"))
        if _call_name(node.func) == "from_pretrained" and node.args and isinstance(node.args[0], ast.Constant) \
                and "chinese" in str(node.args[0].value):
            found.append((node.lineno, f"{node.args[0].value!r} is pre-trained on Chinese text; the book's item "
                                       "texts are English"))
    return found


# --- the listing, run -------------------------------------------------------------------------------


def run_as_printed(listing: str = LISTING, stand_ins: tuple[str, ...] = (), **given: object) -> Finding | None:
    """Run the listing as a script (`__main__`), with mock modules for `stand_ins` and the `given` globals defined.

    Returns where it stopped and the exception it raised, or None when it ran to the end.
    """
    _parsed(listing)  # a clear error for text that is not Python
    code = compile(listing, "<article listing>", "exec")

    def importer(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in stand_ins:
            return MagicMock(name=name)
        return builtins.__import__(name, *args, **kwargs)

    namespace = {"__name__": "__main__", "__builtins__": {**vars(builtins), "__import__": importer}, **given}
    try:
        exec(code, namespace)  # noqa: S102 - running the listing is the point
    except Exception as error:  # noqa: BLE001 - any error of the listing is the result
        line = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
                if frame.filename == "<article listing>"][-1]
        message = f"{type(error).__name__}: {str(error).split(' (/')[0]}"  # without the library's install path
        return Finding(line, listing.splitlines()[line - 1].strip(), message, "run as printed")
    return None


# --- the listing's model in PyTorch -------------------------------------------------------------------


class ListingModel(torch.nn.Module):
    """The listing's `create_joint_model(input_dim, hidden_dim)`, layer for layer, with Keras's semantics."""

    def __init__(self, input_dim: int = 768, hidden_dim: int = 768) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(input_dim, hidden_dim)  # Embedding(input_dim, hidden_dim)
        self.dense = torch.nn.Linear(hidden_dim * hidden_dim, 1)  # Dense(1) on the flattened (hidden, hidden) map
        torch.nn.init.uniform_(self.embedding.weight, -0.05, 0.05)  # Keras's defaults: uniform(-0.05, 0.05) ...
        torch.nn.init.xavier_uniform_(self.dense.weight)  # ... and Glorot-uniform weights, zero bias
        torch.nn.init.zeros_(self.dense.bias)

    def steps(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's output for float inputs. shape: (B, input_dim) in, (B, 1) out."""
        ids = inputs.to(torch.int32)  # (B, input_dim): Keras's Embedding casts floats to int32, truncating to 0
        embeddings = self.embedding(ids)  # (B, input_dim, hidden)
        dot_product = torch.einsum("bij,bik->bjk", embeddings, embeddings)  # Dot(axes=1): (B, hidden, hidden)
        flattened = dot_product.flatten(1)  # (B, hidden * hidden)
        outputs = torch.sigmoid(self.dense(flattened))  # (B, 1)
        return {"inputs": inputs, "ids (cast to int32)": ids, "embeddings": embeddings, "dot_product": dot_product,
                "flattened": flattened, "outputs": outputs}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's prediction, one sigmoid per input row. shape: (B, 1)."""
        return self.steps(inputs)["outputs"]


def shapes(steps: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Shape and dtype of each step's output, and how far any example's output lies from the first example's."""
    return pd.DataFrame([{"step": name, "shape": tuple(value.shape), "dtype": str(value.dtype).replace("torch.", ""),
                          "largest difference from example 0": float((value - value[:1]).detach().abs().max())}
                         for name, value in steps.items()])


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters of each layer and in total."""
    counts = {name: sum(p.numel() for p in layer.parameters()) for name, layer in model.named_children()}
    return {**counts, "total": sum(counts.values())}


def error_of(call: object, *args: object) -> str:
    """The exception that calling `call(*args)` raises, as 'Type: first line of the message' ('' if none)."""
    try:
        call(*args)
    except Exception as error:  # noqa: BLE001 - the error is the result
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
    return ""


def tokens(texts: list[str], model: str = DEFAULT_MODEL) -> pd.DataFrame:
    """Each text's word pieces under an encoder's tokenizer and the share of them that are unknown ([UNK])."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(locate_model(model)[1])
    pieces = [tokenizer.tokenize(text) for text in texts]
    return pd.DataFrame({"text": texts, "tokens": [" ".join(p) for p in pieces],
                         "unknown share": [p.count(tokenizer.unk_token) / max(len(p), 1) for p in pieces]})
