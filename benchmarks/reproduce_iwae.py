"""Reproduce Table 1 of Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders",
on MNIST: each row (stochastic layers × objective × k) trained with the paper's protocol, its
test log p(x) (K = 5000 on all 10 000 test images) and active units beside the paper's figure.

    MNIST=../shared/data/mnist
    # the full protocol (8 stages, 3280 passes) of two rows, then the table of what is there
    python benchmarks/reproduce_iwae.py --rows 1L-vae-k1 1L-iwae-k5 --data-dir $MNIST
    # a shortened budget: stages 0…4 (121 passes) of every one-layer k = 1 and k = 5 row
    python benchmarks/reproduce_iwae.py --rows 1L-k1 1L-k5 --stages 5 --data-dir $MNIST
    python benchmarks/reproduce_iwae.py --table-only   # the table of what is there, runs nothing
    # three seeds of a row side by side in one process: the table gives mean and sd over seeds
    python benchmarks/reproduce_iwae.py --rows 1L-iwae-k5 --seeds 0 1 2 --stages 3 --data-dir $MNIST

Every row trains in its own run folder under ``--root`` (``pyrovae train --preset burda2015``,
``burda2015-two-layers`` for the 2L rows, with the row's estimator and k), so an interrupted row
resumes where its last checkpoint is: run the same command again. A row already trained to the
budget is only evaluated, and a row already evaluated at that epoch and K is left alone. Results
go to ``--json`` and the table to stdout. "VAE" at k > 1 is the ELBO averaged over k samples
(``elbo`` with k particles); "IWAE" at k = 1 is the same objective as "VAE" at k = 1, so the
table shows that row once for both.

Small models at batch 20 are slowed down badly by intra-op threads when the machine is busy (a
step took 13 ms with two threads beside other work, 2 ms with one): each row runs with
``--threads`` torch threads (default 1); run rows side by side, one process per core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrovae import evaluate_run, resume_run, train_run
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import atomic_write
from pyrovae.inference.schedules import burda_epochs
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.config import preset_config
from pyrovae.runs.folder import CHECKPOINT, CONFIG, read_metrics
from pyrovae.runs.seeds import is_group, read_seeds, resume_seeds, seed_runs, train_seeds

# Burda et al. 2015, Table 1, MNIST: test negative log-likelihood in nats (K = 5000).
PAPER_NLL: dict[tuple[int, str, int], float] = {
    (1, "VAE", 1): 86.76,
    (1, "VAE", 5): 86.47,
    (1, "VAE", 50): 86.35,
    (1, "IWAE", 1): 86.76,
    (1, "IWAE", 5): 85.54,
    (1, "IWAE", 50): 84.78,
    (2, "VAE", 1): 85.33,
    (2, "VAE", 5): 85.01,
    (2, "VAE", 50): 84.78,
    (2, "IWAE", 1): 85.33,
    (2, "IWAE", 5): 83.89,
    (2, "IWAE", 50): 82.90,
}
OBJECTIVES = {"VAE": "elbo", "IWAE": "iwae", "DReG": "iwae-dreg", "STL": "elbo-stl"}
# The preset of each number of stochastic layers.
LAYERS: dict[int, str] = {1: "burda2015", 2: "burda2015-two-layers"}


@dataclass(frozen=True)
class Row:
    layers: int
    objective: str  # a key of OBJECTIVES
    k: int

    @property
    def name(self) -> str:
        return f"{self.layers}L-{self.objective.lower()}-k{self.k}"

    @property
    def paper(self) -> float | None:
        return PAPER_NLL.get((self.layers, self.objective, self.k))


ROWS = {
    r.name: r
    for layers in LAYERS
    for r in [
        *(Row(layers, "VAE", k) for k in (1, 5, 50)),
        *(Row(layers, "IWAE", k) for k in (5, 50)),  # IWAE k = 1 is VAE k = 1
        *(Row(layers, "DReG", k) for k in (5, 50)),
        Row(layers, "STL", 1),
    ]
}


def select(names: list[str]) -> list[Row]:
    """Rows by name; ``1L-k5`` (layers and k) stands for every such row."""
    rows: list[Row] = []
    for name in names:
        found = (
            [ROWS[name]]
            if name in ROWS
            else [r for r in ROWS.values() if f"{r.layers}L-k{r.k}" == name]
        )
        if not found:
            sys.exit(f"reproduce_iwae: unknown row {name!r}; rows: {', '.join(ROWS)}")
        rows += [r for r in found if r not in rows]
    return rows


def config_of(row: Row, epochs: int, seed: int, device: str, train_subset: int | None):
    return preset_config(
        LAYERS[row.layers],
        estimator=OBJECTIVES[row.objective],
        num_particles=row.k,
        epochs=epochs,
        seed=seed,
        device=device,
        train_subset=train_subset,
    )


def train(row: Row, path: Path, epochs: int, args: argparse.Namespace) -> None:
    """Train ``row`` to ``epochs`` passes in ``path``: a new run, or a resume of its folder
    (from its checkpoint, or from pass 0 when it was stopped before its first checkpoint).
    With ``--seeds``, ``path`` is a group: one run per seed, trained side by side."""
    common = {"data_dir": args.data_dir, "download": False, "progress": args.progress}
    if args.seeds is not None:
        train_group(row, path, epochs, args, common)
        return
    if is_group(path):
        raise PyroVAEError(f"{path} holds a group of seeds; pass its --seeds")
    if (path / CONFIG).is_file():
        done = int(load_checkpoint(path)["epoch"]) if (path / CHECKPOINT).is_file() else 0
        if done < epochs:
            print(f"{row.name}: resuming at pass {done} of {epochs}", flush=True)
            resume_run(path, epochs=epochs, **common)
        return
    config = config_of(row, epochs, args.seed, args.device, args.train_subset)
    print(f"{row.name}: training {epochs} passes into {path}", flush=True)
    train_run(config, path, **common)


def train_group(row: Row, path: Path, epochs: int, args, common: dict) -> None:
    if path.exists() and not is_group(path):
        raise PyroVAEError(f"{path} holds a single run; use another --root for --seeds")
    if is_group(path):
        if read_seeds(path) != args.seeds:
            raise PyroVAEError(f"{path} was trained with seeds {read_seeds(path)}")
        done = min(_done(run) for run in seed_runs(path))
        if done < epochs:
            print(f"{row.name}: resuming {len(args.seeds)} seeds at pass {done} of {epochs}")
            resume_seeds(path, epochs=epochs, **common)
        return
    config = config_of(row, epochs, args.seeds[0], args.device, args.train_subset)
    print(f"{row.name}: training {epochs} passes of seeds {args.seeds} into {path}", flush=True)
    train_seeds(config, args.seeds, path, **common)


def _done(run: Path) -> int:
    return int(load_checkpoint(run)["epoch"]) if (run / CHECKPOINT).is_file() else 0


def runs_of(path: Path) -> list[Path]:
    """A row's run folders: its own, or one per seed of a group."""
    return seed_runs(path) if is_group(path) else [path]


