"""Fault injection on run folders, resume and signals: a checkpoint missing or a dangling link
next to recorded epochs (refused, or ``--restart`` moving the records aside), a checkpoint
whose SHA-256 was deleted, SIGTERM during training (one process and torchrun ranks), stale
temporary files of killed writes in ``figures/``, a ``.lock`` that is a folder, a ``figures``
path that is a file, and ``--resume`` with flags equal to, or different from, the recorded
settings. Every refusal is one line and exit 2, and leaves the folder as it was.

Signals are sent by the process to itself through the kernel (tests/signal_harness.py), at a
chosen moment, as a scheduler would send them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_faults import _args, _err, _resume, _timeless

from pyrovae.cli import main
from pyrovae.cli import train as train_cli
from pyrovae.core.signals import EXIT_TERMINATED
from pyrovae.runs.checkpoint import (
    CHECKPOINT_FORMAT,
    UNCHECKED_FORMATS,
    content_digest,
    load_checkpoint,
)
from pyrovae.runs.folder import CHECKPOINT, CONFIG, EVALUATION, FIGURES, LOCK, METRICS, read_metrics
from pyrovae.runs.records import RESTARTED

HERE = Path(__file__).resolve().parent
SIGNALS = HERE / "signal_harness.py"
TRAINED = 2  # epochs of the template run
STEPS = 6  # 300 images in batches of 50


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A run trained straight for 2 epochs (no figures) and evaluated once, with its data."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("template")
    idx, run = root / "idx", root / "run"
    write_dataset(idx)
    assert main(_args(idx, run, "--epochs", str(TRAINED))) == 0
    evaluate = ["evaluate", str(run), "--data-dir", str(idx), "--no-download", "--no-progress"]
    assert main([*evaluate, "--num-samples", "2", "--test-subset", "10"]) == 0
    return run, idx


@pytest.fixture
def run(template, tmp_path):
    """A copy of the template run (symbolic links kept as links), and its data folder."""
    shutil.copytree(template[0], tmp_path / "run", symlinks=True)
    return tmp_path / "run", template[1]


def _snapshot(folder: Path) -> dict[str, object]:
    """Every entry of ``folder`` (recursively): a link's target, a file's bytes."""
    entries: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            entries[key] = ("link", str(p.readlink()))
        elif p.is_file() and p.name != LOCK:
            entries[key] = p.read_bytes()
    return entries


def _dangling(run: Path) -> Path:
    target = run.parent / "scratch" / CHECKPOINT  # a checkpoint kept elsewhere, now gone
    (run / CHECKPOINT).unlink()
    (run / CHECKPOINT).symlink_to(target)
    return target


CHECKPOINT_FAULTS = {
    "missing": (
        lambda run: (run / CHECKPOINT).unlink(),
        "checkpoint.pt is missing, but metrics.jsonl records 2 epochs, "
        "evaluation.json records 1 evaluation",
    ),
    "dangling-link": (
        _dangling,
        "checkpoint.pt is a symbolic link to {scratch}/checkpoint.pt, which does not exist, "
        "but metrics.jsonl records 2 epochs, evaluation.json records 1 evaluation",
    ),
    "missing-with-only-an-evaluation": (
        lambda run: [(run / name).unlink() for name in (CHECKPOINT, METRICS)],
        "checkpoint.pt is missing, but evaluation.json records 1 evaluation",
    ),
}


@pytest.mark.parametrize("damage,message", CHECKPOINT_FAULTS.values(), ids=CHECKPOINT_FAULTS.keys())
def test_a_resume_without_its_checkpoint_refuses_and_names_what_is_recorded(
    run, capsys, damage, message
):
    """Before: the run restarted from epoch 0, rewrote metrics.jsonl (2 records became 1),
    replaced the link with a plain file, and exited 0."""
    path, idx = run
    damage(path)
    before = _snapshot(path)
    assert _resume(path, idx, "--epochs", "1") == 2
    err = _err(capsys)
    expected = message.format(scratch=path.parent / "scratch")
    assert f"cannot resume {path}: {expected};" in err
    assert f"pass --restart to move the run's records into {path}/{RESTARTED}" in err
    assert _snapshot(path) == before  # nothing rewritten, the link still a link


def test_a_resume_from_a_checkpoint_older_than_the_metrics_refuses(run, tmp_path, capsys):
    """A checkpoint is written before its epoch's metrics line, so metrics past the checkpoint
    mean an older checkpoint was put back; resuming would rewrite those records away."""
    path, idx = run
    assert main(_args(idx, tmp_path / "one", "--epochs", "1")) == 0  # the same run's epoch 1
    shutil.copy(tmp_path / "one" / CHECKPOINT, path / CHECKPOINT)
    before = _snapshot(path)
    assert _resume(path, idx, "--epochs", "3") == 2
    err = _err(capsys)
    assert (
        f"cannot resume {path}: metrics.jsonl records epochs up to {TRAINED}, but checkpoint.pt "
        "holds epoch 1 (an older checkpoint?); restore the checkpoint of epoch 2, or pass "
        f"--restart to move the run's records into {path}/{RESTARTED}"
    ) in err
    assert _snapshot(path) == before
    assert _resume(path, idx, "--epochs", str(TRAINED), "--restart") == 0  # the way on


def test_restart_moves_the_records_aside_and_trains_the_same_run_from_epoch_0(
    run, template, capsys
):
    """The records (the dangling link as a link) move into restarted-<time>/, nothing is
    deleted, and the run trained again equals the run trained straight, record for record."""
    path, idx = run
    target = _dangling(path)
    records = _snapshot(path)
    assert _resume(path, idx, "--epochs", str(TRAINED), "--restart") == 0
    (aside,) = path.glob(f"{RESTARTED}*")
    note = capsys.readouterr().err
    moved = f"{CHECKPOINT}, {EVALUATION}, {METRICS}"
    assert note == f"pyrovae: note: --restart: moved {moved} into {aside}\n"
    kept = {name: value for name, value in records.items() if name != CONFIG}
    assert _snapshot(aside) == kept and (aside / CHECKPOINT).readlink() == target
    assert _timeless(read_metrics(path)) == _timeless(read_metrics(template[0]))
    assert load_checkpoint(path)["epoch"] == TRAINED
    # a second restart keeps the first's folder where it is, beside its own
    assert _resume(path, idx, "--epochs", "1", "--restart") == 0
    assert len(list(path.glob(f"{RESTARTED}*"))) == 2 and _snapshot(aside) == kept


def test_restart_is_for_resume(tmp_path, template, capsys):
    assert main(_args(template[1], tmp_path / "new", "--restart")) == 2
    assert "--restart is for --resume RUN_DIR" in _err(capsys)
    assert not (tmp_path / "new").exists()


def _rewrite_checkpoint(path: Path, fmt: str, checksum: bool = True, change: bool = False):
    """Write ``path``'s checkpoint again in format ``fmt``, with or without its SHA-256 (of
    the content before ``change`` adds 1 to a weight)."""
    state = torch.load(path / CHECKPOINT, weights_only=True)
    content = {**{k: v for k, v in state.items() if k != "sha256"}, "format": fmt}
    if checksum:
        content["sha256"] = content_digest(content)
    if change:
        next(iter(content["model"].values())).view(-1)[0] += 1.0
    torch.save(content, path / CHECKPOINT)


def test_a_checkpoint_without_its_sha256_is_refused_unless_its_format_predates_checksums(
    run, capsys
):
    """Before: a checkpoint whose sha256 entry was deleted loaded changed weights silently."""
    path, idx = run
    assert load_checkpoint(path)["format"] == CHECKPOINT_FORMAT == "pyrovae-checkpoint/2"
    _rewrite_checkpoint(path, CHECKPOINT_FORMAT, checksum=False, change=True)
    assert _resume(path, idx, "--epochs", "3") == 2
    assert _err(capsys) == (
        f"pyrovae: error: {path / CHECKPOINT} has no SHA-256 entry, which every "
        "pyrovae-checkpoint/2 checkpoint carries: it was altered after it was written and its "
        "content cannot be checked; restore it from a copy or train again\n"
    )
    # the format from before checksums: read, and a note says it was not checked
    (old,) = UNCHECKED_FORMATS
    _rewrite_checkpoint(path, old, checksum=False)
    assert _resume(path, idx, "--epochs", "3") == 0
    assert capsys.readouterr().err == (
        f"pyrovae: note: {path / CHECKPOINT} is a {old} checkpoint, a format from before "
        "checksums: loaded without checking its content (the next checkpoint written carries "
        "a SHA-256)\n"
    )
    resumed = load_checkpoint(path)  # the current format again, with its checksum
    assert resumed["format"] == CHECKPOINT_FORMAT and resumed["epoch"] == 3
    # that older format's checkpoints written with a checksum are checked, silently
    _rewrite_checkpoint(path, old, change=True)
    assert _resume(path, idx, "--epochs", "4") == 2
    assert "is corrupt: its content does not match the SHA-256" in _err(capsys)
    _rewrite_checkpoint(path, old)
    assert _resume(path, idx, "--epochs", "4") == 0
    assert capsys.readouterr().err == ""


def _harness_signal(name, moment, n, argv, timeout=120):
    """``pyrovae ARGV`` sent signal NAME at the N-th MOMENT (tests/signal_harness.py)."""
    return subprocess.run(
        [sys.executable, str(SIGNALS), name, moment, str(n), "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sigterm_during_a_checkpoint_write_exits_143_with_one_line_and_no_temporary(
    tmp_path, template
):
    """SIGTERM half-way through epoch 2's checkpoint. Before: exit by the signal (-15),
    nothing on stderr, and the half-written .checkpoint.pt.*.tmp left behind."""
    path = tmp_path / "run"
    result = _harness_signal("TERM", "checkpoint", 2, _args(template[1], path))
    assert result.returncode == EXIT_TERMINATED == 143, result.stderr
    assert result.stderr == "pyrovae: terminated (SIGTERM); the last checkpoint is kept\n"
    assert not list(path.glob(".*.tmp"))  # the interrupted write removed its temporary
    assert load_checkpoint(path)["epoch"] == 1 and [r["epoch"] for r in read_metrics(path)] == [1]


@pytest.mark.slow
def test_sigterm_stops_every_torchrun_rank_with_one_line_from_rank_0(tmp_path, template):
    """torchrun (as Slurm or Kubernetes) sends SIGTERM to every rank: here each rank sends it
    to itself before global step 9 (epoch 2). All exit 143, rank 0 alone says so, and the
    checkpoint of epoch 1 is the one kept."""
    from distributed_harness import free_ports, launch

    path = tmp_path / "run"
    argv = [*_args(template[1], path), "--dist-timeout", "60"]
    ranks = launch(
        [str(SIGNALS), "TERM", "step", str(STEPS + 3), "--", *argv], 2, free_ports(1)[0], 120
    )
    assert [r.returncode for r in ranks] == [EXIT_TERMINATED] * 2, ranks[0].stderr[-2000:]
    assert ranks[0].stderr == "pyrovae: terminated (SIGTERM); the last checkpoint is kept\n"
    assert ranks[1].stderr == ""
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["world_size"] == 2
    assert not list(path.glob(".*.tmp"))


def test_the_sigterm_handler_is_there_only_while_a_command_runs(monkeypatch, capsys):
    """Nothing at import (pyrovae is imported here already), SIGTERM raised as an interrupt
    while a command runs, the previous handler after it."""
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def run(args) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), handler  # else the signal below would stop the tests
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises at the next bytecode, long before this ends

    monkeypatch.setattr(train_cli, "run", run)
    assert main(["train"]) == EXIT_TERMINATED
    assert capsys.readouterr().err == "pyrovae: terminated (SIGTERM); the last checkpoint is kept\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


class _SignalsInDel:
    """An object whose ``__del__`` receives SIGTERM, where Python ignores exceptions (as in
    the hooks that run after a DataLoader forks its workers)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs here, at a backward jump
            pass


