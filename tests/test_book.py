"""The book: notebook hygiene, a smoke execution of every notebook, the site build and its pages.

The site is built once per session into a temporary copy of the book (the repository's
book/executed/ and _build/ are left alone), with the notebooks in smoke mode and the real ml-100k
from the shared test data folder. Each built page is then checked for error outputs, missing
images, images without alt text and broken internal links, and opened in headless Chromium when
/usr/bin/chromium exists: with the network cut off, it must load nothing from outside the site and
MathJax (the site's own copy) must typeset every formula.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from xscene_lib import book
from xscene_lib.experiments import key_numbers as numbers
from xscene_lib.data import DataError
from xscene_lib.data import loading as datasets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Debian's chromium; XSCENE_CHROMIUM names another Chromium-based browser (e.g. google-chrome on a CI runner)
CHROMIUM = Path(os.environ.get("XSCENE_CHROMIUM", "/usr/bin/chromium"))
VIRTUAL_TIME_MS = 3000  # of page time per Chromium run: MathJax 2 typesets a chapter in well under a second
MAX_CODE_LINES = 15
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
# what pages may include (literalinclude of the library's code, the citation file): linked, not copied
LINKED = ("xscene_lib", "bench", "CITATION.cff", "LICENSE", "pyproject.toml", "environment.yml", "Makefile")

needs_notebooks = pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/ yet")


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


# --- (a) the stored notebooks ------------------------------------------------------------------


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_parameterised(path: Path) -> None:
    """One `parameters` cell that sets `smoke`, no stored outputs, short code cells."""
    cells = json.loads(path.read_text())["cells"]
    parameters = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1, f"{path.name}: {len(parameters)} cells tagged 'parameters', expected exactly one"
    assert "smoke" in _source(parameters[0]), f"{path.name}: the parameters cell does not set `smoke`"
    unnamed = [index for index, cell in enumerate(cells) if not cell.get("id")]
    assert not unnamed, f"{path.name}: cells {unnamed} have no id (nbformat 4.5 needs one per cell)"
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs"), f"{path.name}: cell {index} has stored outputs (clear them)"
        assert cell.get("execution_count") is None, f"{path.name}: cell {index} has an execution count"
        lines = len(_source(cell).strip().splitlines())
        assert lines <= MAX_CODE_LINES, f"{path.name}: code cell {index} has {lines} lines (at most {MAX_CODE_LINES})"


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_installs_from_the_configured_repository(path: Path) -> None:
    """The repository address is written in _config.yml; each notebook's Colab install cell must match it."""
    url = book.repository_url(ROOT)
    cells = [_source(c) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells and "google.colab" in cells[0], f"{path.name}: the first code cell is not the Colab install cell"
    installs = re.findall(r"git\+(https://[^\"' ]+)", cells[0])
    assert installs == [url], f"{path.name}: the Colab cell installs {installs}, _config.yml says {url}"


def test_a_failing_notebook_is_named_with_its_cell(tmp_path: Path) -> None:
    """The error names the notebook and the cell; no executed copy replaces a good one."""
    import nbformat

    cells = [nbformat.v4.new_markdown_cell("# Broken"),
             nbformat.v4.new_code_cell("smoke = False", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("raise ValueError('on purpose' if smoke else 'full')")]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                                              "display_name": "Python 3"}})
    (tmp_path / "in").mkdir()
    nbformat.write(notebook, tmp_path / "in" / "broken.ipynb")
    out = tmp_path / "out"
    with pytest.raises(book.NotebookError, match=r"broken\.ipynb failed in cell \d+.*ValueError: on purpose"):
        book.execute_notebooks(True, tmp_path / "in", out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["broken.failed.ipynb"]


def _write_notebook(folder: Path, name: str, code: str) -> None:
    """A two-cell notebook (parameters, then `code`) in `folder`."""
    import nbformat

    cells = [nbformat.v4.new_code_cell("smoke = False", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell(code)]
    folder.mkdir(exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                                                  "display_name": "Python 3"}}),
                   folder / name)


