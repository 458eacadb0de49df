"""Seconds per training step of pyrovae's default fast path at two code versions, in one run.

"before" is ``--before REV`` (default bf8777c: ``fit(jit=True)``, the traced loss graph; its
``iwae-dreg`` ran without the fast path), checked out as a temporary ``git worktree`` (or
``--before-root PATH``); "after" is this checkout (``fit(compile=True)``). Each round runs, for
each row, the before version and then the after version, each in its own subprocess
(``fit_timer.py`` with ``PYTHONPATH`` at that version's source root), so drifts in machine load
hit both alike. Epoch 1 of each run is the warm-up (recording, compiling); a row's figure is
the median over the later epochs of all rounds of seconds per step, with after/before and the
speed-up. Rows: Fashion-MNIST with the default model at batch 256, and the Burda et al. (2015)
protocol (``preset_config("burda2015")``, MNIST, batch 20; a pass is 3000 steps), skipped with
a note where ``--data-dir`` has no MNIST.

    python benchmarks/before_after.py --rounds 2 --json benchmarks/results/before_after.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fit_timer import git_rev

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "fit_timer.py"
VERSIONS = ("before", "after")


@dataclass(frozen=True)
class Row:
    """One training setting: estimator, particles K, batch size, preset (None: the defaults)."""

    estimator: str
    num_particles: int = 1
    batch_size: int = 256
    preset: str | None = None
    pass_steps: int = 235  # steps of one pass over 60 000 training images

    def worker_args(self) -> list[str]:
        args = ["--estimator", self.estimator, "--num-particles", str(self.num_particles)]
        args += ["--batch-size", str(self.batch_size)]
        return args + (["--preset", self.preset] if self.preset else [])


def burda(estimator: str, k: int) -> Row:
    return Row(estimator, k, batch_size=20, preset="burda2015", pass_steps=60_000 // 20)


ROWS: dict[str, Row] = {
    "elbo-b256": Row("elbo"),
    "analytic-kl-b256": Row("analytic-kl"),
    "iwae5-b256": Row("iwae", 5),
    "dreg5-b256": Row("iwae-dreg", 5),
    "burda-vae-k1": burda("elbo", 1),
    "burda-iwae-k5": burda("iwae", 5),
    "burda-iwae-k50": burda("iwae", 50),
    "burda-dreg-k5": burda("iwae-dreg", 5),
    "burda-dreg-k50": burda("iwae-dreg", 50),
}


class BenchError(Exception):
    """A failure worth one line: exit 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--before", default="bf8777c", help="the earlier git revision")
    p.add_argument("--before-root", type=Path, default=None, help="its source root, if checked out")
    p.add_argument("--rounds", type=int, default=2, help="before-then-after runs of each row")
    p.add_argument("--epochs", type=int, default=3, help="per run; epoch 1 is the warm-up")
    p.add_argument("--train-subset", type=int, default=None, help="first N training images only")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS and torch threads")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "mnist",
        help="MNIST for the burda rows (default: ../shared/data/mnist beside the repository)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (epoch 1 is the warm-up)")
    return args


@contextmanager
def before_root(rev: str, given: Path | None) -> Iterator[Path]:
    """``given``, or a temporary ``git worktree`` of ``rev``, removed afterwards."""
    if given is not None:
        if not (given / "pyrovae" / "__init__.py").is_file():
            raise BenchError(f"--before-root {given} has no pyrovae/__init__.py")
        yield given.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="pyrovae-before-"))
    tree = folder / "before"
    added = git("worktree", "add", "--detach", str(tree), rev)
    if added.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise BenchError(f"cannot check out --before {rev}: {last_line(added.stderr)}")
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_worker(root: Path, row: Row, args: argparse.Namespace) -> dict[str, Any]:
    """One ``fit_timer.py`` run of ``row`` on the version at ``root``: its JSON line."""
    command = [sys.executable, str(WORKER), *row.worker_args(), "--epochs", str(args.epochs)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if args.train_subset is not None:
        command += ["--train-subset", str(args.train_subset)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
        env["OMP_NUM_THREADS"] = str(args.threads)
    if row.preset:
        command += ["--data-dir", str(args.data_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise BenchError(last_line(result.stderr or result.stdout))
    return json.loads(last_line(result.stdout))


def summarize(name: str, row: Row, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median seconds per step over the epochs after the warm-up, per version, and the ratio."""
    summary: dict[str, Any] = {"row": name, **asdict(row)}
    for version in VERSIONS:
        per_step = [s / r["steps_per_epoch"] for r in runs[version] for s in r["seconds"][1:]]
        summary[f"{version}_step_seconds"] = statistics.median(per_step)
        summary[f"{version}_pass_seconds"] = summary[f"{version}_step_seconds"] * row.pass_steps
        summary[f"{version}_warmup_seconds"] = [r["seconds"][0] for r in runs[version]]
    summary["ratio"] = summary["after_step_seconds"] / summary["before_step_seconds"]
    summary["speedup"] = 1 / summary["ratio"]
    return summary


def print_table(rows: list[dict[str, Any]]) -> None:
    heads = ("before ms", "after ms", "after/before", "speed-up", "before s/pass", "after s/pass")
    print(f"\n{'row':18s}" + "".join(f" {h:>13s}" for h in heads))
    for r in rows:
        figures = (
            f"{r['before_step_seconds'] * 1e3:13.2f}",
            f"{r['after_step_seconds'] * 1e3:13.2f}",
            f"{r['ratio']:13.3f}",
            f"{r['speedup']:12.2f}×",
            f"{r['before_pass_seconds']:13.1f}",
            f"{r['after_pass_seconds']:13.1f}",
        )
        print(f"{r['row']:18s} " + " ".join(figures))


def bench(args: argparse.Namespace, names: list[str], roots: dict[str, Path]) -> dict[str, Any]:
    """The alternating rounds; the per-row summaries and every run's record."""
    runs: dict[str, dict[str, list]] = {name: {v: [] for v in VERSIONS} for name in names}
    for round_ in range(1, args.rounds + 1):
        for name in names:
            for version in VERSIONS:
                try:
                    record = run_worker(roots[version], ROWS[name], args)
                except BenchError as e:
                    raise BenchError(f"{name}, {version}: {e}") from None
                runs[name][version].append(record)
                epochs = " ".join(f"{s:.2f}" for s in record["seconds"])
                print(
                    f"  round {round_}/{args.rounds} {name:16s} {version:6s} epochs {epochs} s"
                    f" ({record['steps_per_epoch']} steps each)",
                    flush=True,
                )
    rows = [summarize(name, ROWS[name], runs[name]) for name in names]
    return {"rows": rows, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.rows
    if any(ROWS[n].preset for n in names) and not args.data_dir.is_dir():
        names = [n for n in names if not ROWS[n].preset]
        print(f"note: no MNIST at {args.data_dir} (--data-dir): the burda rows are skipped")
    if not names:
        raise BenchError("no rows left to run")
    with before_root(args.before, args.before_root) as before:
        roots = {"before": before, "after": ROOT}
        versions = {v: {"root": str(r), "rev": git_rev(r)} for v, r in roots.items()}
        for version, about in versions.items():
            print(f"{version:6s} {about['root']} ({about['rev']})")
        subset = f"first {args.train_subset} images" if args.train_subset else "all images"
        print(f"{args.rounds} rounds × {args.epochs} epochs (1 warm-up), {subset}\n", flush=True)
        result = bench(args, names, roots)
    print_table(result["rows"])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "versions": versions,
            **result,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"before_after.py: error: {e}", file=sys.stderr)
        sys.exit(2)
