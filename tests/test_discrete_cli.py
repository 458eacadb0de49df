"""Discrete codes from the command line: refusals in one line, training with each estimator
that applies, evaluate and diagnose on such runs, and the temperature across a resume."""

from __future__ import annotations

import json
import math

import pytest

from pyrovae.cli import main
from pyrovae.runs.folder import METRICS

SMALL = [
    "--dataset",
    "mnist",
    "--hidden",
    "16",
    "--batch-size",
    "50",
    "--device",
    "cpu",
    "--no-progress",
    "--no-download",
    "--train-subset",
    "100",
    "--no-figures",
]
CATEGORICAL = [
    "--guide",
    "categorical",
    "--prior",
    "categorical",
    "--latent-dim",
    "2",
    "--categories",
    "3",
]
BERNOULLI = ["--guide", "bernoulli", "--prior", "bernoulli", "--latent-dim", "5"]


def _train(tmp_path, idx_dir, *extra, name="run"):
    run = tmp_path / name
    code = main(["train", *SMALL, "--data-dir", str(idx_dir), "--run-dir", str(run), *extra])
    return code, run


REFUSED = {
    "elbo on a categorical code": (
        ["--estimator", "elbo", *CATEGORICAL],
        "--estimator elbo does not apply to --guide categorical",
    ),
    "iwae on a bernoulli code": (["--estimator", "iwae", *BERNOULLI], "--estimator iwae does not"),
    "analytic-kl with a flow guide": (
        ["--estimator", "analytic-kl", "--guide", "flow"],
        "analytic-kl has no closed-form KL",
    ),
    "enumeration of 2^200 states": (
        [
            "--estimator",
            "enumerate",
            "--guide",
            "bernoulli",
            "--prior",
            "bernoulli",
            "--latent-dim",
            "200",
        ],
        "enumeration of 2^200 states",
    ),
    "normal prior, categorical guide": (
        ["--guide", "categorical", "--estimator", "enumerate"],
        "--prior normal does not pair with --guide categorical",
    ),
    "bernoulli prior, normal guide": (
        ["--prior", "bernoulli"],
        "--prior bernoulli does not pair with --guide normal",
    ),
    "categorical prior, bernoulli guide": (
        ["--guide", "bernoulli", "--prior", "categorical", "--estimator", "enumerate"],
        "--prior categorical does not pair with --guide bernoulli",
    ),
    "gumbel-softmax on a normal guide": (
        ["--estimator", "gumbel-softmax"],
        "--estimator gumbel-softmax does not apply",
    ),
    "enumerate with particles": (
        ["--estimator", "enumerate", *CATEGORICAL, "--num-particles", "2"],
        "enumerate sums over every state exactly",
    ),
}


@pytest.mark.parametrize("args,message", REFUSED.values(), ids=REFUSED.keys())
def test_estimators_that_do_not_apply_are_one_line_and_exit_2(
    tmp_path, idx_dir, capsys, args, message
):
    code, run = _train(tmp_path, idx_dir, "--epochs", "1", *args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pyrovae: error: ") and err.count("\n") == 1
    assert message in err
    assert not run.exists()


RUNS = [
    (code, estimator)
    for code in ("categorical", "bernoulli")
    for estimator in ("enumerate", "gumbel-softmax", "straight-through", "score-function")
]


@pytest.mark.parametrize("code,estimator", RUNS)
def test_each_discrete_estimator_trains_and_evaluates(tmp_path, idx_dir, capsys, code, estimator):
    flags = CATEGORICAL if code == "categorical" else BERNOULLI
    status, run = _train(tmp_path, idx_dir, "--epochs", "1", "--estimator", estimator, *flags)
    assert status == 0
    record = json.loads((run / METRICS).read_text().splitlines()[-1])
    assert all(math.isfinite(record[k]) for k in ("train_elbo", "test_elbo", "test_kl"))
    assert record["test_kl"] >= 0
    assert ("temperature" in record) == (estimator in ("gumbel-softmax", "straight-through"))
    capsys.readouterr()
    args = [
        "evaluate",
        str(run),
        "--data-dir",
        str(idx_dir),
        "--no-download",
        "--num-samples",
        "20",
        "--no-progress",
    ]
    assert main(args) == 0
    result = json.loads((run / "evaluation.json").read_text())
    text = json.dumps(result)
    assert "NaN" not in text and "Infinity" not in text


def test_diagnose_a_discrete_run_with_every_estimator_that_applies(tmp_path, idx_dir, capsys):
    status, run = _train(
        tmp_path, idx_dir, "--epochs", "1", "--estimator", "gumbel-softmax", *CATEGORICAL
    )
    assert status == 0
    names = ["enumerate", "gumbel-softmax", "straight-through", "score-function"]
    args = [
        "diagnose",
        str(run),
        "--estimators",
        *names,
        "--num-particles",
        "1",
        "--samples",
        "4",
        "--batch-size",
        "8",
        "--data-dir",
        str(idx_dir),
        "--no-download",
        "--no-progress",
    ]
    assert main(args) == 0
    rows = {r["estimator"]: r for r in json.loads((run / "diagnostics.json").read_text())["rows"]}
    assert set(rows) == set(names)
    assert rows["enumerate"]["encoder"]["variance_mean"] == 0  # exact: no variance
    assert rows["score-function"]["encoder"]["variance_mean"] > 0


def test_the_temperature_follows_the_global_step_across_a_resume(tmp_path, idx_dir):
    """τ anneals fast here (r = 0.05 every 2 steps; 2 steps an epoch): a run resumed after
    epoch 1 ends where the uninterrupted one does, temperature and metrics alike."""
    anneal = [
        "--estimator",
        "gumbel-softmax",
        *CATEGORICAL,
        "--temperature-rate",
        "0.05",
        "--temperature-interval",
        "2",
        "--temperature-min",
        "0.1",
    ]
    assert _train(tmp_path, idx_dir, "--epochs", "3", *anneal, name="whole")[0] == 0
    assert _train(tmp_path, idx_dir, "--epochs", "1", *anneal, name="parts")[0] == 0
    parts = tmp_path / "parts"
    assert (
        main(
            [
                "train",
                "--resume",
                str(parts),
                "--epochs",
                "3",
                "--data-dir",
                str(idx_dir),
                "--no-download",
                "--no-progress",
                "--no-figures",
            ]
        )
        == 0
    )
    whole = [json.loads(line) for line in (tmp_path / "whole" / METRICS).read_text().splitlines()]
    split = [json.loads(line) for line in (parts / METRICS).read_text().splitlines()]
    # the last step of epoch e is global step 2e − 1: τ = exp(−0.05 · 2 ⌊(2e − 1)/2⌋)
    assert [r["temperature"] for r in whole] == pytest.approx(
        [math.exp(-0.1 * (e - 1)) for e in (1, 2, 3)]
    )
    for a, b in zip(whole, split, strict=True):
        assert a["temperature"] == b["temperature"]
        assert a["test_elbo"] == pytest.approx(b["test_elbo"], rel=1e-6)
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-6)