def test_a_sigterm_that_lands_where_python_ignores_errors_still_stops_the_command(
    monkeypatch, capsys
):
    """Before: ``Exception ignored in: ... Terminated`` on stderr, and the command (a training
    run, in the case seen) went on as if no signal had come."""
    finished = []

    def run(args) -> None:
        _SignalsInDel()  # dropped at once: __del__ runs here
        time.sleep(1)  # the command goes on (training, in the case seen)
        finished.append(True)

    monkeypatch.setattr(train_cli, "run", run)
    assert main(["train"]) == EXIT_TERMINATED and not finished
    assert capsys.readouterr().err == "pyrovae: terminated (SIGTERM); the last checkpoint is kept\n"
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # the retry's timer and handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # are gone with the command


def test_an_error_the_sigterm_causes_while_unwinding_is_part_of_the_termination(
    monkeypatch, capsys
):
    """A scheduler signals every process of the job: DataLoader workers die too, and torch
    reports them killed while the command unwinds. Before: that RuntimeError's traceback."""

    def run(args) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:  # what torch's SIGCHLD handler raises as the iterator shuts down
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    monkeypatch.setattr(train_cli, "run", run)
    assert main(["train"]) == EXIT_TERMINATED
    assert capsys.readouterr().err == "pyrovae: terminated (SIGTERM); the last checkpoint is kept\n"


