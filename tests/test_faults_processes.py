"""Faults of the processes and writers around a run: a peer rank that dies or hangs with no
torchrun agent to end the others (ranks started by hand, as on several machines), a DataLoader
worker killed as the out-of-memory killer kills, and TensorBoard's event file on a full disk.
Each stops every process still alive with one line and exit 2, and keeps the last checkpoint.

The ranks are real processes signalled from outside (SIGKILL, SIGSTOP); the worker kills itself
with SIGKILL; the full disk is ``os.write`` failing with ENOSPC, as the kernel's does.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import write_dataset
from distributed_harness import free_ports, rank_env
from test_faults import _args, _err, _resume

from pyrovae.cli import main
from pyrovae.core.distributed import check_timeout
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.peers import LEFT, post_mortem
from pyrovae.data import stream
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import CHECKPOINT, CONFIG, read_metrics
from pyrovae.runs.tensorboard import TAGS, TENSORBOARD

# ---------------------------------------------------------------- TensorBoard on a full disk


class FillingDisk:
    """``os.write`` into files under ``folder`` as on a disk that fills up once ``full()``
    holds: it then takes ``room`` more bytes (a short write), and every later write fails with
    ENOSPC. ``size_when_full``: the file's size at the first write on the full disk."""

    def __init__(self, monkeypatch, folder: Path, room: int, full: Callable[[], bool]) -> None:
        self.folder, self.room, self.full = folder.resolve(), room, full
        self.size_when_full: int | None = None
        self.freed = False
        self.write = os.write
        monkeypatch.setattr(os, "write", self._write)

    def _write(self, fd: int, data) -> int:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if self.freed or self.folder not in path.parents or not self.full():
            return self.write(fd, data)
        if self.size_when_full is None:
            self.size_when_full = os.fstat(fd).st_size
        taken = self.write(fd, bytes(data)[: self.room]) if self.room else 0
        self.room -= taken
        if not taken:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return taken

    def free(self) -> None:
        self.freed = True


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


def _events(run: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / TENSORBOARD))
    events.Reload()
    return events


def _full_disk_line(run: Path) -> str:
    folder = re.escape(str(run / TENSORBOARD))
    return rf"pyrovae: error: cannot write {folder}/events\.out\.tfevents\.\S+: the disk is full\n"


@needs_proc
def test_tensorboard_on_a_full_disk_is_one_line_naming_the_event_file_and_leaves_no_file(
    tmp_path, idx_dir, monkeypatch, capsys
):
    """The disk is full from the first event on: one line naming the file (no writer thread's
    traceback), and no event file or tensorboard/ folder left."""
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    FillingDisk(monkeypatch, run / TENSORBOARD, room=0, full=lambda: True)
    assert main(_args(idx_dir, run, "--epochs", "2", "--tensorboard")) == 2
    assert re.fullmatch(_full_disk_line(run), _err(capsys))
    assert not (run / TENSORBOARD).exists()
    # epoch 1's events come before its checkpoint: the folder is as a kill in epoch 1 leaves it
    assert sorted(p.name for p in run.iterdir()) == [".lock", CONFIG]


@needs_proc
def test_a_disk_filling_up_under_tensorboard_keeps_whole_epochs_and_resume_goes_on(
    tmp_path, idx_dir, monkeypatch, capsys
):
    """The disk fills up in epoch 2's events, part-way through a write: one line; the event
    file is cut back to epoch 1's events, the checkpoint of epoch 1 kept. With room again,
    --resume logs epochs 2 and 3, and TensorBoard shows every epoch once."""
    run = tmp_path / "run"
    disk = FillingDisk(
        monkeypatch, run / TENSORBOARD, room=1000, full=lambda: (run / CHECKPOINT).exists()
    )
    assert main(_args(idx_dir, run, "--tensorboard")) == 2
    assert re.fullmatch(_full_disk_line(run), _err(capsys))
    (events_file,) = (run / TENSORBOARD).iterdir()
    assert events_file.stat().st_size == disk.size_when_full > 0
    assert [p.step for p in _events(run).Scalars(TAGS["train_elbo"])] == [1]
    assert load_checkpoint(run)["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    disk.free()
    assert _resume(run, idx_dir, "--tensorboard") == 0
    events, metrics = _events(run), read_metrics(run)
    for key, tag in TAGS.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2, 3], tag
        assert [p.value for p in points] == pytest.approx([r[key] for r in metrics], rel=1e-6)


# ---------------------------------------------------------------- a DataLoader worker killed


