"""Benchmark: the top-k protocol's quality targets, per dataset, from finished runs (nothing is trained here).

For each dataset and view it reads our models' runs (folders written by `xscene run` / `run_experiment`:
`results/<dataset>-<view>`, then the committed record `bench/results/recorded/<dataset>-<view>` for the models
the first lacks) and the peers'
ranks (`bench/peer_recbole.py`'s `<dataset>-<view>.ranks.csv` in `results/peers`, else `bench/results/peers`),
and prints:

- best: the xscene model and the peer with the highest test NDCG@10 over all test rows (ours: the mean of its
  seeds), the ratio ours / peer's (target: >= 1.05), and the difference with its 95% paired bootstrap interval
  over users (target: above zero). Both bests are read off the test split, as the target is stated; nothing
  is chosen with them.
- text: each text-aware model minus its no-text twin (joint, seq-joint), on all test rows and on cold items
  (at most COLD_MAX training interactions in their scenario, the runner's `cold_item` flag), and each
  text-aware model minus text zero-shot on cold items and on items never seen in training: reported whatever
  they show.
- which models ran with tuned settings (ours: the run manifest's model settings; peers: the trials of
  bench/peer_tune.py, from the manifest beside their ranks) and which with their defaults, and the peers whose
  training their epoch cap stopped (rather than early stopping): such a peer may be short of its best.
- cold items: the target that COLD_TARGET_MODEL be at least as good as text zero-shot on cold and never-seen
  items (difference >= 0, the point estimate; its interval is printed above) while being the best of ours
  overall, and which part fails.
- stability: each trained model's standard deviation over seeds with its 95% chi-square interval and the
  spread that row-by-row disagreement between seeds alone gives (`intervals.seed_spread`); on ml-100k, the
  target std <= MAX_SEED_STD for the joint and sequential models, judged on the point estimate (three seeds
  cannot bound a std from above: the interval's top is about six times the estimate).
- the runs' seeds, and what is missing (a dataset without runs or peers says which command makes them).

    python bench/quality.py                                   # the three datasets of the book
    python bench/quality.py --datasets ml-100k --runs results --peers results/peers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from xscene_lib.data import loading as datasets, store
from xscene_lib.evaluation import metrics
from xscene_lib.evaluation.intervals import format_interval, paired_bootstrap, seed_spread
from xscene_lib.experiments.slices import COLD_MAX

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"ml-100k": "age", "ml-1m": "age", "food-kitchen": "domain"}
RUN_DIRS = (ROOT / "results", ROOT / "bench" / "results" / "recorded")
PEER_DIRS = (ROOT / "results" / "peers", ROOT / "bench" / "results" / "peers")
SOURCES = ("local", "mirror", "fallback")
METRIC = "ndcg@10"
TARGET_RATIO = 1.05
TEXT_TWINS = {"joint": "joint-no-text", "seq-joint": "seq-joint-no-text"}  # text-aware model -> its no-text twin
ZERO_SHOT = "text-zero-shot"
COLD_TARGET_MODEL = "seq-joint"  # the cold-item target: it must match text zero-shot on cold and never-seen items
MAX_SEED_STD = {"ml-100k": 0.004}  # the stability target, per dataset
STABILITY_MODELS = ("joint", "sasrec", "seq-joint", "seq-joint-no-text")  # the models it is asked of


def our_rows(folders: list[Path], name: str) -> tuple[pd.DataFrame, list[Path]] | None:
    """Per-row test metrics of every finished (model, seed) run of `name`; a model's runs come from the first
    folder that has them (a live run before a recorded one), and the folders read are returned."""
    frames, read = [], []
    for folder in folders:
        runs = sorted(path for path in (folder / name / "runs").glob("[!.]*")
                      if store.tables_problem(path, ("per_row",)) is None)  # verified runs, not staging copies
        rows = [store.read_tables(path, ("per_row",))[0] for path in runs]
        taken = {model for frame in frames for model in frame["model"].unique()}
        rows = [frame for frame in rows if not set(frame["model"].astype(str)) & taken]
        if rows:
            frames.append(pd.concat(rows, ignore_index=True).astype({"model": str}))
            read.append(folder / name)
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True)
    return rows.assign(scenario=rows["scenario"].astype(str)), read


def peer_rows(folders: list[Path], name: str) -> tuple[pd.DataFrame, Path] | None:
    """Per-row test metrics of the peers' ranks, models named "RecBole <model>", seed 0."""
    for folder in folders:
        path = folder / f"{name}.ranks.csv"
        if path.is_file():
            ranks = pd.read_csv(path)
            rows = metrics.ranking_metrics(ranks).assign(model="RecBole " + ranks["model"].astype(str), seed=0)
            return rows.assign(scenario=rows["scenario"].astype(str)), path
    return None


