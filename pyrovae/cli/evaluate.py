"""``pyrovae evaluate``: a run's test figures (ELBO, its terms, log p(x), active units)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyrovae.cli.parser import _add_data_flags
from pyrovae.core.choices import AIS_STARTS as START
from pyrovae.core.choices import LOG_PX_METHODS as METHODS
from pyrovae.core.defaults import (
    AIS_CHAINS,
    AIS_LEAPFROG,
    AIS_STEPS,
    LOG_PX_SAMPLES,
    MAX_DRAWS,
    MAX_DRAWS_RANGE,
    NUM_SAMPLES,
)
from pyrovae.core.ranges import SIZE
from pyrovae.runs.folder import EVALUATION


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``evaluate`` subcommand and its flags."""
    evaluate = subparsers.add_parser("evaluate", help="print a run's test figures")
    evaluate.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run folder, or a group of seeds (train --seeds)"
    )
    evaluate.add_argument(
        "--num-samples",
        type=NUM_SAMPLES,
        default=LOG_PX_SAMPLES,
        metavar="K",
        help=f"importance samples for log p(x); 0 skips it (default: {LOG_PX_SAMPLES}; "
        "the paper protocol is 5000)",
    )
    evaluate.add_argument(
        "--max-draws",
        type=MAX_DRAWS_RANGE,
        default=MAX_DRAWS,
        metavar="N",
        help="refuse a log p(x) of more draws of z than this (test images × K), quoting the time "
        f"it would take, measured on a first chunk (default: {MAX_DRAWS:,}, 20× the paper "
        "protocol's)",
    )
    evaluate.add_argument(
        "--test-subset", type=SIZE, metavar="N", help="evaluate on the first N test images only"
    )
    evaluate.add_argument(
        "--method",
        choices=list(METHODS),
        default="is",
        help="how log p(x) is estimated: is (importance sampling with the guide, K = "
        "--num-samples), ais (annealed importance sampling) or bdmc (AIS's lower and upper "
        "bounds on as many images simulated from the model) (default: is)",
    )
    evaluate.add_argument(
        "--ais-steps",
        type=SIZE,
        default=AIS_STEPS,
        metavar="T",
        help=f"AIS: annealing steps along a sigmoid schedule (default: {AIS_STEPS})",
    )
    evaluate.add_argument(
        "--chains",
        type=SIZE,
        default=AIS_CHAINS,
        metavar="C",
        help=f"AIS: chains per image (default: {AIS_CHAINS})",
    )
    evaluate.add_argument(
        "--leapfrog",
        type=SIZE,
        default=AIS_LEAPFROG,
        metavar="L",
        help=f"AIS: leapfrog steps per HMC transition (default: {AIS_LEAPFROG})",
    )
    evaluate.add_argument(
        "--ais-from",
        choices=START,
        default="guide",
        help="AIS: anneal from the guide q(z|x) or from the prior p(z) (default: guide)",
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    _add_data_flags(evaluate)


def run(args: argparse.Namespace) -> None:
    """Evaluate the run on its test set and print the figures, per image in nats (a group of
    seeds: each seed's, then their mean ± standard deviation), each before it is written."""
    from pyrovae.runs.seeds import is_group

    if is_group(args.run_dir):
        _group(args)
        return
    _evaluate(args, args.run_dir)
    print(f"written to {Path(args.run_dir) / EVALUATION}")


# The figures of a group's summary: (label, key), in the order printed; the KL's and log p's
# labels are the ones the evaluation records (``kl_of``, ``log_px_of``: what was measured).
GROUP_FIGURES = (
    ("test ELBO", "test_elbo"),
    ("reconstruction term", "test_recon"),
    ("KL(q(z|x) || p(z))", "test_kl"),
    ("log p(x)", "log_px"),
)
MEASURED_LABELS = {"test_kl": "kl_of", "log_px": "log_px_of"}


def _group(args: argparse.Namespace) -> None:
    from pyrovae.runs.seeds import seed_runs, summarize

    runs = seed_runs(args.run_dir)
    results = []
    for run in runs:
        print(f"{run.name}:")
        results.append(_evaluate(args, run))
    summary = summarize(results, tuple(key for _, key in GROUP_FIGURES))
    print(f"mean ± sd over {len(runs)} seeds, per image in nats:")
    for label, key in GROUP_FIGURES:
        label = results[0].get(MEASURED_LABELS.get(key, ""), label)  # the seeds share a model
        if key in summary:
            mean, std = summary[key]
            print(f"  {label:20s} {mean:.3f} ± {std:.3f}")
    print(f"written to {Path(args.run_dir) / 'seed-*' / EVALUATION}")


def _evaluate(args: argparse.Namespace, run_dir) -> dict:
    """The figures, printed before they are written (a failing write loses nothing shown)."""
    from pyrovae.runs.evaluate import evaluate_run

    return evaluate_run(
        run_dir,
        args.device,
        args.data_dir,
        not args.no_download,
        num_samples=args.num_samples,
        test_subset=args.test_subset,
        progress=not args.no_progress,
        allow_other_data=args.allow_other_data,
        max_draws=args.max_draws,
        report=_print,
        note=_note,
        method=args.method,
        ais_steps=args.ais_steps,
        chains=args.chains,
        leapfrog=args.leapfrog,
        ais_from=args.ais_from,
    )


def _note(text: str) -> None:
    print(f"pyrovae: note: {text}", file=sys.stderr)


def _print(results: dict) -> None:
    print(f"epoch {results['epoch']}, {results['num_test']} test images, per image in nats:")
    if results.get("point_mass"):  # the autoencoder: no ELBO, no KL, no log p(x)
        print(f"  reconstruction term  {results['test_recon']:.3f}")
        print(f"  −log p(z) at code    {results['test_kl']:.3f}")
        print("  log p(x)             n/a: a point-mass guide has no density to sample with")
    else:
        print(
            f"  test ELBO            {results['test_elbo']:.3f} "
            f"({results['test_elbo_bpd']:.4f} bits/dim)"
        )
        if results.get("has_latents", True):
            print(f"  reconstruction term  {results['test_recon']:.3f}")
            kl = results.get("kl_of", "KL(q(z|x) || p(z))")
            print(f"  {kl:20s} {results['test_kl']:.3f}")
    if "log_px" in results:
        stderr = results["log_px_stderr"]
        spread = f"± {stderr:.3f}" if stderr is not None else "± n/a"
        how = _how(results)
        print(
            f"  {results.get('log_px_of', 'log p(x)'):20s} {results['log_px']:.3f} {spread} "
            f"({how}, MC error {results['log_px_mc_stderr']:.3f}; "
            f"{results['log_px_bpd']:.4f} bits/dim)"
        )
        if "ess" not in results:
            print(f"  HMC acceptance       {results['ais_acceptance']:.3f}")
        elif results.get("has_latents", True):  # a baseline's every draw is the same
            print(f"  effective samples    {results['ess']:.1f} of {results['num_samples']}")
    if "bdmc_gap" in results:  # on as many images simulated from the model
        stderr = results["bdmc_gap_stderr"]
        spread = f"± {stderr:.3f}" if stderr is not None else "± n/a"
        print(f"  on {results['num_test']} images simulated from the model ({_how(results)}):")
        print(f"  BDMC lower bound     {results['bdmc_lower']:.3f} (forward AIS)")
        print(f"  BDMC upper bound     {results['bdmc_upper']:.3f} (reverse AIS)")
        print(f"  BDMC gap             {results['bdmc_gap']:.3f} {spread}")
        print(
            f"  HMC acceptance       {results['ais_acceptance']:.3f} forward, "
            f"{results['ais_acceptance_reverse']:.3f} reverse"
        )
    if "test_accuracy" in results:  # M2's classifier q(y|x)
        print(f"  test accuracy        {100 * results['test_accuracy']:.2f}% (q(y|x))")
    if results.get("has_latents", True):
        active = _per_layer(results["active_units"], results["latent_dim"])
        print(f"  active units         {active}")
    # flushed: the figures reach a pipe or a file before evaluation.json is written
    sys.stdout.flush()


def _how(results: dict) -> str:
    """``K=5000`` for importance sampling; ``AIS T=100 C=16 L=10 from guide``."""
    if results.get("method", "is") == "is":
        return f"K={results['num_samples']}"
    return (
        f"{results['method'].upper()} T={results['ais_steps']} C={results['chains']} "
        f"L={results['leapfrog']} from {results['ais_from']}"
    )


def _per_layer(active: int | list[int] | None, dims: int | list[int]) -> str:
    """``6 / 50``, or per stochastic layer ``20 / 100 (z1), 5 / 50 (z2)``."""
    if isinstance(dims, int):
        return f"{'n/a' if active is None else active} / {dims}"
    counts = active if active is not None else ["n/a"] * len(dims)
    return ", ".join(
        f"{a} / {d} (z{i})" for i, (a, d) in enumerate(zip(counts, dims, strict=True), start=1)
    )
