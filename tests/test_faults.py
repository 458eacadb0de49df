"""Fault injection: kills at random moments, full and read-only disks, damaged run folders, and
the other ways a run can fail. Every failure is one line and exit 2, and nothing recorded is
lost: after a kill, --resume reaches the same checkpoint and metrics as a run never interrupted.

Kills and injected disk errors run ``pyrovae`` in a subprocess through tests/fault_harness.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import fault_harness
import numpy as np
import pytest
import torch

from pyrovae import TrainConfig, fit, resume_run
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.data import load_data
from pyrovae.inference import estimators
from pyrovae.inference.divergence import DivergenceGuard
from pyrovae.runs import build_model_and_guide
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import (
    CHECKPOINT,
    CONFIG,
    EVALUATION,
    METRICS,
    read_evaluations,
    read_metrics,
    run_lock,
)

HARNESS = Path(__file__).resolve().parent / "fault_harness.py"
EPOCHS, STEPS = 3, 6  # 300 images in batches of 50: 6 steps an epoch


def _args(idx_dir, run, *extra):
    return [
        "train",
        *["--dataset", "mnist", "--hidden", "16", "--latent-dim", "3", "--batch-size", "50"],
        *["--train-subset", "300", "--epochs", str(EPOCHS), "--device", "cpu"],
        *["--data-dir", str(idx_dir), "--run-dir", str(run)],
        *["--no-progress", "--no-download", "--no-figures", *extra],
    ]


def _resume(run, idx_dir, *extra):
    argv = ["train", "--resume", str(run), "--data-dir", str(idx_dir), "--no-download"]
    return main([*argv, "--no-progress", "--no-figures", *extra])


def _harness(fault, n, argv, timeout=120):
    return subprocess.run(
        [sys.executable, str(HARNESS), fault, str(n), "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run never interrupted: what every killed-and-resumed run must equal."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("reference")
    idx = root / "idx"
    write_dataset(idx)
    assert main(_args(idx, root / "run")) == 0
    return root / "run"


def _timeless(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _assert_same_run(run: Path, reference: Path) -> None:
    """Checkpoint tensors bitwise equal (weights, Adam's state, every RNG), the same metrics."""
    a, b = load_checkpoint(reference), load_checkpoint(run)
    assert a["epoch"] == b["epoch"] == EPOCHS
    for key in ("model", "guide"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for i, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][i][name])
            )
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["rng"]["python"] == b["rng"]["python"]
    assert torch.equal(a["rng"]["numpy"][1], b["rng"]["numpy"][1])
    assert _timeless(b["history"]) == _timeless(a["history"])
    assert _timeless(read_metrics(run)) == _timeless(read_metrics(reference))
    assert not list(run.glob(".*.tmp"))  # what the killed write left is gone