def test_notebooks_run_side_by_side_on_one_thread_each(tmp_path: Path) -> None:
    """With jobs=2 two kernels run at once, each on one thread; the timings say how they ran."""
    code = ("import os, time, json, torch\nstart = time.time()\ntime.sleep(3)\n"
            "print(json.dumps([start, time.time(), torch.get_num_threads(), os.getcwd()]))")
    for name in ("first.ipynb", "second.ipynb", "third.ipynb"):
        _write_notebook(tmp_path / "in", name, code)
    here = os.getcwd()
    written = book.execute_notebooks(True, tmp_path / "in", tmp_path / "out", jobs=2, progress=False)
    assert os.getcwd() == here  # the command's own working folder is left as it was
    spans = [json.loads("".join(json.loads(p.read_text())["cells"][-1]["outputs"][0]["text"])) for p in written]
    (start_a, end_a, *_), (start_b, end_b, *_) = sorted(spans)[:2]
    assert start_b < end_a and start_a < end_b, f"the first two notebooks did not overlap: {spans}"
    assert {threads for _, _, threads, _ in spans} == {1}
    assert {folder for *_, folder in spans} == {str((tmp_path / "in").resolve())}  # kernels' folder
    timings = json.loads((tmp_path / "out" / book.TIMINGS_FILE).read_text())
    assert timings["jobs"] == 2 and set(timings["seconds"]) == {"first", "second", "third"}
    assert timings["wall_seconds"] > 0  # the overlap above, not this timing, shows that they ran side by side


def test_the_longest_notebooks_of_the_last_run_start_first(tmp_path: Path) -> None:
    """This run's folder's timings first, else the record's (a fresh clone), else by name; new notebooks first."""
    from xscene_lib.execution import _longest_first

    notebooks = [tmp_path / f"{name}.ipynb" for name in ("a", "b", "c", "new")]
    here, record, broken = tmp_path / "here.json", tmp_path / "record.json", tmp_path / "broken.json"
    record.write_text(json.dumps({"smoke": False, "seconds": {"a": 5.0, "b": 60.0, "c": 20.0}}))
    broken.write_text("{not json")
    order = lambda files, smoke=False: [p.stem for p in _longest_first(notebooks, files, smoke)]  # noqa: E731
    assert order([here, record]) == ["new", "b", "c", "a"]  # no timings here: the record's order
    assert order([broken, record]) == ["new", "b", "c", "a"]
    assert order([here, record], smoke=True) == ["a", "b", "c", "new"]  # the record is of full runs: by name
    here.write_text(json.dumps({"smoke": False, "seconds": {"a": 90.0, "b": 1.0, "c": 2.0, "new": 3.0}}))
    assert order([here, record]) == ["a", "new", "c", "b"]