EVALUATED = "reproduce_eval.json"  # this script's record of a row's evaluation, in its folder


def read_evaluated(path: Path) -> dict | None:
    file = path / EVALUATED
    return json.loads(file.read_text()) if file.is_file() else None


def evaluate(row: Row, path: Path, args: argparse.Namespace) -> dict:
    """log p(x) with K = ``--eval-samples`` on the test set; an evaluation of the same pass,
    K and test images already recorded in the row's folder is reused."""
    done = int(load_checkpoint(path)["epoch"])
    old = read_evaluated(path)
    wanted = (done, args.eval_samples, args.test_subset or 10_000)
    if old is not None and (old["epoch"], old["num_samples"], old["num_test"]) == wanted:
        return old
    print(f"{row.name}: log p(x) with K = {args.eval_samples} at pass {done}", flush=True)
    start = time.perf_counter()
    figures = evaluate_run(
        path,
        data_dir=args.data_dir,
        download=False,
        num_samples=args.eval_samples,
        test_subset=args.test_subset,
        progress=args.progress,
    )
    figures = {**figures, "eval_seconds": time.perf_counter() - start}
    atomic_write(path / EVALUATED, lambda f: f.write(json.dumps(figures, indent=2).encode()))
    return figures


def group_result(row: Row, path: Path, evaluations: list[dict | None]) -> dict:
    """``result`` over a group's seeds: the first seed's fields, then the mean over seeds of
    −log p(x), its standard error and the test ELBO, ``nll_seed_sd`` (the standard deviation
    over seeds) and ``active_units`` as the mean (per layer)."""
    runs = seed_runs(path)
    each = [result(row, run, e) for run, e in zip(runs, evaluations, strict=True)]
    out = {**each[0], "run_dir": str(path), "seeds": read_seeds(path)}
    out["train_seconds"] = max(r["train_seconds"] for r in each)  # side by side: one clock
    if all("nll" in r for r in each):
        for key in ("nll", "nll_stderr", "test_elbo"):
            out[key] = statistics.mean(r[key] for r in each)
        out["nll_seed_sd"] = statistics.stdev(r["nll"] for r in each)
        units = [r["active_units"] for r in each]
        out["active_units"] = (
            [round(statistics.mean(c)) for c in zip(*units, strict=True)]
            if isinstance(units[0], list)
            else round(statistics.mean(units))
        )
    else:
        for key in ("nll", "nll_stderr", "test_elbo", "active_units"):
            out.pop(key, None)
    return out