def _stale(folder: Path) -> None:
    """Temporary files as a killed figure write leaves them (atomic_write's names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (".reconstructions.png.k1ll3d.tmp", ".samples.png.x9q2w8.tmp"):
        (folder / name).write_bytes(b"\x89PNG half")


def test_stale_figure_temporaries_are_removed_by_plot_and_by_resume(run, tmp_path):
    """kill -9 of a plot half-way through its second figure leaves .reconstructions.png.*.tmp
    in figures/; before, nothing removed it. Now plot removes such files where it writes (also
    in --out), and resume in RUN_DIR/figures as in RUN_DIR."""
    path, idx = run
    data = ["--data-dir", str(idx), "--no-download"]
    killed = _harness_signal("KILL", "figure", 2, ["plot", str(path), *data])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name[:20] for p in (path / FIGURES).glob(".*.tmp")] == [".reconstructions.png"]
    assert main(["plot", str(path), *data]) == 0
    assert not list((path / FIGURES).glob(".*.tmp"))
    assert (path / FIGURES / "reconstructions.png").read_bytes().startswith(b"\x89PNG\r\n")
    out = tmp_path / "out"
    _stale(out / "one")
    _stale(out)
    several = ["plot", str(path), str(path), "--labels", "one", "two", "--out", str(out)]
    assert main([*several, *data]) == 0
    assert not list(out.rglob(".*.tmp"))
    _stale(path / FIGURES)
    assert _resume(path, idx, "--epochs", str(TRAINED + 1)) == 0
    assert not list((path / FIGURES).glob(".*.tmp"))


def test_a_lock_that_is_a_folder_is_named(tmp_path, template, capsys):
    """Before: ``cannot write RUN: it is a folder, not a file``, naming the run folder."""
    path = tmp_path / "run"
    (path / LOCK).mkdir(parents=True)
    assert main(_args(template[1], path)) == 2
    assert _err(capsys) == (
        f"pyrovae: error: {path / LOCK} is a folder, where pyrovae keeps the lock file of "
        f"{path}; remove that folder (pyrovae makes the file)\n"
    )


def test_a_figures_path_that_is_a_file_is_refused_before_an_epoch_is_trained(run, capsys):
    """Before: epoch 3 was trained, then ``cannot use RUN/figures: File exists``."""
    path, idx = run
    (path / FIGURES).write_text("mine")
    before = _snapshot(path)
    argv = ["train", "--resume", str(path), "--epochs", "3", "--data-dir", str(idx)]
    assert main([*argv, "--no-download", "--no-progress"]) == 2
    assert _err(capsys) == (
        f"pyrovae: error: {path / FIGURES} is a file, where train draws the run's figures into "
        "a folder; move it away, or pass --no-figures\n"
    )
    assert _snapshot(path) == before  # no epoch trained
    assert _resume(path, idx, "--epochs", "3") == 0  # --no-figures: nothing drawn there


def test_resume_accepts_flags_equal_to_the_recorded_values_and_names_changed_ones(run, capsys):
    path, idx = run
    same = ["--dataset", "mnist", "--hidden", "16", "--latent-dim", "3", "--batch-size", "50"]
    same += ["--lr", "0.001", "--adam-betas", "0.9", "0.999", "--train-subset", "300"]
    before = _snapshot(path)
    changed = ["--hidden", "16", "32", "--lr", "0.01", "--stream"]
    assert _resume(path, idx, "--epochs", "3", *changed) == 2
    assert _err(capsys) == (
        "pyrovae: error: --resume keeps the run's settings; drop --stream (recorded False, "
        "given True), --hidden (recorded 16, given 16 32), --lr (recorded 0.001, given 0.01)\n"
    )
    assert _snapshot(path) == before
    assert _resume(path, idx, "--epochs", "3", *same) == 0
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3]


def test_train_help_states_what_resume_keeps(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    rule = (
        "The run keeps the settings it recorded: of the setting flags above, --epochs (the total "
        "to reach) and --device may change; any other (--lr, --hidden, --estimator, …) is "
        "accepted only with the recorded value, a changed one is refused"
    )
    assert rule in text
    assert "--restart with --resume: train the run again from epoch 0" in text