def test_a_dataloader_worker_killed_is_one_line_and_keeps_the_checkpoint(
    tmp_path, idx_dir, monkeypatch, capsys
):
    """``--stream --workers 2``: the first worker to read after epoch 1's checkpoint gets
    SIGKILL (what the out-of-memory killer sends). One line saying a worker died and likely
    why (not a 68-line traceback, nor a compile "failure" when the signal lands in one), the
    checkpoint of epoch 1 kept, and --resume finishes the run."""
    run = tmp_path / "run"
    read = stream._Reader.__getitems__

    def read_or_die(self, rows):
        if torch.utils.data.get_worker_info() is not None and (run / CHECKPOINT).exists():
            os.kill(os.getpid(), signal.SIGKILL)
        return read(self, rows)

    monkeypatch.setattr(stream._Reader, "__getitems__", read_or_die)
    assert main(_args(idx_dir, run, "--stream", "--workers", "2")) == 2
    err = _err(capsys)
    assert err.startswith(f"pyrovae: error: a DataLoader worker reading {idx_dir} died (")
    assert "out-of-memory killer; the last checkpoint is kept" in err and "--resume" in err
    assert load_checkpoint(run)["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    monkeypatch.setattr(stream._Reader, "__getitems__", read)
    assert _resume(run, idx_dir) == 0
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


# ---------------------------------------------------------------- a peer rank lost


def _post_mortem(store, rank: int, world: int, error: BaseException):
    """This rank's post-mortem with --dist-timeout 1 s, so a check-in time of 1 s."""
    return post_mortem(store, rank, world, error, timeout=1.0)


@pytest.fixture
def store():
    """A TCPStore server (a rank 0's, without its process group) and a client per rank."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)

    def client() -> dist.Store:
        return dist.TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=5))

    return client


def test_the_ranks_left_name_the_one_that_never_checked_in(store):
    """Three ranks; rank 1 died in a collective, so ranks 0 and 2 check in and it never does:
    both name rank 1, within the check-in time (1 s here)."""
    gone = RuntimeError("[pair.cc:545] Read error [127.0.0.1]:29098: Connection reset by peer")
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        verdicts = {r: pool.submit(_post_mortem, store(), r, 3, gone) for r in (0, 2)}
    for r, verdict in verdicts.items():
        message = str(verdict.result())
        assert message.startswith(f"rank {r} of 3 stopped: rank 1 left the group (its process")
        assert message.endswith("start all 3 processes again with pyrovae train --resume RUN_DIR")
    assert time.monotonic() - start < 5  # rank 1 is awaited 1 s, rank 2 checks in at once


def test_a_rank_that_failed_on_its_own_is_named_by_the_others(store):
    """Rank 1 fails on its own (a one-line error of its own) and checks in first; ranks 0 and
    2, whose collectives then fail, name it and its error; rank 1 raises its own."""
    own = PyroVAEError("a DataLoader worker reading data died")
    closed = RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:39580")
    watcher = store()
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(_post_mortem, store(), 1, 3, own)
        watcher.wait([f"{LEFT}/1"], timedelta(seconds=5))
        others = {r: pool.submit(_post_mortem, store(), r, 3, closed) for r in (0, 2)}
    assert first.result() is None
    for r, verdict in others.items():
        assert str(verdict.result()) == (
            f"rank {r} of 3 stopped: rank 1 failed: a DataLoader worker reading data died"
        )


WORLD, MANY_EPOCHS = 2, 200  # ranks train until signalled (a few epochs)


class Ranks:
    """The two ranks of a run started as torchrun starts them but with no agent, each as if
    on a machine of its own (LOCAL_RANK 0 of 1, a cache of its own); ``start`` them again to
    resume. Each start's output goes to ROOT/N/rank-R.{out,err}; ``end`` kills what is left."""

    def __init__(self, root: Path) -> None:
        self.root, self.started = root, []

    def start(self, *argv: str) -> list[subprocess.Popen]:
        logs = self.root / str(len(self.started) // WORLD)
        logs.mkdir()
        port = free_ports(1)[0]
        for r in range(WORLD):
            env = rank_env(r, WORLD, port) | {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
            env["XDG_CACHE_HOME"] = str(self.root / f"cache-{r}")
            cmd = [sys.executable, "-m", "pyrovae", *argv]
            with open(logs / f"rank-{r}.out", "w") as out, open(logs / f"rank-{r}.err", "w") as err:
                self.started.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err))
        self.logs = logs
        return self.started[-WORLD:]

    def only_line(self, rank: int) -> str:
        """What rank ``rank`` of the last start wrote on stderr: one line."""
        err = (self.logs / f"rank-{rank}.err").read_text()
        assert err.startswith("pyrovae: error: ") and err.count("\n") == 1, err[-3000:]
        return err

    def end(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
            p.wait()


def _when(condition: Callable[[], bool], ranks: Ranks, limit: float = 240) -> None:
    """Wait for ``condition`` while every rank of the last start runs."""
    deadline = time.monotonic() + limit
    while not condition():
        running = [p.poll() is None for p in ranks.started[-WORLD:]]
        assert all(running), [(ranks.logs / f"rank-{r}.err").read_text()[-2000:] for r in (0, 1)]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _seconds(wait: Callable[[], object]) -> float:
    start = time.monotonic()
    wait()
    return time.monotonic() - start


@pytest.mark.slow
def test_a_peer_killed_or_hung_without_an_agent_is_one_line_and_the_run_resumes(tmp_path):
    """Two ranks, no torchrun agent (the multi-node case). kill -9 of rank 1 after epoch 1's
    checkpoint: rank 0 stops within the check-in time (5 s; not --dist-timeout, 60 s) with one
    line naming rank 1 and saying to resume, not gloo's 37-line "Connection reset by peer"
    traceback. Both ranks --resume it and train on; then SIGSTOP of rank 0, whose process holds
    the group's store: rank 1 stops after --dist-timeout (3 s) and the check-in time with one
    line naming rank 0 and saying to end it, not "Timed out waiting 3000ms". Each time the
    checkpoint stays whole and the metrics match it."""
    write_dataset(tmp_path / "idx")
    run, ranks = tmp_path / "run", Ranks(tmp_path)
    trained = lambda: load_checkpoint(run)["epoch"] if (run / CHECKPOINT).exists() else 0  # noqa: E731
    try:
        argv = _args(tmp_path / "idx", run, "--no-compile", "--epochs", str(MANY_EPOCHS))
        procs = ranks.start(*argv, "--dist-timeout", "60")
        _when(lambda: trained() >= 1, ranks)
        procs[1].kill()
        assert _seconds(lambda: procs[0].wait(timeout=60)) < 30
        assert procs[0].returncode == 2
        err = ranks.only_line(0)
        assert err.startswith("pyrovae: error: rank 0 of 2 stopped: rank 1 left the group")
        assert err.endswith(f"start all 2 processes again with pyrovae train --resume {run}\n")
        done = trained()
        assert [r["epoch"] for r in read_metrics(run)] == list(range(1, done + 1))

        argv = ["train", "--resume", str(run), "--data-dir", str(tmp_path / "idx")]
        procs = ranks.start(*argv, "--no-download", "--no-progress", "--dist-timeout", "3")
        _when(lambda: trained() > done, ranks)  # the resumed run trains on
        procs[0].send_signal(signal.SIGSTOP)
        assert _seconds(lambda: procs[1].wait(timeout=60)) < 3 + 3 + 10  # a loaded machine
        assert procs[1].returncode == 2
        err = ranks.only_line(1)
        assert err.startswith(
            "pyrovae: error: rank 1 of 2 stopped: rank 0 did not answer within --dist-timeout 3 s"
        )
        assert err.endswith(
            f"end every rank still running, then start all 2 processes again with pyrovae "
            f"train --resume {run}\n"
        )
    finally:
        ranks.end()
    state = load_checkpoint(run)  # rank 0 stopped, then killed, anywhere: whole all the same
    assert [r["epoch"] for r in state["history"]] == list(range(1, state["epoch"] + 1))


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "0", "-1", "604801"])
def test_a_dist_timeout_out_of_range_is_one_line_at_parse_time(tmp_path, capsys, value):
    """--dist-timeout inf or 1e300 overflowed torch's timedelta with a traceback under torchrun;
    every value outside (0, a week] is refused as it is parsed, with or without torchrun, and
    the API's check (process_group_from_env) is the same."""
    with pytest.raises(SystemExit) as stop:
        main(["train", "--dist-timeout", value, "--run-dir", str(tmp_path / "r")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"pyrovae train: error: argument --dist-timeout: must be a number of seconds in "
        f"(0, 604800] (a week), got {float(value)}"
    )
    assert not (tmp_path / "r").exists()
    with pytest.raises(PyroVAEError, match=r"--dist-timeout must be a number of seconds in"):
        check_timeout(float(value))