def test_after_a_failure_no_new_notebook_starts(tmp_path: Path) -> None:
    """One at a time: the first notebook fails, so the second never runs; the error names the first."""
    _write_notebook(tmp_path / "in", "a_broken.ipynb", "raise ValueError('on purpose')")
    _write_notebook(tmp_path / "in", "b_fine.ipynb", "print('ran')")
    with pytest.raises(book.NotebookError, match=r"a_broken\.ipynb failed.*ValueError: on purpose"):
        book.execute_notebooks(True, tmp_path / "in", tmp_path / "out", jobs=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_broken.failed.ipynb"]


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_a_bad_number_of_jobs_is_refused(tmp_path: Path, jobs) -> None:
    _write_notebook(tmp_path / "in", "fine.ipynb", "print('ran')")
    with pytest.raises(DataError, match="jobs"):
        book.execute_notebooks(True, tmp_path / "in", tmp_path / "out", jobs=jobs, progress=False)


# --- (b) smoke execution and the site build -----------------------------------------------------


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory, ml100k_data_dir: Path) -> Path:
    """A temporary copy of the book, its notebooks smoke-executed and the site built with -W."""
    if not NOTEBOOKS:
        pytest.skip("no notebooks in notebooks/ yet")
    root = tmp_path_factory.mktemp("book-site")
    for name in BOOK_FILES:
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("executed", ".*"))
    for name in LINKED:
        if (ROOT / name).exists():
            (root / name).symlink_to(ROOT / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(datasets.DATA_ENV, str(ml100k_data_dir))  # the kernels inherit it
        patch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        book.build_site(True, root, notebooks_dir=ROOT / "notebooks", progress=False, check_numbers=False)
    return root


@pytest.fixture(scope="session")
def html_dir(built_book: Path) -> Path:
    return built_book / "_build" / "html"


def _pages(html_dir: Path) -> list[Path]:
    return sorted(p for p in html_dir.rglob("*.html") if not p.relative_to(html_dir).parts[0].startswith("_"))


def test_timings_are_recorded(built_book: Path) -> None:
    timings = json.loads((built_book / "book" / "executed" / book.TIMINGS_FILE).read_text())
    assert timings["smoke"] is True
    assert sorted(timings["seconds"]) == sorted(p.stem for p in NOTEBOOKS)
    assert all(seconds > 0 for seconds in timings["seconds"].values())


def test_the_reproducibility_record_lists_every_chapter_and_the_citation(built_book: Path) -> None:
    executed = built_book / "book" / "executed"
    record = (executed / book.RECORD_FILE).read_text()
    assert "smoke mode" in record and "| torch |" in record
    assert len(re.findall(r"^\| .+ \| \d+ (?:s|min \d+ s) \|$", record, re.M)) == len(NOTEBOOKS)
    citation = (executed / book.CITATION_FILE).read_text()
    assert book.repository_url(ROOT) in citation and "@software{" in citation


def test_executed_notebooks_have_no_error_outputs(built_book: Path) -> None:
    executed = sorted((built_book / "book" / "executed").glob("*.ipynb"))
    assert [p.name for p in executed] == [p.name for p in NOTEBOOKS]
    for path in executed:
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            for output in cell.get("outputs", []):
                assert output.get("output_type") != "error" and "ename" not in output, \
                    f"{path.name}: cell {index} has an error output: {output.get('ename')}: {output.get('evalue')}"


def test_no_progress_bars_or_widget_warnings_in_the_pages(built_book: Path) -> None:
    for path in sorted((built_book / "book" / "executed").glob("*.ipynb")):
        streams = "".join("".join(output.get("text", "")) for cell in json.loads(path.read_text())["cells"]
                          for output in cell.get("outputs", []) if output.get("output_type") == "stream")
        assert "%|" not in streams and "IProgress" not in streams, path.name


def test_the_injected_parameters_stay_off_the_site(built_book: Path) -> None:
    for path in sorted((built_book / "book" / "executed").glob("*.ipynb")):
        cells = [cell for cell in json.loads(path.read_text())["cells"]
                 if "injected-parameters" in cell["metadata"].get("tags", [])]
        assert cells and all("remove-cell" in c["metadata"]["tags"] for c in cells), path.name


def test_every_toc_page_is_built(html_dir: Path) -> None:
    expected = ["index.html", "book/preface.html", "book/reproducibility.html", "search.html"]
    expected += [f"book/executed/{p.stem}.html" for p in NOTEBOOKS]
    missing = [name for name in expected if not (html_dir / name).is_file()]
    assert not missing, f"pages missing from the built site: {missing}"


# --- (c) the built pages ------------------------------------------------------------------------


class _PageParser(HTMLParser):
    """Collects links, images (source and alt text) and error-output blocks of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        classes = attributes.get("class", "").split()
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])
        if tag == "img" and attributes.get("src"):
            self.images.append((attributes["src"], attributes.get("alt", "")))
        if "traceback" in classes or ("output" in classes and "error" in classes):
            self.errors.append(" ".join(classes))


def _local_target(page: Path, reference: str) -> Path | None:
    """The file a relative link or image source points at; None for external or same-page ones."""
    parts = urlsplit(reference)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def test_pages_have_no_errors_missing_images_or_broken_links(html_dir: Path) -> None:
    problems: list[str] = []
    for page in _pages(html_dir):
        parser = _PageParser()
        parser.feed(page.read_text(encoding="utf-8"))
        name = page.relative_to(html_dir)
        problems += [f"{name}: error output ({block})" for block in parser.errors]
        for source, _ in parser.images:
            if source.startswith("data:"):
                continue
            target = _local_target(page, source)
            if target is not None and not target.is_file():
                problems.append(f"{name}: image {source} does not exist")
        for href in parser.links:
            target = _local_target(page, href)
            if target is not None and not target.exists():
                problems.append(f"{name}: link {href} points at a missing file")
    assert not problems, "\n".join(problems)


def test_content_images_carry_alt_text(html_dir: Path) -> None:
    """Every image of the content (Sphinx copies them to _images/) says in words what it shows."""
    problems: list[str] = []
    for page in _pages(html_dir):
        parser = _PageParser()
        parser.feed(page.read_text(encoding="utf-8"))
        for source, alt in parser.images:
            name = Path(unquote(urlsplit(source).path)).name
            if "_images/" in source and (not alt.strip() or name in alt):
                problems.append(f"{page.relative_to(html_dir)}: image {name} has the alt text {alt!r}; give the "
                                "notebook cell that draws it mystnb metadata: image alt, figure caption and name")
    assert not problems, "\n".join(problems)


class _DomParser(HTMLParser):
    """A page as written or as Chromium dumped it: the resources it loads, each Sphinx math element's text."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    LOADING_LINKS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest"}

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []
        self.math: list[dict] = []  # {"text": what is left as text, "typeset": whether MathJax output is inside}
        self._open: list[tuple[str, dict | None]] = []  # the open elements, each with its math element if any

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        classes = attributes.get("class", "").split()
        if tag == "link" and self.LOADING_LINKS & set(attributes.get("rel", "").lower().split()):
            self.resources.append(attributes.get("href", ""))
        elif tag != "a" and attributes.get("src"):
            self.resources.append(attributes["src"])
        inside = [math for _, math in self._open if math is not None]
        if inside and {"MathJax", "MathJax_Display", "MathJax_CHTML"} & set(classes):
            inside[-1]["typeset"] = True
        math = {"text": "", "typeset": False} if {"math", "notranslate"} <= set(classes) else None
        if math is not None:
            self.math.append(math)
        if tag not in self.VOID:
            self._open.append((tag, math))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        inside = [math for _, math in self._open if math is not None]
        if inside and self._open[-1][0] not in ("script", "style"):
            inside[-1]["text"] += data


def test_pages_load_nothing_from_outside_the_site_and_math_from_its_own_mathjax(html_dir: Path) -> None:
    """As written (no browser needed): every script, style sheet and image lies in the site; math loads its MathJax."""
    problems: list[str] = []
    own_mathjax = html_dir / "_static" / "mathjax" / "MathJax.js"
    for page in _pages(html_dir):
        parsed = _DomParser()
        parsed.feed(page.read_text(encoding="utf-8"))
        name = page.relative_to(html_dir)
        problems += [f"{name}: loads {url}, which is outside the site" for url in parsed.resources
                     if _outside(page, html_dir, url)]
        scripts = [(page.parent / unquote(urlsplit(url).path)).resolve() for url in parsed.resources]
        if parsed.math and own_mathjax.resolve() not in scripts:
            problems.append(f"{name}: has math but does not load {own_mathjax.relative_to(html_dir)}")
    if not own_mathjax.is_file():
        problems.append(f"{own_mathjax} is missing: xscene_lib.site_assets copies it at the end of the build")
    assert not problems, "\n".join(problems)


def test_a_missing_mathjax_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from sphinx.errors import ExtensionError

    from xscene_lib import site_assets

    monkeypatch.setattr(site_assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExtensionError, match=r"pip install jupyter-server-mathjax.*make install"):
        site_assets.mathjax_source()


def chromium_command(page: Path, net_log: Path, profile: Path) -> list[str]:
    """Headless Chromium that dumps `page`'s DOM with the network cut off, logging every request to `net_log`."""
    return [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--log-net-log={net_log}",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", page.as_uri()]


def requests_of_the_page(net_log: Path) -> list[str]:
    """The URLs a page asked the network for, from Chromium's NetLog; the browser's own requests left out.

    Files (file:, data:) never reach the network stack, so they are not in the log; the browser's own
    requests (update and time checks, sign-in) are the ones whose initiator is "not an origin".
    """
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = [event["params"]["url"] for event in log["events"] if event["type"] == start
            and "url" in event.get("params", {}) and event["params"].get("initiator") != "not an origin"]
    return list(dict.fromkeys(urls))


def _outside(page: Path, html_dir: Path, url: str) -> bool:
    """Whether a URL the page loads lies outside the built site (data: URLs are part of the page)."""
    parts = urlsplit(url)
    if parts.scheme == "data":
        return False
    if parts.scheme not in ("", "file") or parts.netloc:
        return True
    path = Path(unquote(parts.path)) if parts.scheme == "file" else page.parent / unquote(parts.path)
    return not path.resolve().is_relative_to(html_dir.resolve())


def _landing(page: Path) -> Path:
    """The page Chromium ends on: `page`, or the page its meta refresh sends the browser to (index.html)."""
    refresh = re.search(r'http-equiv="refresh"[^>]*url=([^"]+)"', page.read_text(encoding="utf-8"), re.IGNORECASE)
    return page.parent / unquote(refresh.group(1).strip()) if refresh else page


def _render(page: Path, html_dir: Path, scratch: Path) -> list[str]:
    """Open one page in Chromium; what is wrong with it: no render, a request outside the site, math left raw."""
    name, net_log = page.relative_to(html_dir), scratch / "net-log.json"
    net_log.unlink(missing_ok=True)  # one log per page, never the last page's
    try:
        done = subprocess.run(chromium_command(page, net_log, scratch / "profile"), capture_output=True, text=True,
                              timeout=90)
    except subprocess.TimeoutExpired:
        return [f"{name}: Chromium did not finish within 90 s"]
    dom = done.stdout
    if done.returncode != 0 or "<body" not in dom or "</html>" not in dom:
        return [f"{name}: did not render (exit {done.returncode}): {done.stderr.strip()[-400:]}"]
    problems = [] if 'class="bd-article' in dom or "bd-main" in dom else [f"{name}: rendered without the main content"]
    rendered = _DomParser()
    rendered.feed(dom)
    try:
        outside = requests_of_the_page(net_log)
    except (OSError, ValueError, KeyError) as error:
        return problems + [f"{name}: Chromium left no readable net log at {net_log}: {error!r}"]
    outside += [url for url in rendered.resources if _outside(_landing(page), html_dir, url)]
    problems += [f"{name}: loads {url}, which is outside the site" for url in dict.fromkeys(outside)]
    raw = [math["text"].strip() for math in rendered.math
           if not math["typeset"] or re.search(r"\\[()[\]]|\$\$", math["text"])]
    if raw:
        problems.append(f"{name}: MathJax left {len(raw)} of {len(rendered.math)} formulas untypeset, the first: "
                        f"{raw[0][:120]!r}")
    return problems


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed: pages are not rendered "
                                    "in a browser (.ci/run installs Chromium; on Debian: apt-get install chromium)")


