"""The command line: a run folder with metrics and checkpoint, --resume, evaluate, plot, bad
input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import any_likelihood

from pyrovae import ESTIMATORS, plots
from pyrovae.cli import main
from pyrovae.inference.kinds import applicable
from pyrovae.runs.folder import CHECKPOINT, CONFIG, EVALUATION, FIGURES, METRICS

# estimators for continuous codes (the discrete ones: test_discrete_codes.py)
CONTINUOUS = any_likelihood(applicable(ESTIMATORS, "continuous"))

SMALL = [
    "--dataset",
    "mnist",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
    "--batch-size",
    "50",
    "--device",
    "cpu",
    "--no-progress",
    "--no-download",
]


def _train(tmp_path, idx_dir, *extra, name="run", figures=False):
    """A tiny ``pyrovae train`` into ``tmp_path/name``; figures (off unless asked for) are
    tested by the plot tests here and in test_plots.py."""
    run = tmp_path / name
    code = main(
        [
            "train",
            *SMALL,
            "--data-dir",
            str(idx_dir),
            "--run-dir",
            str(run),
            "--train-subset",
            "200",
            *([] if figures else ["--no-figures"]),
            *extra,
        ]
    )
    return code, run


def test_one_epoch_writes_config_metrics_and_checkpoint(tmp_path, idx_dir, capsys):
    code, run = _train(tmp_path, idx_dir, "--epochs", "1")
    assert code == 0
    out = capsys.readouterr().out
    assert "test ELBO" in out and str(run) in out
    config = json.loads((run / CONFIG).read_text())
    assert config["config"]["train_subset"] == 200 and config["config"]["hidden"] == [32]
    (record,) = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert record["epoch"] == 1 and record["test_elbo"] < 0
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1
    assert {"model", "guide", "optimizer", "rng"} <= set(state)


def test_resume_continues_at_the_next_epoch(tmp_path, idx_dir, capsys):
    _, run = _train(tmp_path, idx_dir, "--epochs", "1")
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--epochs",
                "3",
                "--no-progress",
                "--no-download",
                "--data-dir",
                str(idx_dir),
            ]
        )
        == 0
    )
    epochs = [json.loads(line)["epoch"] for line in (run / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 3
    assert "after epoch 3" in capsys.readouterr().out


def test_evaluate_prints_and_writes_figures(tmp_path, idx_dir, capsys):
    _, run = _train(tmp_path, idx_dir, "--epochs", "1")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", str(idx_dir), "--no-download"]) == 0
    out = capsys.readouterr().out
    figures = json.loads((run / EVALUATION).read_text())["evaluations"][-1]
    assert f"{figures['test_elbo']:.3f}" in out
    # the checkpoint's test ELBO is the one recorded at the end of its epoch (same eval seed)
    last = json.loads((run / METRICS).read_text().splitlines()[-1])
    assert figures["test_elbo"] == pytest.approx(last["test_elbo"], rel=1e-6)
    assert figures["test_elbo"] == pytest.approx(figures["test_recon"] - figures["test_kl"])


def _digest(run):
    return {p.name: p.read_bytes() for p in run.iterdir()}


BAD = {
    "unknown dataset": (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    "unknown estimator": (["--estimator", "magic"], "unknown estimator 'magic'"),
    "no particles": (["--num-particles", "0"], "--num-particles must be at least 1"),
    "zero lr": (["--lr", "0"], "--lr must be a positive number"),
    "negative lr": (["--lr", "-0.1"], "--lr must be a positive number"),
    "bernoulli on grey": (["--pixels", "grey"], "not a valid density"),
    "run dir taken": ([], "already exists"),
}


@pytest.mark.parametrize("args,message", BAD.values(), ids=BAD.keys())
def test_bad_training_input(tmp_path, idx_dir, capsys, args, message):
    _, run = _train(tmp_path, idx_dir, "--epochs", "1")
    before = _digest(run)
    capsys.readouterr()
    code, _ = _train(tmp_path, idx_dir, "--epochs", "1", *args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert _digest(run) == before


def test_missing_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", *SMALL, "--data-dir", str(empty), "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "mnist not found" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_bad_resume(tmp_path, idx_dir, capsys):
    _, run = _train(tmp_path, idx_dir, "--epochs", "1")
    before = _digest(run)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / CONFIG).write_text('{"hello": 1}')
    cases = {
        str(tmp_path / "nowhere"): "does not exist",
        str(foreign): "not a pyrovae run folder",
        str(idx_dir): "not a pyrovae run folder",
    }
    for folder, message in cases.items():
        assert main(["train", "--resume", folder, "--no-download"]) == 2
        assert message in capsys.readouterr().err
    # already at its last epoch, or settings that a resumed run cannot change
    for extra, message in ((["--epochs", "1"], "pass --epochs"), (["--lr", "0.1"], "drop --lr")):
        assert main(["train", "--resume", str(run), "--no-download", *extra]) == 2
        assert message in capsys.readouterr().err
    assert _digest(run) == before


STANDARD_FIGURES = {"training_curves.png", "reconstructions.png", "samples.png", "traversal.png"}
DIAGNOSTIC_FIGURES = {"bound_vs_k.png", "snr_vs_k.png", "gradient_variance.png"}


def _data_flags(idx_dir):
    return ["--data-dir", str(idx_dir), "--no-download"]


def _diagnose_and_evaluate(run, idx_dir):
    """Small ``evaluate`` and ``diagnose`` runs, so the bound and diagnostic figures exist."""
    grid = ["--estimators", "elbo", "iwae", "--num-particles", "1", "2"]
    small = ["--samples", "3", "--batch-size", "8"]
    assert main(["diagnose", str(run), *grid, *small, *_data_flags(idx_dir)]) == 0
    evaluate = ["--num-samples", "5", "--test-subset", "20", "--no-progress"]
    assert main(["evaluate", str(run), *evaluate, *_data_flags(idx_dir)]) == 0


def test_plot_redraws_the_figures_training_wrote(tmp_path, idx_dir, capsys):
    code, run = _train(tmp_path, idx_dir, "--epochs", "1", figures=True)
    assert code == 0
    trained = {p.name: p.read_bytes() for p in (run / FIGURES).iterdir()}
    assert set(trained) == STANDARD_FIGURES  # a 4-D latent space: no 2-D figures
    _diagnose_and_evaluate(run, idx_dir)
    capsys.readouterr()
    out = tmp_path / "redrawn"
    assert main(["plot", str(run), "--out", str(out), *_data_flags(idx_dir)]) == 0
    assert "7 figures written" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == STANDARD_FIGURES | DIAGNOSTIC_FIGURES
    # from the checkpoint, the metrics and fixed seeds: the same pictures, byte for byte
    for name, data in trained.items():
        assert (out / name).read_bytes() == data, name
    # without --out, into the run's own figures/
    assert main(["plot", str(run), *_data_flags(idx_dir)]) == 0
    assert {p.name for p in (run / FIGURES).iterdir()} == STANDARD_FIGURES | DIAGNOSTIC_FIGURES


def test_plot_several_runs_overlays_their_curves(tmp_path, idx_dir, capsys, monkeypatch):
    _, a = _train(tmp_path, idx_dir, "--epochs", "2", name="a")
    _, b = _train(tmp_path, idx_dir, "--epochs", "1", "--lr", "1e-2", name="b")
    grid = ["--estimators", "iwae", "--num-particles", "1", "4", "--samples", "3"]
    assert main(["diagnose", str(a), *grid, "--batch-size", "8", *_data_flags(idx_dir)]) == 0
    out = tmp_path / "both"
    assert main(["plot", str(a), str(b), "--out", str(out), "--labels", "slow", "fast"]) == 0
    assert "3 figures written" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"training_curves.png", "slow"}
    assert {p.name for p in (out / "slow").iterdir()} == {"snr_vs_k.png", "gradient_variance.png"}
    # what was plotted: each run's recorded metrics, labelled by its folder name by default
    drawn = {}
    draw = plots.training_curves

    def spy(histories):
        drawn.update(histories)
        return draw(histories)

    monkeypatch.setattr(plots, "training_curves", spy)
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert list(drawn) == ["a", "b"]  # the folder names by default
    recorded = [json.loads(line) for line in (b / METRICS).read_text().splitlines()]
    assert drawn["b"] == recorded


def test_bad_plot_input(tmp_path, idx_dir, capsys):
    _, run = _train(tmp_path, idx_dir, "--epochs", "1")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / CONFIG).write_bytes((run / CONFIG).read_bytes())
    twin = tmp_path / "other" / "run"
    twin.mkdir(parents=True)
    (twin / CONFIG).write_bytes((run / CONFIG).read_bytes())
    x = str(tmp_path / "x")
    cases = {
        "missing": ([str(tmp_path / "nowhere")], "does not exist"),
        "not a run": ([str(idx_dir)], "not a pyrovae run folder"),
        "no checkpoint": ([str(unfinished)], "never finished an epoch"),
        "several, no --out": ([str(run), str(run)], "needs --out"),
        "labels": ([str(run), "--labels", "a", "b", "--out", x], "one label per run"),
        "same names": ([str(run), str(twin), "--out", x], "--labels"),
        "one unfinished": ([str(run), str(unfinished), "--out", x], "never finished"),
    }
    for case, (args, message) in cases.items():
        code = main(["plot", *args, *_data_flags(idx_dir)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, case
        assert err.startswith("pyrovae: error: "), case
    assert not (tmp_path / "x").exists() and not (run / FIGURES).exists()


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pyrovae", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _in_process(args, capsys):
    """``main(args)`` as ``python -m pyrovae`` runs it: (exit status, stderr)."""
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:  # argparse's errors
        code = stop.code
    return code, capsys.readouterr().err


def test_console_entry_point_errors_without_traceback(tmp_path, capsys):
    """One real ``python -m pyrovae`` per verb (a few seconds of imports each); the other bad
    commands through the same ``main`` in this process: an exception that escaped it would
    fail the test here as a traceback would there."""
    for args, subprocess_ in (
        (["train", "--estimator", "nope"], True),
        (["train", "--lr", "x"], False),
        (["evaluate", str(tmp_path)], True),
        (["frobnicate"], False),
    ):
        if subprocess_:
            result = _cli(*args)
            code, err = result.returncode, result.stderr
        else:
            code, err = _in_process(args, capsys)
        assert code == 2, args
        assert "Traceback" not in err
        assert err.count("\n") == 1, err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_run_and_evaluate(tmp_path, idx_dir):
    code, run = _train(tmp_path, idx_dir, "--epochs", "2", "--device", "cuda")
    assert code == 0
    assert json.loads((run / CONFIG).read_text())["device"].startswith("cuda")
    assert main(["evaluate", str(run), "--data-dir", str(idx_dir), "--no-download"]) == 0


@pytest.mark.parametrize("estimator", CONTINUOUS)
def test_every_estimator_trains_from_the_cli(tmp_path, idx_dir, estimator):
    code, run = _train(
        tmp_path, idx_dir, "--epochs", "2", "--estimator", estimator, "--num-particles", "2"
    )
    assert code == 0
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert json.loads((run / CONFIG).read_text())["config"]["estimator"] == estimator
    assert (
        records[1]["test_elbo"] > records[0]["test_elbo"]
    )  # 4 steps an epoch, from an untrained start
