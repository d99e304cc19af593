"""Build the book's site: execute the notebooks (xscene_lib.execution), then Jupyter Book, then the key-number check.

`build_site` executes every ``notebooks/*.ipynb`` into ``book/executed/``, which is what ``_toc.yml``
points at (Jupyter Book itself never executes anything: ``execute_notebooks: "off"`` in ``_config.yml``),
then runs ``jupyter-book build --warningiserror``, then checks each chapter's key numbers against
``book/key_numbers.json`` (xscene_lib.experiments.key_numbers). `glue` is what the notebooks call to
cite a computed value in their prose.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from xscene_lib.data.store import write_atomically
from xscene_lib.execution import (RECORD_FILE, TIMINGS_FILE, NotebookError, duration,  # noqa: F401 (the API)
                                  execute_notebooks)
from xscene_lib.experiments.key_numbers import KEY_NUMBERS_FILE, check_key_numbers, save_key_numbers
from xscene_lib.experiments.key_numbers import record_key_numbers  # noqa: F401 (the notebooks' import, beside glue)

CITATION_FILE = "citation.md"  # the reproducibility page includes it: BibTeX from CITATION.cff and _config.yml


class _Text(str):
    """A string that shows as itself, without quotes, where the book's prose cites it."""

    def __repr__(self) -> str:
        return str(self)


def glue(name: str, value: object, display: bool = False) -> None:
    """Record a computed value under `name` for the chapter's prose ({glue:}`name`); text shows unquoted."""
    from myst_nb import glue as myst_glue

    myst_glue(name, _Text(value) if isinstance(value, str) else value, display=display)


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
               jobs: int | None = None, progress: bool = True, check_numbers: bool = True) -> Path:
    """Execute the notebooks, build the book at `root` with warnings as errors, check the key numbers; return the HTML.

    `notebooks_dir` and `output_dir` default to ``notebooks/`` and ``book/executed/`` under `root`;
    `jobs` notebooks run at once (default: one per processor, see `execute_notebooks`);
    `path_output` (default: `root`) is where ``_build/`` goes. The run's key numbers go to
    ``key_numbers.json`` in `output_dir`; with `check_numbers` they are compared with the record
    ``book/key_numbers.json`` (a full run without a record writes it), and a drift raises `DataError`.
    """
    started, root = time.perf_counter(), Path(root)
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks"
    output_dir = Path(output_dir) if output_dir is not None else root / "book" / "executed"
    executed = execute_notebooks(smoke, notebooks_dir, output_dir, jobs=jobs, progress=progress,
                                 last_timings=root / "book" / TIMINGS_FILE)
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