@needs_chromium
def test_pages_render_in_headless_chromium(html_dir: Path, tmp_path: Path) -> None:
    """Each page renders with the network cut off, asks for nothing outside the site and has its math typeset."""
    problems: list[str] = []
    for page in _pages(html_dir):
        problems += _render(page, html_dir, tmp_path)
    assert not problems, "\n".join(problems)


@needs_chromium
def test_the_net_log_names_a_request_outside_the_site(tmp_path: Path) -> None:
    """The page check sees an image from another host, and only that: the browser's own requests are left out."""
    page = tmp_path / "site" / "page.html"
    page.parent.mkdir()
    page.write_text('<html><body><img src="https://example.org/x.png" alt="x"><img src="data:image/gif;base64,'
                    'R0lGODlhAQABAAAAACw=" alt="y"></body></html>', encoding="utf-8")
    problems = _render(page, page.parent, tmp_path)
    assert requests_of_the_page(tmp_path / "net-log.json") == ["https://example.org/x.png"]
    assert "page.html: loads https://example.org/x.png, which is outside the site" in problems


def test_the_api_appendix_documents_every_exported_name(html_dir: Path) -> None:
    """Appendix A: one page per subpackage documents each name of its __all__, with methods, and no private name."""
    import importlib

    pages = {f"api_{stage}.html": f"xscene_lib.{stage}"
             for stage in ("data", "text", "training", "evaluation", "models", "experiments")}
    required = {"api_models.html": ["xscene_lib.models.JointModel.fit"],
                "api_data.html": ["xscene_lib.data.Dataset.from_frames"],
                "api_book_cli.html": ["xscene_lib.book.build_site", "xscene_lib.site_assets.mathjax_source",
                                         "xscene_lib.cli.main"]}
    problems: list[str] = []
    for page in sorted(pages.keys() | required.keys()):
        path = html_dir / "book" / page
        if not path.is_file():
            problems.append(f"{page}: not built")
            continue
        documented = set(re.findall(r'id="(xscene_lib\.[\w.]+)"', path.read_text(encoding="utf-8")))
        expected = list(required.get(page, []))
        if page in pages:
            module = pages[page]
            expected += [f"{module}.{name}" for name in importlib.import_module(module).__all__]
        problems += [f"{page}: {name} is not documented" for name in expected if name not in documented]
        problems += [f"{page}: private name {name} is documented" for name in sorted(documented) if "._" in name]
    assert not problems, "\n".join(problems)