def peer_notes(manifest: Path) -> dict[str, str]:
    """Each peer's settings (tuned with how many trials, or RecBole's defaults) and, when its epoch cap rather
    than early stopping ended its training, that cap; from the manifest beside its ranks."""
    if not manifest.is_file():
        return {}
    notes = {}
    for model, entry in json.loads(manifest.read_text())["models"].items():
        tuned = entry.get("tuned")
        note = f"tuned, {tuned['n_trials']} trials" if tuned else "default settings"
        if entry.get("stopped_by") == "epoch cap":
            note += f"; stopped by its cap of {entry['config']['epochs']} epochs"
        notes[f"RecBole {model}"] = note
    return notes


def tuned_models(folders: list[Path]) -> set[str]:
    """Our models that ran with tuned settings (a config's table) in any of the run folders' manifests."""
    tuned = set()
    for folder in folders:
        manifest = folder / "manifest.json"
        if manifest.is_file():
            settings = json.loads(manifest.read_text()).get("model_settings") or {}
            tuned |= {model for model, value in settings.items() if value}
    return tuned


def never_seen(dataset: str, view: str) -> pd.DataFrame:
    """(user_id, item_id) of the test rows whose item has no training interaction in any scenario."""
    split = datasets.load(dataset, view, sources=SOURCES, verbose=False).split()
    unseen = ~split.test["item_id"].isin(split.train["item_id"])
    return split.test.loc[unseen, ["user_id", "item_id"]]


def compare(rows: pd.DataFrame, baseline: str, candidate: str, n_resamples: int) -> dict:
    """candidate - baseline in NDCG@10 over the rows' users, with the 95% paired bootstrap interval."""
    both = rows[rows["model"].isin([baseline, candidate])]
    result = paired_bootstrap(both, METRIC, baseline, candidate, by=(), n_resamples=n_resamples).iloc[0]
    return result.to_dict()


def line(label: str, result: dict) -> str:
    """One comparison as text: the two means, the difference and its interval."""
    return (f"  {label:<44} {result['candidate']:.4f} vs {result['baseline']:.4f}: {result['difference']:+.4f} "
            f"{format_interval(result['ci_low'], result['ci_high'])}  (n={int(result['n_units']):,})")


def stability(rows: pd.DataFrame, target: float | None) -> list[str]:
    """The seed spread of every trained model with several seeds, and the stability target where there is one."""
    spread = seed_spread(rows, METRIC).set_index("model")
    spread = spread[(spread["seeds"] > 1) & (spread["row_noise"] > 1e-9)]  # untrained models do not vary
    if spread.empty:
        return ["  seed spread: no model has two seeds or more that differ"]
    lines = ["  seed spread (std over seeds [95% interval], row noise): " + ", ".join(
        f"{m} {r['std']:.4f} [{r['std_low']:.4f}, {r['std_high']:.4f}] ({r['row_noise']:.4f})"
        for m, r in spread.sort_values("std").iterrows())]
    asked = spread[spread.index.isin(STABILITY_MODELS)]
    if target is not None and not asked.empty:
        above = asked.index[asked["std"] > target].tolist()
        lines.append(f"  stability (std <= {target} for {', '.join(asked.index)}): "
                     + ("met" if not above else f"NOT met by {', '.join(above)}"))
    return lines


