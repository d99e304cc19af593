"""Every failure ends in one clear line: the CLI's error boundary and folder checks, the library's argument checks."""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xscene_lib import cli
from xscene_lib.cli import main
from xscene_lib.data.loading import FetchError
from xscene_lib.data.validation import DataError
from xscene_lib.models import Popularity
from xscene_lib.models.scenario_weights import blended_ranks, tune_scenario_weights
from xscene_lib.text.encoder import TextEncoder

TRAIN = pd.DataFrame([(1, 10, "a"), (1, 11, "a"), (2, 10, "a"), (2, 12, "b"), (3, 12, "b"), (3, 11, "b")],
                     columns=["user_id", "item_id", "scenario"])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, which must be one `xscene: error:` line and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xscene: error: "), err
    return lines[0]


@pytest.fixture()
def no_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every command that does work by one that records its name: nothing may start before the checks."""
    started: list[str] = []
    for name in ("_fetch", "_run", "_tune", "_encode"):
        monkeypatch.setattr(cli, name, lambda args, name=name: started.append(name))
    return started


def raising(error: BaseException):
    """A command that fails with `error`."""
    def command(args: argparse.Namespace) -> None:
        raise error
    return command


# --- folders checked before any work -----------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["run", "--output", "{file}", "--smoke"],
    ["run", "--output", "{file}/results", "--smoke"],
    ["run", "--data-dir", "{file}", "--smoke"],
    ["tune", "--model", "bpr", "--trials", "1", "--storage", "{file}/tuning"],
    ["tune", "--model", "bpr", "--trials", "1", "--configs", "{file}"],
    ["encode", "--data-dir", "{file}"],
    ["fetch", "ml-100k", "--data-dir", "{file}/data"],
])
def test_a_folder_that_is_a_file_fails_in_one_line_before_any_work(
        argv: list[str], tmp_path: Path, no_run: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    assert main([part.format(file=file) for part in argv]) == cli.EXIT_BAD_INPUT
    line = one_error_line(capsys)
    assert f"{file} is a file, not a folder" in line and "choose another folder" in line
    assert no_run == []


@pytest.mark.parametrize("code, advice", [(errno.EROFS, "read-only"), (errno.ENOSPC, "free disk space"),
                                          (errno.EACCES, "change its permissions")])
def test_an_unwritable_folder_fails_in_one_line_before_any_work(
        code: int, advice: str, tmp_path: Path, no_run: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def refused(**kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(kwargs["dir"]))

    monkeypatch.setattr(cli.tempfile, "mkstemp", refused)
    assert main(["run", "--output", str(tmp_path / "new" / "results"), "--smoke"]) == cli.EXIT_BAD_INPUT
    line = one_error_line(capsys)
    assert f"cannot write in {tmp_path} ({os.strerror(code)})" in line and advice in line
    assert no_run == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path: Path, no_run: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path.chmod(0o500)
    try:
        assert main(["run", "--output", str(tmp_path / "results")]) == cli.EXIT_BAD_INPUT
    finally:
        tmp_path.chmod(0o700)
    assert "cannot write in" in one_error_line(capsys) and no_run == []


def test_writable_folders_pass_and_leave_nothing_behind(tmp_path: Path, no_run: list[str]) -> None:
    output = tmp_path / "out" / "results"
    assert main(["run", "--output", str(output), "--data-dir", str(tmp_path), "--smoke"]) == 0
    assert no_run == ["_run"]
    assert list(tmp_path.iterdir()) == []  # neither probe files nor folders created by the check


# --- the error boundary ------------------------------------------------------------------------


@pytest.mark.parametrize("error, status, words", [
    (DataError("frames lack column 'rating'; add it"), cli.EXIT_BAD_INPUT, "frames lack column 'rating'; add it"),
    (FetchError("could not fetch ml-100k from any source:\n  - local: no files\n  - mirror: no folder\n"
                "What to do: set XSCENE_MIRROR."), cli.EXIT_FAILED,
     "from any source: local: no files; mirror: no folder; What to do: set XSCENE_MIRROR."),
    (OSError(errno.ENOSPC, "No space left on device", "results/runs/x.parquet"), cli.EXIT_FAILED,
     "No space left on device: results/runs/x.parquet; free disk space"),
    (PermissionError(errno.EACCES, "Permission denied", "data/cache"), cli.EXIT_FAILED,
     "Permission denied: data/cache; you may not write there"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "configs/x.toml"), cli.EXIT_FAILED,
     "Is a directory: configs/x.toml; a folder is where a file was expected"),
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED, "interrupted; run the same command again"),
    (RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"), cli.EXIT_FAILED,
     "unexpected RuntimeError: CUDA out of memory. Tried to allocate 2 GiB; rerun with --debug"),
    (ZeroDivisionError(), cli.EXIT_FAILED, "unexpected ZeroDivisionError: no message"),
])
def test_every_failure_is_one_line_with_its_exit_status(error: BaseException, status: int, words: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_describe", raising(error))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert main(["describe", "ml-100k"]) == status
    assert words in one_error_line(capsys)


@pytest.mark.parametrize("argv, env", [(["--debug", "describe", "ml-100k"], None),
                                       (["describe", "ml-100k", "--debug"], None),
                                       (["describe", "ml-100k"], "1")])
def test_debug_shows_the_traceback(argv: list[str], env: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_describe", raising(DataError("bad frame")))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(cli.DEBUG_ENV, env)
    with pytest.raises(DataError, match="bad frame"):
        main(argv)


def test_xscene_debug_0_keeps_the_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_describe", raising(DataError("bad frame")))
    monkeypatch.setenv(cli.DEBUG_ENV, "0")
    assert main(["describe", "ml-100k"]) == cli.EXIT_BAD_INPUT
    assert one_error_line(capsys) == "xscene: error: bad frame"


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--seeds", "three"])
    assert exit_info.value.code == cli.EXIT_BAD_INPUT
    line = one_error_line(capsys)
    assert "--seeds: invalid int value: 'three'" in line and line.endswith("see `xscene run --help`")


def test_an_unknown_encoder_is_one_line_before_the_data_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.datasets, "load", raising(AssertionError("the data must not be loaded")))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    encoder = tmp_path / "no-such-encoder"
    assert main(["encode", "--encoder", str(encoder), "--data-dir", str(tmp_path), "--offline"]) == 2
    line = one_error_line(capsys)
    assert f"model {str(encoder)!r} not found" in line and "Use the packaged default" in line


def run_with_closed_stdout(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `xscene ARGV` writing into a pipe whose reader has already gone, as `xscene ... | head -1` ends."""
    script = shutil.which("xscene") or str(Path(sys.executable).with_name("xscene"))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        env = {key: value for key, value in os.environ.items() if key != cli.DEBUG_ENV}
        return subprocess.run([script, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              env=env)
    finally:
        os.close(write_end)


def test_a_closed_pipe_exits_quietly() -> None:
    result = run_with_closed_stdout(["models"])
    assert result.returncode == cli.EXIT_FAILED
    assert result.stderr == ""


def test_a_closed_pipe_after_describe_exits_quietly(ml100k_data_dir: Path) -> None:
    result = run_with_closed_stdout(["describe", "ml-100k", "--data-dir", str(ml100k_data_dir), "--offline"])
    assert result.returncode == cli.EXIT_FAILED
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert "Exception ignored" not in result.stderr


# --- the library's arguments ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Popularity:
    return Popularity().fit(TRAIN)


BAD_USERS = [("1", "users"), ("abc", "users"), (None, "users"), ([[1, 2], [3]], "users"), ([[1, 2], [3, 4]], "users"),
             ([1, math.nan], "nan at position 1"), ([1, "2"], "'2' at position 1"), ([True], "True at position 0"),
             ([2**64 + 1], "outside the int64 range"), ([1.5], "1.5 at position 0"),
             (pd.Series([1, None], dtype="Int64"), "at position 1")]


@pytest.mark.parametrize("method", ["recommend", "blended_scores", "score", "user_index"])
@pytest.mark.parametrize("users, words", BAD_USERS)
def test_users_of_the_wrong_kind_are_named(model: Popularity, method: str, users: object, words: str) -> None:
    extra = ("a",) if method == "score" else ()
    with pytest.raises(DataError, match="users") as error:
        getattr(model, method)(users, *extra)
    assert words in str(error.value)


def test_whole_float_and_numpy_ids_are_ids(model: Popularity) -> None:
    expected = model.recommend([1, 2], k=2)
    pd.testing.assert_frame_equal(model.recommend(np.array([1.0, 2.0]), k=2), expected)
    pd.testing.assert_frame_equal(model.recommend(pd.Series([1, 2], dtype="uint16"), k=2), expected)
    assert len(model.recommend(3, k=1)) == 1  # one id is one user


@pytest.mark.parametrize("k", [0, -1, "3", 2.5, None, True])
def test_k_of_the_wrong_kind_is_named(model: Popularity, k: object) -> None:
    with pytest.raises(DataError, match=r"^k must be a positive integer"):
        model.recommend([1], k=k)


@pytest.mark.parametrize("weights, words", [
    ({"a": "0.5", "b": 0.5}, "scenario_weights['a'] must be a finite number >= 0, got '0.5'"),
    ({"a": None}, "scenario_weights['a'] must be a finite number >= 0, got None"),
    ({"a": -1.0, "b": 2.0}, "scenario_weights['a'] must be a finite number >= 0, got -1.0"),
    ({"a": math.inf}, "got inf"),
    ({"a": math.nan}, "got nan"),
    ({"a": 0, "b": 0}, "not all zero"),
    ({"c": 1.0}, "unknown scenario(s) 'c'"),
    ("histroy", "scenario_weights='histroy' is unknown"),
    (np.array([0.5, 0.5]), "must be None, 'history', 'uniform' or a mapping"),
    ([("a", 1.0)], "must be None, 'history', 'uniform' or a mapping"),
])
def test_scenario_weights_of_the_wrong_kind_are_named(model: Popularity, weights: object, words: str) -> None:
    for call in (lambda: model.recommend([1], scenario_weights=weights),
                 lambda: model.blended_scores([1], scenario_weights=weights)):
        with pytest.raises(DataError) as error:
            call()
        assert words in str(error.value)


@pytest.mark.parametrize("column, values, words", [
    ("user_id", ["1", "2"], "targets['user_id']"), ("item_id", [10.0, math.nan], "targets['item_id']"),
])
def test_blended_ranks_names_ids_of_the_wrong_kind(model: Popularity, column: str, values: list[object],
                                                   words: str) -> None:
    targets = pd.DataFrame({"user_id": [1, 2], "item_id": [12, 11]}).assign(**{column: values})
    with pytest.raises(DataError, match=r"blended_ranks") as error:
        blended_ranks(model, targets)
    assert words in str(error.value)
    with pytest.raises(DataError, match=r"seen\[0\]\['"):
        blended_ranks(model, targets.assign(user_id=[1, 2], item_id=[12, 11]), seen=[targets])
    with pytest.raises(DataError, match="seen must be a list of frames"):
        blended_ranks(model, targets.assign(user_id=[1, 2], item_id=[12, 11]), seen=TRAIN)


@pytest.mark.parametrize("grid, words", [
    (None, "grid must be a list"), (0.5, "grid must be a list"), ("0.5", "grid must be a list"),
    ([0, "0.5", 1], "grid[1] must be a number between 0 and 1, got '0.5'"), ([0, None, 1], "grid[1]"),
    ([0, 1.5], "grid[1]"), ([0, math.inf], "grid[1]"), ([[0, 1], [0]], "grid must be a list"),
])
def test_tune_scenario_weights_names_a_bad_grid(model: Popularity, grid: object, words: str) -> None:
    valid = pd.DataFrame([(1, 12, "b")], columns=["user_id", "item_id", "scenario"])
    with pytest.raises(DataError) as error:
        tune_scenario_weights(model, TRAIN, valid, grid=grid)
    assert words in str(error.value)


def test_tune_scenario_weights_names_ids_of_the_wrong_kind(model: Popularity) -> None:
    valid = pd.DataFrame([("one", 12, "b")], columns=["user_id", "item_id", "scenario"])
    with pytest.raises(DataError, match=r"valid\['user_id'\].*'one' at position 0"):
        tune_scenario_weights(model, TRAIN, valid)


@pytest.mark.parametrize("texts, words", [
    (None, "texts must be a list of strings"), (5, "texts must be a list of strings"),
    ("toy story", "single string; wrap it"), (b"toy story", "text.decode('utf-8')"),
    ([b"toy story"], "position 0 is b'toy story' (bytes), not a string; decode it first"),
    (["a", 3], "position 1 is 3 (int)"), ({"toy story"}, "ordered list of strings, got a set"),
    ({"toy story": 1}, "ordered list of strings, got a dict"),
    (pd.Series(["toy story", None], dtype=object), "position 1 is None (NoneType), not a string; fill or drop"),
    (pd.Series(["toy story", math.nan]), "position 1 is nan (float), not a string; fill or drop missing texts"),
    (pd.Series([math.nan, math.nan]), "texts must hold strings, got a Series of dtype float64"),
])
def test_encode_names_texts_of_the_wrong_kind(texts: object, words: str) -> None:
    encoder = TextEncoder(cache=False)  # the checks come before the model is loaded
    with pytest.raises(DataError) as error:
        encoder.encode(texts)
    assert words in str(error.value)
    assert not hasattr(encoder, "_model")