def result(row: Row, path: Path, evaluation: dict | None) -> dict:
    history = read_metrics(path)
    out = {
        "row": row.name,
        "layers": row.layers,
        "objective": row.objective,
        "estimator": OBJECTIVES[row.objective],
        "k": row.k,
        "paper_nll": row.paper,
        "passes": history[-1]["epoch"] if history else 0,
        "train_seconds": sum(r["seconds"] for r in history),
        "last_lr": history[-1].get("lr") if history else None,
        "run_dir": str(path),
    }
    if evaluation is not None:
        out.update(
            nll=-evaluation["log_px"],
            nll_stderr=evaluation["log_px_stderr"],
            num_test=evaluation["num_test"],
            eval_samples=evaluation.get("num_samples"),
            test_elbo=evaluation["test_elbo"],
            active_units=evaluation["active_units"],
            eval_seconds=evaluation.get("eval_seconds"),
        )
    return out


def total_units(active: int | list[int] | None) -> int | None:
    """Active units over all stochastic layers (a two-layer row records one count per layer)."""
    return sum(active) if isinstance(active, list) else active


def units_text(active: int | list[int] | None) -> str:
    """``15``, or per layer bottom first ``11 + 0``; ``—`` when not evaluated."""
    if active is None:
        return "—"
    return " + ".join(map(str, active)) if isinstance(active, list) else str(active)