def report(dataset: str, view: str, run_dirs: list[Path], peer_dirs: list[Path], n_resamples: int) -> list[str]:
    """The lines of one dataset's report."""
    name = f"{dataset}-{view}"
    ours, peers = our_rows(run_dirs, name), peer_rows(peer_dirs, name)
    out = [f"{name}:"]
    if ours is None:
        return out + [f"  no runs of ours in {', '.join(str(d / name) for d in run_dirs)}; "
                      f"`xscene run --dataset {dataset} --scenarios {view} --seeds 3 --output results`"]
    rows, where = ours
    seeds = rows.groupby("model")["seed"].nunique()
    means = rows.groupby(["model", "seed"])[METRIC].mean().groupby("model").mean().sort_values(ascending=False)
    tuned = tuned_models(where)
    out.append(f"  ours ({', '.join(map(str, where))}): "
               + ", ".join(f"{m} {v:.4f} ({seeds[m]} seed(s){', tuned' if m in tuned else ''})"
                           for m, v in means.items()))
    out += stability(rows, MAX_SEED_STD.get(dataset))
    if peers is None:
        out.append(f"  no peer ranks {name}.ranks.csv in {', '.join(map(str, peer_dirs))}; "
                   f"`make peers PEERS_ARGS='--dataset {dataset} --scenarios {view}'`")
    else:
        prows, path = peers
        prows = prows[prows["user_id"].isin(rows["user_id"])]  # a smoke run: its users only
        peer_means = prows.groupby("model")[METRIC].mean().sort_values(ascending=False)
        notes = peer_notes(path.with_name(f"{name}.json"))
        out.append(f"  peers ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}): "
                   + ", ".join(f"{m} {v:.4f}" + (f" ({notes[m]})" if m in notes else "")
                               for m, v in peer_means.items()))
        best, best_peer = means.index[0], peer_means.index[0]
        mine = rows[(rows["model"] == best) & rows["user_id"].isin(prows["user_id"])]
        joined = pd.concat([mine, prows[prows["model"] == best_peer][rows.columns.intersection(prows.columns)]],
                           ignore_index=True)
        result = compare(joined, best_peer, best, n_resamples)
        ratio = result["candidate"] / result["baseline"] if result["baseline"] > 0 else float("inf")
        met = ratio >= TARGET_RATIO and result["ci_low"] > 0
        out.append(line(f"best: {best} - {best_peer}", result))
        out.append(f"  ratio {ratio:.3f} (target >= {TARGET_RATIO}, interval above 0): {'met' if met else 'NOT met'}")
    if not set(TEXT_TWINS) & set(rows["model"]):
        return out + [f"  no text-aware model ({', '.join(TEXT_TWINS)}) among the runs"]
    cold = rows[rows["cold_item"].astype(bool)]
    try:
        unseen = rows.merge(never_seen(dataset, view), on=["user_id", "item_id"])
    except datasets.FetchError as error:  # the split is needed only for the never-seen slice
        out.append(f"  never-seen items skipped: {str(error).splitlines()[0]} (set XSCENE_MIRROR or allow downloads)")
        unseen = rows.iloc[:0]
    against_zero_shot = {}  # slice label -> COLD_TARGET_MODEL - text zero-shot
    for text_model, twin in TEXT_TWINS.items():
        if {text_model, twin} <= set(rows["model"]):
            out.append(line(f"text: {text_model} - {twin}, all rows", compare(rows, twin, text_model, n_resamples)))
            if not cold.empty:
                out.append(line(f"text: {text_model} - {twin}, cold items (<= {COLD_MAX})",
                                compare(cold, twin, text_model, n_resamples)))
        for part, label in ((cold, f"cold items (<= {COLD_MAX})"), (unseen, "never-seen items")):
            if text_model in set(rows["model"]) and ZERO_SHOT in set(part["model"]) and not part.empty:
                result = compare(part, ZERO_SHOT, text_model, n_resamples)
                out.append(line(f"text: {text_model} - {ZERO_SHOT}, {label}", result))
                if text_model == COLD_TARGET_MODEL:
                    against_zero_shot[label] = result
    return out + cold_target(against_zero_shot, means)


def cold_target(against_zero_shot: dict[str, dict], means: pd.Series) -> list[str]:
    """The cold-item target's verdict: COLD_TARGET_MODEL at least text zero-shot's NDCG@10 on each cold slice
    (point estimate) and the best of our models over all rows; each failing part named with its figure."""
    if not against_zero_shot:
        return [f"  cold-item target: not judged ({COLD_TARGET_MODEL} and {ZERO_SHOT} did not both run)"]
    failed = [f"below {ZERO_SHOT} on {label} ({result['difference']:+.4f})"
              for label, result in against_zero_shot.items() if result["difference"] < 0]
    if means.index[0] != COLD_TARGET_MODEL:
        failed.append(f"not the best overall ({means.index[0]} {means.iloc[0]:.4f} vs {means[COLD_TARGET_MODEL]:.4f})")
    return [f"  cold-item target ({COLD_TARGET_MODEL} >= {ZERO_SHOT} on {', '.join(against_zero_shot)}, and best "
            f"overall): " + ("met" if not failed else "NOT met: " + "; ".join(failed))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--runs", nargs="+", type=Path, default=list(RUN_DIRS),
                        help="folders holding <dataset>-<view>/runs/ (each model read from the first that has it)")
    parser.add_argument("--peers", nargs="+", type=Path, default=list(PEER_DIRS),
                        help="folders holding <dataset>-<view>.ranks.csv (the first that has it is read)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval")
    args = parser.parse_args()
    for dataset in args.datasets:
        print("\n".join(report(dataset, DATASETS[dataset], args.runs, args.peers, args.resamples)), flush=True)
    return None


if __name__ == "__main__":
    sys.exit(main())