KILLS = ["kill-step", "kill-in-checkpoint", "kill-before-metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fault", KILLS)
def test_a_kill_at_a_random_moment_then_resume_is_the_uninterrupted_run(
    tmp_path, idx_dir, reference, fault, seed
):
    """kill -9 between steps (any of the 18, the first epoch's included: then there is no
    checkpoint yet), half-way through a checkpoint's bytes, or between the checkpoint and the
    metrics of an epoch (drawn with ``seed``); then --resume."""
    rng = np.random.default_rng([seed, KILLS.index(fault)])
    n = int(rng.integers(1, EPOCHS * STEPS + 1) if fault == "kill-step" else rng.integers(1, 4))
    run = tmp_path / "run"
    killed = _harness(fault, n, _args(idx_dir, run))
    assert killed.returncode == -9, killed.stderr
    epoch_done = (n - 1) // STEPS if fault == "kill-step" else n - 1
    if fault == "kill-before-metrics":
        epoch_done = n  # the checkpoint of epoch n is written, its metrics line is not
        assert [r["epoch"] for r in read_metrics(run)] == list(range(1, n))
    if epoch_done:
        assert load_checkpoint(run)["epoch"] == epoch_done  # the last good one, readable
    else:
        assert not (run / CHECKPOINT).exists() and (run / CONFIG).exists()
    if fault == "kill-in-checkpoint":
        assert list(run.glob(".checkpoint.pt.*.tmp"))  # the kill hit the write
    # killed after the last epoch's checkpoint: nothing to train, but the metrics are repaired
    assert _resume(run, idx_dir) == (2 if epoch_done == EPOCHS else 0)
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_a_folder_killed_before_its_first_checkpoint_resumes_from_epoch_0(
    tmp_path, idx_dir, reference, capsys
):
    run = tmp_path / "run"
    assert _harness("kill-step", 2, _args(idx_dir, run)).returncode == -9
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == [CONFIG]
    assert main(_args(idx_dir, run)) == 2  # a fresh train says how to go on
    assert "--resume" in capsys.readouterr().err
    assert _resume(run, idx_dir) == 0
    _assert_same_run(run, reference)


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def _one_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("pyrovae: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(tmp_path, idx_dir):
    run = tmp_path / "run"
    err = _one_line(_harness("enospc-checkpoint", 2, _args(idx_dir, run)))
    assert "the disk is full" in err and "checkpoint.pt" in err
    assert load_checkpoint(run)["epoch"] == 1  # epoch 1's checkpoint, checksum intact
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_a_read_only_folder_fails_before_any_work(tmp_path, idx_dir, monkeypatch, capsys):
    """Root ignores chmod, so the harness makes every new file fail with EACCES: here in this
    process for a new run, in a subprocess for each verb on an existing one."""
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", fault_harness.no_permission)  # as install("eacces", 1)
        argv = _args(idx_dir, tmp_path / "new")
        done = subprocess.CompletedProcess(argv, main(argv), "", capsys.readouterr().err)
    err = _one_line(done)
    assert "permission denied" in err and not (tmp_path / "new").exists()
    run = tmp_path / "run"
    assert main(_args(idx_dir, run, "--epochs", "1")) == 0
    before = _files(run)
    for argv in (
        ["train", "--resume", str(run), "--epochs", "2", "--no-download"],
        ["evaluate", str(run), "--no-download", "--data-dir", str(idx_dir)],
    ):
        err = _one_line(_harness("eacces", 1, argv, timeout=60))
        assert "permission denied" in err
    assert _files(run) == before  # nothing trained, nothing written


@pytest.fixture
def run(tmp_path, idx_dir):
    path = tmp_path / "run"
    assert main(_args(idx_dir, path, "--epochs", "1")) == 0
    return path


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: ") and err.count("\n") == 1, err
    return err


def _evaluate(run, idx_dir, *extra):
    argv = ["evaluate", str(run), "--data-dir", str(idx_dir), "--no-download", "--no-progress"]
    return main([*argv, *extra])


def test_an_empty_checkpoint_is_one_line(run, idx_dir, capsys):
    (run / CHECKPOINT).write_bytes(b"")
    for command in (
        lambda: _resume(run, idx_dir, "--epochs", "2"),
        lambda: _evaluate(run, idx_dir),
    ):
        assert command() == 2 and "is empty (0 bytes)" in _err(capsys)
    assert main(["sample", str(run), "--out", str(run / "s.png")]) == 2
    assert "is empty" in _err(capsys)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_checkpoint_with_flipped_bytes_is_refused(run, idx_dir, capsys, seed):
    """4 KB flipped somewhere in the file: never loaded silently, never torch's advice."""
    data = bytearray((run / CHECKPOINT).read_bytes())
    start = int(np.random.default_rng(seed).integers(0, len(data) - 4096))
    data[start : start + 4096] = bytes(b ^ 0xFF for b in data[start : start + 4096])
    (run / CHECKPOINT).write_bytes(bytes(data))
    assert _resume(run, idx_dir, "--epochs", "2") == 2
    err = _err(capsys)
    assert ("corrupt" in err or "damaged" in err) and "weights_only" not in err


def test_a_checksum_catches_a_changed_weight(run, idx_dir, capsys):
    """A change torch.load cannot see (a valid file with one weight altered)."""
    state = torch.load(run / CHECKPOINT, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name].view(-1)[0] += 1.0
    torch.save(state, run / CHECKPOINT)
    assert _resume(run, idx_dir, "--epochs", "2") == 2
    assert "is corrupt: its content does not match the SHA-256" in _err(capsys)


def _edit_config(run, edit):
    meta = json.loads((run / CONFIG).read_text())
    (run / CONFIG).write_text(json.dumps(edit(meta)))


DAMAGED_CONFIGS = {
    "wrong type": (
        lambda m: {**m, "config": {**m["config"], "latent_dim": "fifty"}},
        "'latent_dim' must be an integer or a list of integers, got 'fifty'",
    ),
    "a list": (lambda m: [m], "is not a pyrovae run folder"),
    "no config key": (
        lambda m: {k: v for k, v in m.items() if k != "config"},
        "'config' entry is missing",
    ),
    "no num_pixels": (
        lambda m: {k: v for k, v in m.items() if k != "num_pixels"},
        "'num_pixels' must be a whole number",
    ),
    "not JSON": (None, "cannot read"),
}


@pytest.mark.parametrize("edit,message", DAMAGED_CONFIGS.values(), ids=DAMAGED_CONFIGS.keys())
def test_a_damaged_config_is_one_line_naming_the_file(run, idx_dir, capsys, edit, message):
    if edit is None:
        (run / CONFIG).write_text('{"format": "pyrovae-run/1", "config": {')
    else:
        _edit_config(run, edit)
    for command in (
        lambda: _resume(run, idx_dir, "--epochs", "2"),
        lambda: _evaluate(run, idx_dir),
        lambda: main(["sample", str(run), "--out", str(run / "s.png")]),
        lambda: main(["plot", str(run), "--data-dir", str(idx_dir), "--no-download"]),
    ):
        assert command() == 2
        err = _err(capsys)
        assert message in err and str(run) in err


def test_a_bad_metrics_line_is_named_and_resume_rewrites_the_file(run, idx_dir, capsys):
    good = (run / METRICS).read_text()
    (run / METRICS).write_text(good + "{not json\n")
    with pytest.raises(PyroVAEError, match="metrics.jsonl line 2 is damaged"):
        read_metrics(run)
    # plot draws from the checkpoint's own copy of the metrics
    out = ["--out", str(run.parent / "figs"), "--data-dir", str(idx_dir), "--no-download"]
    assert main(["plot", str(run), *out]) == 0
    assert _resume(run, idx_dir, "--epochs", "2") == 0
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_a_checkpoint_of_another_architecture_names_what_differs(run, tmp_path, idx_dir, capsys):
    other = tmp_path / "other"
    assert main(_args(idx_dir, other, "--epochs", "1", "--hidden", "24")) == 0
    (run / CHECKPOINT).write_bytes((other / CHECKPOINT).read_bytes())
    assert _evaluate(run, idx_dir) == 2
    err = _err(capsys)
    assert "does not match the run's config" in err and "shapes differ" in err
    assert "(24, 784) saved, (16, 784) built" in err


def test_huge_sizes_are_refused_before_allocating(tmp_path, idx_dir, run, capsys):
    new = tmp_path / "huge"
    assert main(_args(idx_dir, new, "--hidden", "1000000000")) == 2
    assert "needs about" in _err(capsys) and not new.exists()
    assert main(["sample", str(run), "--num", "1000000000", "--out", str(tmp_path / "s.png")]) == 2
    assert "--num 1000000000 images need about" in _err(capsys)


def test_temporary_files_of_a_killed_write_are_removed_on_resume(run, idx_dir):
    for name in (".checkpoint.pt.abc123.tmp", ".metrics.jsonl.def456.tmp"):
        (run / name).write_bytes(b"partial")
    assert _resume(run, idx_dir, "--epochs", "2") == 0
    assert not list(run.glob(".*.tmp"))


def test_a_second_process_on_a_folder_in_use_gets_one_line(run, idx_dir, capsys):
    before = _files(run)
    with run_lock(run):  # another process's lock (flock: per open file, also within a process)
        assert _resume(run, idx_dir, "--epochs", "2") == 2
        assert "in use by another pyrovae process" in _err(capsys)
        assert _evaluate(run, idx_dir) == 2
        assert "in use" in _err(capsys)
        assert main(["sample", str(run)]) == 2  # into the run folder
        assert "in use" in _err(capsys)
    assert _files(run) == before
    assert _resume(run, idx_dir, "--epochs", "2") == 0  # free again


def test_sample_does_not_overwrite_without_force(run, tmp_path, capsys):
    target = tmp_path / "s.png"
    target.write_bytes(b"mine")
    assert main(["sample", str(run), "--out", str(target)]) == 2
    assert "pass --force" in _err(capsys) and target.read_bytes() == b"mine"
    assert main(["sample", str(run), "--out", str(target), "--force"]) == 0
    assert target.read_bytes().startswith(b"\x89PNG")
    assert main(["sample", str(run), "--out", str(tmp_path)]) == 2
    assert "is a folder" in _err(capsys)


def test_evaluations_at_other_settings_are_kept(run, idx_dir):
    for k in ("5", "10", "5"):
        assert _evaluate(run, idx_dir, "--num-samples", k, "--test-subset", "20") == 0
    entries = read_evaluations(run)
    assert [(e["epoch"], e["num_samples"], e["num_test"]) for e in entries] == [
        (1, 10, 20),
        (1, 5, 20),  # re-evaluated: replaced, now last
    ]
    assert json.loads((run / EVALUATION).read_text())["format"] == "pyrovae-evaluations/1"


def test_plot_after_resume_does_not_draw_an_older_epochs_evaluation(run, idx_dir, tmp_path, capsys):
    assert _evaluate(run, idx_dir, "--num-samples", "5", "--test-subset", "20") == 0
    assert _resume(run, idx_dir, "--epochs", "2") == 0
    capsys.readouterr()
    out = tmp_path / "figs"
    assert main(["plot", str(run), "--out", str(out), "--data-dir", str(idx_dir)]) == 0
    err = capsys.readouterr().err
    assert "bound_vs_k.png not drawn" in err and "epoch 1 only" in err and "epoch 2" in err
    assert not (out / "bound_vs_k.png").exists()


def test_paths_that_are_files_or_folders_in_the_wrong_place(tmp_path, idx_dir, run, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(_args(idx_dir, a_file / "run")) == 2
    assert "is a file" in _err(capsys)
    assert main(_args(idx_dir, a_file)) == 2
    assert "is a file" in _err(capsys)
    argv = ["plot", str(run), "--out", str(a_file), "--data-dir", str(idx_dir)]
    assert main(argv) == 2
    assert "is a file" in _err(capsys)


def test_analytic_kl_with_the_point_mass_guide_is_refused(capsys):
    with pytest.raises(PyroVAEError, match="bounds nothing"):
        TrainConfig(guide="delta", estimator="analytic-kl")
    TrainConfig(autoencoder=True, estimator="analytic-kl")  # β = 0: a plain autoencoder
    assert main(["train", "--guide", "delta", "--estimator", "analytic-kl"]) == 2
    assert "bounds nothing" in _err(capsys)


def test_the_divergence_rule():
    def guard(factor=100):
        g = DivergenceGuard(factor=factor)
        for loss in (520.0, 500.0, 480.0):  # median 500: the margin is 100 · 501
            g.check(loss)
        return g

    guard().check(500.0 + 100 * 501 - 1)  # just inside
    with pytest.raises(TrainingDiverged, match="blown up"):
        guard().check(500.0 + 100 * 501 + 1)
    off = DivergenceGuard(factor=0)
    for loss in (500.0, 1e30):
        off.check(loss)


def test_the_divergence_rule_scales_with_the_spread_of_an_objective_near_zero():
    """The Fisher AE's J nets to tens of nats while moving by thousands: the median deviation,
    not |median|, is its scale (median 0, deviation 2000: the margin is 100 · 2001). A real
    blow-up still stops it."""

    def guard():
        g = DivergenceGuard()
        for loss in (-2000.0, 0.0, 2000.0):
            g.check(loss)
        return g

    guard().check(5113.0)  # a run of the benchmark was once stopped here by |median| + 1
    guard().check(100 * 2001 - 1)  # just inside
    with pytest.raises(TrainingDiverged, match="blown up"):
        guard().check(100 * 2001 + 1)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_a_run_blowing_up_without_nan_stops_and_keeps_the_last_checkpoint(
    run, idx_dir, monkeypatch
):
    """Epoch 2's third step reports 10¹² nats (2·10¹⁰ per image): stopped before the update;
    epoch 1's checkpoint and metrics are kept as they were."""
    before = _files(run)
    real = estimators.ESTIMATORS["elbo"]

    class Exploding:
        def __init__(self, **kwargs):
            self.inner, self.steps = real(**kwargs), 0

        def loss_and_grads(self, model, guide, x):
            self.steps += 1
            loss = self.inner.loss_and_grads(model, guide, x)
            return 1e12 if self.steps == 3 else loss

    monkeypatch.setitem(estimators.ESTIMATORS, "elbo", Exploding)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 3: the loss jumped to 2e\\+10"):
        resume_run(run, epochs=2, data_dir=str(idx_dir), download=False, progress=False)
    assert _files(run) == before


def test_lr_1000_is_stopped_as_a_divergence(tmp_path, idx_dir, capsys):
    assert main(_args(idx_dir, tmp_path / "r", "--lr", "1000", "--no-compile")) == 2
    assert "the run has blown up" in _err(capsys)


def test_a_nan_test_elbo_stops_training(idx_dir):
    data = load_data("mnist", "dynamic", data_dir=str(idx_dir), download=False)
    data.test_x[3] = float("nan")
    config = TrainConfig(hidden=(16,), latent_dim=3)
    model, guide = build_model_and_guide(config, data.num_pixels)
    with pytest.raises(TrainingDiverged, match="epoch 1: the test ELBO is nan"):
        fit(model, guide, data, "elbo", epochs=1, batch_size=100, progress=False)


def test_every_promise_names_an_existing_test():
    """The guide's "What survives a fault": each promise cites tests that exist."""
    root = Path(__file__).resolve().parent
    section = (root.parent / "docs" / "guide" / "faults.md").read_text()
    names = set(re.findall(r"`(test_\w+)`", section))
    defined = set(
        re.findall(r"^def (test_\w+)", "".join(p.read_text() for p in root.glob("test_*.py")), re.M)
    )
    assert len(names) >= 15 and names <= defined, sorted(names - defined)


MNIST_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def test_a_registered_name_over_another_datasets_files_is_refused(tmp_path):
    """Fingerprints: label counts and mean intensity of the full splits, checked on read."""
    from pyrovae.data.files import DatasetSpec, Fingerprint, check_fingerprint

    spec = DatasetSpec(None, "Tiny", None, fingerprint=Fingerprint((2, 1), (1, 1), 0.5))
    raw = {
        "train_labels": torch.tensor([0, 0, 1]),
        "test_labels": torch.tensor([0, 1]),
        "train_images": torch.full((3, 2, 2), 127.5),
    }
    check_fingerprint(spec, raw, "here")  # counts and mean as known
    with pytest.raises(PyroVAEError, match=r"not Tiny's \(mean intensity 0.6000, not 0.5000\)"):
        check_fingerprint(spec, {**raw, "train_images": torch.full((3, 2, 2), 153.0)}, "here")
    with pytest.raises(PyroVAEError, match=r"label counts \[1, 2\]"):
        check_fingerprint(spec, {**raw, "train_labels": torch.tensor([0, 1, 1])}, "here")
    check_fingerprint(spec, {**raw, "train_labels": torch.tensor([0, 1])}, "here")  # a cut


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="../shared/data/mnist is absent")
def test_mnist_files_under_the_name_fashion_mnist_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYROVAE_DATA", str(MNIST_DIR))
    argv = ["train", "--dataset", "fashion-mnist", "--run-dir", str(tmp_path / "r")]
    assert main([*argv, "--no-download", "--epochs", "1", "--no-progress"]) == 2
    err = _err(capsys)
    assert "are not FashionMNIST's (label counts [5923, 6742" in err
    assert not (tmp_path / "r").exists()
    load_data("mnist", "dynamic", data_dir=str(MNIST_DIR), download=False)  # its own name: fine


@pytest.fixture(scope="module")
def reference_group(tmp_path_factory):
    """Two seeds side by side, never interrupted."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("reference-group")
    idx = root / "idx"
    write_dataset(idx)
    assert main(_args(idx, root / "group", "--seeds", "0", "1")) == 0
    return root / "group"


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault,n",
    [("kill-in-checkpoint", 4), ("kill-before-metrics", 2), ("kill-replicas-step", 8)],
)
def test_a_group_of_seeds_killed_then_resumed_is_the_group_straight_through(
    tmp_path, idx_dir, reference_group, fault, n
):
    """kill -9 of ``train --seeds 0 1`` (checkpoints are written seed-0, seed-1 each epoch):
    half-way through seed-1's checkpoint of epoch 2 (seed-0 is then an epoch ahead of it), after
    seed-1's checkpoint of epoch 1 before its metrics, or between two steps of epoch 2.
    Resumed, every replica's checkpoint is at the last epoch and its metrics equal the
    uninterrupted group's: bitwise for a replica that was not behind, to 1e-5 for one that
    caught up alone (its lone graph sums in another order than the batched one)."""
    from pyrovae.runs.seeds import seed_runs

    group = tmp_path / "group"
    killed = _harness(fault, n, _args(idx_dir, group, "--seeds", "0", "1"))
    assert killed.returncode == -9, killed.stderr
    before = [
        load_checkpoint(r)["epoch"] if (r / CHECKPOINT).exists() else 0 for r in seed_runs(group)
    ]
    if fault == "kill-in-checkpoint":
        assert before == [2, 1]  # seed-1 behind: it catches up alone first
    assert _resume(group, idx_dir) == 0
    for run, ref, done in zip(seed_runs(group), seed_runs(reference_group), before, strict=True):
        assert load_checkpoint(run)["epoch"] == EPOCHS
        got, want = _timeless(read_metrics(run)), _timeless(read_metrics(ref))
        assert [r["epoch"] for r in got] == list(range(1, EPOCHS + 1))
        if done == max(before):
            assert got == want, run.name
        else:
            for a, b in zip(got, want, strict=True):
                assert a["test_elbo"] == pytest.approx(b["test_elbo"], rel=1e-5)
        assert not list(run.glob(".*.tmp"))