# --- (d) each chapter's key numbers -------------------------------------------------------------


def test_every_chapter_records_its_key_numbers_with_tolerances(built_book: Path) -> None:
    run = json.loads((built_book / "book" / "executed" / numbers.KEY_NUMBERS_FILE).read_text())
    assert run["mode"] == "smoke" and sorted(run["notebooks"]) == sorted(p.stem for p in NOTEBOOKS)
    for name, figures in run["notebooks"].items():
        assert figures and "smoke" in figures, f"{name}: no key numbers recorded"
        for key, figure in figures.items():
            assert sorted(figure) == ["smoke", "tolerance", "value"], f"{name}: {key}: {sorted(figure)}"
            numbers.parse_tolerance(figure["tolerance"])


def test_the_smoke_run_reproduces_the_figures_the_full_record_marks_smoke(built_book: Path) -> None:
    record = ROOT / "book" / numbers.KEY_NUMBERS_FILE
    if not record.exists():
        pytest.skip(f"no recorded key numbers at {record} yet: a full `make book` writes them")
    run = json.loads((built_book / "book" / "executed" / numbers.KEY_NUMBERS_FILE).read_text())
    problems = numbers.compare_key_numbers(json.loads(record.read_text())["notebooks"], run["notebooks"], smoke=True)
    assert not problems, "\n".join(problems)