def table(results: list[dict]) -> str:
    lines = [
        "| layers | objective | k | paper −log p(x) | ours −log p(x) | ours − paper | passes "
        "| active units | train time | eval time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ours = f"{r['nll']:.2f} ± {r['nll_stderr']:.2f}" if "nll" in r else "not evaluated"
        if "nll_seed_sd" in r:
            ours += f" (sd {r['nll_seed_sd']:.2f} over {len(r['seeds'])} seeds)"
        paper = f"{r['paper_nll']:.2f}" if r["paper_nll"] is not None else "—"
        gap = f"{r['nll'] - r['paper_nll']:+.2f}" if "nll" in r and r["paper_nll"] else "—"
        evals = f"{r['eval_seconds'] / 60:.0f} min" if r.get("eval_seconds") else "—"
        lines.append(
            f"| {r['layers']} | {r['objective']} | {r['k']} | {paper} | {ours} | {gap} | "
            f"{r['passes']} | {units_text(r.get('active_units'))} | "
            f"{r['train_seconds'] / 3600:.2f} h | {evals} |"
        )
    return "\n".join(lines)


def orderings(results: list[dict]) -> list[str]:
    """The paper's orderings, checked where both rows are evaluated at the same budget."""
    by = {(r["layers"], r["objective"], r["k"]): r for r in results if "nll" in r}
    checks = []

    def check(text: str, a: tuple, b: tuple, key: str, strict: bool) -> None:
        if a in by and b in by and by[a]["passes"] == by[b]["passes"]:
            x, y = by[a][key], by[b][key]
            x, y = (-x, -y) if key == "nll" else (total_units(x), total_units(y))
            holds = x > y if strict else x >= y
            checks.append(f"{text}: {'holds' if holds else 'does NOT hold'} ({x:.2f} vs {y:.2f})")

    for layers in LAYERS:
        for k in (5, 50):
            check(
                f"{layers}L IWAE k={k} > VAE k={k}",
                (layers, "IWAE", k),
                (layers, "VAE", k),
                "nll",
                True,
            )
            check(
                f"{layers}L VAE k={k} ≥ VAE k=1",
                (layers, "VAE", k),
                (layers, "VAE", 1),
                "nll",
                False,
            )
            check(
                f"{layers}L IWAE k={k} more active units than VAE k={k}",
                (layers, "IWAE", k),
                (layers, "VAE", k),
                "active_units",
                True,
            )
            check(
                f"{layers}L DReG k={k} ≥ IWAE k={k}",
                (layers, "DReG", k),
                (layers, "IWAE", k),
                "nll",
                False,
            )
    for objective in ("VAE", "IWAE"):
        for k in (1, 5, 50):
            check(
                f"2L {objective} k={k} > 1L {objective} k={k}",
                (2, objective, k),
                (1, objective, k),
                "nll",
                True,
            )
    return checks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        metavar="ROW",
        help=f"rows to run (default: all): {', '.join(ROWS)}; or 1L-k5 for every "
        "one-layer k = 5 row",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--stages",
        type=int,
        default=8,
        help="train stages 0 … N−1 of the schedule, (3^N − 1)/2 passes "
        "(default 8: the paper's 3280)",
    )
    budget.add_argument("--passes", type=int, help="train this many passes instead")
    p.add_argument(
        "--root",
        type=Path,
        default=Path("runs/iwae-table"),
        help="one run folder per row under it (default: runs/iwae-table)",
    )
    p.add_argument("--data-dir", default=None, help="MNIST's IDX files (e.g. ../shared/data/mnist)")
    p.add_argument("--eval-samples", type=int, default=5000, help="K for log p(x) (default 5000)")
    p.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="evaluate on the first N test images (default: all 10 000)",
    )
    p.add_argument("--train-subset", type=int, default=None, help="train on the first N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="train each row once per seed, side by side in one process (pyrovae train "
        "--seeds); the table gives the mean over seeds and their standard deviation",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--table-only", action="store_true", help="print the table of --root's rows")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/iwae_table.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.passes if args.passes is not None else burda_epochs(args.stages)
    rows = select(args.rows)
    results = []
    for row in rows:
        path = args.root / row.name
        if not args.table_only:
            start = time.perf_counter()
            train(row, path, epochs, args)
            print(f"{row.name}: trained ({time.perf_counter() - start:.0f} s)", flush=True)
        runs = runs_of(path) if path.exists() else []
        if runs and all((run / CHECKPOINT).is_file() for run in runs):
            evaluations = [
                read_evaluated(run) if args.table_only else evaluate(row, run, args)
                for run in runs
            ]
            if is_group(path):
                results.append(group_result(row, path, evaluations))
            else:
                results.append(result(row, path, evaluations[0]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.json.write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")
    print(table(results))
    for line in orderings(results):
        print(line)
    return results


if __name__ == "__main__":
    try:
        main()
    except PyroVAEError as e:  # a damaged or busy row folder, missing data: one line
        print(f"reproduce_iwae.py: error: {e}", file=sys.stderr)
        sys.exit(2)
