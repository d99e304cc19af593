"""The `xscene` command: help everywhere, fetch, describe, and one-line errors (more in test_errors.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xscene_lib.cli import main


@pytest.mark.parametrize("argv", [["--help"], ["fetch", "--help"], ["describe", "--help"], ["run", "--help"],
                                  ["tune", "--help"], ["encode", "--help"]])
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: xscene")
    assert "ml-100k" in out or "fetch" in out
    assert "--debug" in out


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "exit status 2 (bad input), 130 (interrupted) or 1 (anything else)" in out and "XSCENE_DEBUG=1" in out


def test_console_script_is_installed() -> None:
    script = shutil.which("xscene") or str(Path(sys.executable).with_name("xscene"))
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "describe" in result.stdout and "fetch" in result.stdout


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "xscene: error: the following arguments are required: COMMAND; see `xscene " \
        "--help`\n"


def test_unknown_dataset_says_which_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["fetch", "ml-10m", "--data-dir", str(tmp_path), "--offline"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("xscene: error: ") and err.count("\n") == 1
    assert "ml-10m" in err and "ml-100k" in err and "food-kitchen" in err


def test_fetch_reports_the_cache(ml100k_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["fetch", "ml-100k", "--data-dir", str(ml100k_data_dir), "--offline"])
    assert status == 0
    out = capsys.readouterr().out
    assert "ml-100k: ready in" in out
    assert str(ml100k_data_dir / "cache" / "ml-100k") in out


def test_describe_ml1m_age_prints_three_scenario_rows(ml1m, real_data_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["describe", "ml-1m", "--scenarios", "age", "--data-dir", str(real_data_dir), "--offline"])
    assert status == 0
    scenario_table = capsys.readouterr().out.split("\n\n")[0]  # the overlap tables follow
    rows = {line.split()[0]: line for line in scenario_table.splitlines()
            if re.match(r"^(<25|25-34|>=35|all)\s", line)}
    assert "210,747" in rows["<25"] and "395,556" in rows["25-34"] and "393,906" in rows[">=35"]
    assert "1,000,209" in rows["all"] and "6,040" in rows["all"]


def test_describe_unknown_view_lists_the_views(ml100k_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["describe", "ml-100k", "--scenarios", "device", "--data-dir", str(ml100k_data_dir), "--offline"])
    err = capsys.readouterr().err
    assert status == 2
    assert "device" in err and "age" in err and "genre" in err


def test_models_lists_every_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    from xscene_lib.experiments.registry import MODEL_SPECS

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(MODEL_SPECS)
    joint = next(line for line in lines if line.startswith("joint "))
    assert "top-k" in joint and "text, trained" in joint


def test_run_on_a_frames_folder_without_its_files_says_which_are_missing(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--frames", str(tmp_path), "--models", "popularity", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "interactions.parquet" in err and "items.parquet" in err
    assert main(["run", "--frames", str(tmp_path / "absent"), "--smoke"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_frames_and_dataset_are_exclusive_and_per_scenario_is_top_k_only(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--frames", str(tmp_path), "--dataset", "ml-1m"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    status = main(["run", "--protocol", "click-through", "--per-scenario", "--output", str(tmp_path)])
    assert status == 2 and "--per-scenario" in capsys.readouterr().err