def _figure(value: object, tolerance: str = "exact", smoke: bool = False) -> dict:
    return {"value": value, "tolerance": tolerance, "smoke": smoke}


RECORDED = {"data": {"users": _figure(943, smoke=True), "ndcg": _figure({"joint": 0.1234, "bpr": 0.1}, "abs 0.01"),
                     "seconds": _figure(12.0, "not checked"), "verdict": _figure(["above zero", 0.05], "rel 0.1")}}


def test_one_drifted_figure_is_named_and_the_others_pass() -> None:
    found = {"data": {"users": _figure(943), "ndcg": _figure({"joint": 0.1300, "bpr": 0.125}, "abs 0.01"),
                      "seconds": _figure(30.0), "verdict": _figure(["above zero", 0.054])}}
    assert numbers.compare_key_numbers(RECORDED, found, smoke=False) == [
        "data: ndcg['bpr']: recorded 0.1, now 0.125 (tolerance abs 0.01)"]
    found["data"]["verdict"] = _figure(["no difference can be told", 0.056])
    assert numbers.compare_key_numbers(RECORDED, found, smoke=False)[1:] == [
        "data: verdict[0]: recorded 'above zero', now 'no difference can be told' (tolerance rel 0.1)",
        "data: verdict[1]: recorded 0.05, now 0.056 (tolerance rel 0.1)"]


def test_a_smoke_run_compares_only_the_figures_marked_smoke() -> None:
    found = {"data": {"users": _figure(900), "ndcg": _figure({"joint": 0.9})}}
    assert numbers.compare_key_numbers(RECORDED, found, smoke=True) == [
        "data: users: recorded 943, now 900 (tolerance exact)"]
    found["data"]["users"] = _figure(943)
    assert numbers.compare_key_numbers(RECORDED, found, smoke=True) == []
    found["data"]["ndcg"] = _figure({"joint": 0.1234})
    assert numbers.compare_key_numbers(RECORDED, {"data": found["data"], "new": {}}, smoke=False) == [
        "new: notebook not in the record", "data: ndcg['bpr']: recorded 0.1, now missing (tolerance abs 0.01)",
        "data: seconds: recorded 12.0, now missing", "data: verdict: recorded ['above zero', 0.05], now missing"]


def test_the_check_records_a_first_full_run_and_names_a_later_drift(tmp_path: Path) -> None:
    record, written = tmp_path / "key_numbers.json", tmp_path / "executed.json"
    assert "not checked" in numbers.check_key_numbers(RECORDED, record, True, written) and not record.exists()
    assert "now the record" in numbers.check_key_numbers(RECORDED, record, False, written)
    assert json.loads(record.read_text()) == {"mode": "full", "notebooks": RECORDED}
    assert "match" in numbers.check_key_numbers(RECORDED, record, False, written)
    drifted = {"data": {**RECORDED["data"], "users": _figure(944)}}
    with pytest.raises(DataError, match=r"(?s)1 key number.*\n  data: users: recorded 943, now 944 .*copy .*executed"):
        numbers.check_key_numbers(drifted, record, True, written)


def test_recording_converts_numpy_and_refuses_unknown_keys_or_tolerances(capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    numbers.record_key_numbers({"n": np.int64(3), "share": np.float32(0.5)}, same_in_smoke=["n"])
    assert '{"n": 3, "share": 0.5}' in capsys.readouterr().out
    with pytest.raises(DataError, match=r"name \['users'\], which are not key numbers"):
        numbers.record_key_numbers({"n": 3}, tolerances={"users": "exact"})
    with pytest.raises(DataError, match="a tolerance is 'exact'"):
        numbers.record_key_numbers({"n": 3}, tolerances={"n": "about 1"})
    with pytest.raises(DataError, match="convert it"):
        numbers.record_key_numbers({"n": object()})

