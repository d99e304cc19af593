"""The site's Sphinx extension (listed in _config.yml): its own MathJax copy, and launch buttons on the sources.

The built pages load nothing from outside the site, so they read offline. MathJax 2.7 comes from the
PyPI package jupyter-server-mathjax (an extra of ``.[book]``), is copied at build time into
``_build/html/_static/mathjax/`` and never enters git. Sphinx's ``mathjax_path`` points at that copy, and
the MathJax 2 configuration typesets what Sphinx writes (``\\(...\\)`` inline, ``\\[...\\]`` displayed)
in the elements MyST marks for MathJax, with the STIX-Web fonts the package bundles.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

MATHJAX_PACKAGE = "jupyter_server_mathjax"
MATHJAX_FOLDER = "mathjax"  # under the site's _static/
MATHJAX_PATH = f"{MATHJAX_FOLDER}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"  # relative to _static/
SKIPPED = ("localization",)  # translations of MathJax's menu: the site keeps it in English
# the element classes MathJax typesets, as MyST-Parser marks them (its `myst_mathjax_classes` default)
MATH_CLASSES = "tex2jax_process|mathjax_process|math|output_area"


def mathjax_source() -> Path:
    """The folder of the installed jupyter-server-mathjax that holds MathJax.js; a clear error without it."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    folder = Path(spec.origin).parent / "static" if spec is not None and spec.origin else None
    if folder is None or not (folder / "MathJax.js").is_file():
        raise ExtensionError("the site's offline MathJax comes from the PyPI package jupyter-server-mathjax, which "
                             "is not installed: run `pip install jupyter-server-mathjax` (or `make install`)")
    return folder


def mathjax2_config(math_classes: str = MATH_CLASSES) -> dict[str, Any]:
    """MathJax 2 settings: Sphinx's delimiters in the MyST math elements, the bundled fonts, English menus."""
    return {
        "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"], ["$$", "$$"]],
                    "processEscapes": True, "processEnvironments": True, "processClass": math_classes,
                    "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
        # MathJax 2 calls an element of its own output span.math, which the theme clips (overflow: hidden) for
        # MathJax 3: clipped, an inline formula would sit above the line of text
        "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None,
                     "styles": {".MathJax span.math": {"overflow": "visible", "max-width": "none"}}},
        "menuSettings": {"locale": "en"},
        "messageStyle": "none",
    }


def _use_local_mathjax(app: Sphinx, config: Config) -> None:
    """Point Sphinx's MathJax at the site's own copy, configured for MathJax 2."""
    config.mathjax_path = MATHJAX_PATH
    config.mathjax2_config = mathjax2_config(getattr(config, "myst_mathjax_classes", MATH_CLASSES))


def _drop_mathjax3_config(app: Sphinx) -> None:
    """Remove the MathJax 3 settings MyST-Parser adds: MathJax 2 would read `window.MathJax = {...}` as its own."""
    if app.builder.format == "html":
        mathjax_source()  # fail before the build rather than after it
        app.config.mathjax3_config = None


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Copy MathJax into the built site's _static/mathjax/."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / MATHJAX_FOLDER
    shutil.copytree(mathjax_source(), target, ignore=shutil.ignore_patterns(*SKIPPED), dirs_exist_ok=True)


EXECUTED_PREFIX, SOURCE_PREFIX = "book/executed/", "notebooks/"


def _launch_from_sources(app, pagename, templatename, context, doctree) -> None:  # noqa: ANN001
    """Point the launch buttons (Colab) of an executed notebook at its source in notebooks/.

    The book renders the executed copies in book/executed/, which are git-ignored; a launch button
    must open the committed notebook, notebooks/<name>.ipynb, instead.
    """
    if not pagename.startswith(EXECUTED_PREFIX):
        return
    for button in context.get("header_buttons", []):
        if button.get("label") == "launch-buttons":
            for launch in button.get("buttons", []):
                if "url" in launch:
                    launch["url"] = launch["url"].replace(f"/{EXECUTED_PREFIX}", f"/{SOURCE_PREFIX}")


def setup(app: Sphinx) -> dict[str, Any]:
    """Sphinx entry point; each hook runs after the one it amends (MyST-Parser's builder-inited and
    sphinx-book-theme's html-page-context run at priority 500 and 501)."""
    app.connect("config-inited", _use_local_mathjax)
    app.connect("html-page-context", _launch_from_sources, priority=600)
    app.connect("builder-inited", _drop_mathjax3_config, priority=600)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
