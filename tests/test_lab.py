"""`make lab`: JupyterLab starts on notebooks/ with this environment's kernel and lists the chapters."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lab_command(port: int, token: str) -> list[str]:
    """`make lab` where this interpreter is the project's .venv (as under `make test`), else the same server."""
    options = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
               f"--IdentityProvider.token={token}")
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return ["make", "--no-print-directory", "-C", str(ROOT), "lab", f"LAB_OPTIONS={options}"]
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT / 'notebooks'}", *as_root,
            *options.split()]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return response.status, response.read()


def test_make_lab_serves_the_notebooks_with_the_project_kernel(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="JupyterLab comes with the book extra: pip install -e '.[book]'")
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(_lab_command(port, token), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")},
                              start_new_session=True)
    try:
        deadline, listing = time.monotonic() + STARTUP_SECONDS, None
        while listing is None and time.monotonic() < deadline:
            assert server.poll() is None, f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}"
            try:
                listing = json.loads(_get(f"{base}/api/contents?token={token}")[1])
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert listing is not None, f"no answer on {base} within {STARTUP_SECONDS} s"
        served = {entry["name"] for entry in listing["content"]}
        chapters = {path.name for path in (ROOT / "notebooks").glob("*.ipynb")}
        assert chapters and chapters <= served, f"missing from JupyterLab: {sorted(chapters - served)}"
        specs = json.loads(_get(f"{base}/api/kernelspecs?token={token}")[1])
        assert "python3" in specs["kernelspecs"], f"no python3 kernel: {sorted(specs['kernelspecs'])}"
        status, page = _get(f"{base}/lab?token={token}")
        assert status == 200 and b"JupyterLab" in page
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    assert server.returncode is not None
