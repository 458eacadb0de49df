"""``--tensorboard``: the event file read back equals metrics.jsonl, holds the image grids, does
not change training, drops what a killed process logged after its checkpoint, and is written by
rank 0 only."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")  # the dev extra installs it

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    IMAGES,
    EventAccumulator,
)

from pyrovae.cli import main  # noqa: E402
from pyrovae.runs import read_metrics, resume_run  # noqa: E402
from pyrovae.runs import tensorboard as board  # noqa: E402
from pyrovae.runs import train as train_module  # noqa: E402

SMALL = ["--dataset", "mnist", "--hidden", "16", "--latent-dim", "3", "--batch-size", "50"]
SMALL += ["--train-subset", "100", "--device", "cpu", "--no-progress", "--no-download"]


def _train(idx_dir, run: Path, *extra: str) -> int:
    args = ["train", *SMALL, "--data-dir", str(idx_dir), "--run-dir", str(run), "--no-figures"]
    return main([*args, *extra])


def _events(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / board.TENSORBOARD), size_guidance={IMAGES: 0})
    events.Reload()
    return events


def test_the_event_file_holds_the_metrics_and_image_grids(tmp_path, idx_dir):
    run = tmp_path / "run"
    assert _train(idx_dir, run, "--epochs", "2", "--tensorboard") == 0
    metrics = read_metrics(run)
    events = _events(run)
    for key, tag in board.TAGS.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == pytest.approx([r[key] for r in metrics], rel=1e-6)
    for tag, size in (("images/reconstructions", (59, 233)), ("images/prior_samples", (59, 233))):
        images = events.Images(tag)
        assert [i.step for i in images] == [1, 2]
        assert (images[0].height, images[0].width) == size  # 2 rows of 8 tiles of 28 + padding
    assert events.Tags()["tensors"] == ["config/text_summary"]


def test_logging_does_not_change_the_run(tmp_path, idx_dir):
    assert _train(idx_dir, tmp_path / "plain", "--epochs", "2") == 0
    assert _train(idx_dir, tmp_path / "logged", "--epochs", "2", "--tensorboard") == 0
    strip = [
        {k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "plain")
    ]
    logged = read_metrics(tmp_path / "logged")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in logged] == strip
    assert not (tmp_path / "plain" / board.TENSORBOARD).exists()


class Killed(Exception):
    pass


def test_a_resume_drops_what_was_logged_after_the_checkpoint(tmp_path, idx_dir, monkeypatch):
    """Killed between epoch 3's events and its checkpoint: the resumed run logs epoch 3 again,
    and TensorBoard shows each epoch once (without purge_step, epoch 3 would appear twice)."""
    real = train_module.save_checkpoint

    def save_or_die(path, state):
        if state["epoch"] == 3:
            raise Killed
        real(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", save_or_die)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        _train_api(idx_dir, run)
    assert [p.step for p in _events(run).Scalars("bound/train")] == [1, 2, 3]
    monkeypatch.setattr(train_module, "save_checkpoint", real)
    resume_run(
        run,
        epochs=4,
        data_dir=str(idx_dir),
        download=False,
        progress=False,
        figures=False,
        tensorboard=True,
    )
    metrics = read_metrics(run)
    points = _events(run).Scalars("bound/train")
    assert [p.step for p in points] == [1, 2, 3, 4]
    assert [p.value for p in points] == pytest.approx([r["train_elbo"] for r in metrics])


def _train_api(idx_dir, run: Path) -> None:
    """``main`` turns exceptions into exit codes; the API lets the test's one through."""
    from pyrovae import TrainConfig, train_run

    config = TrainConfig(
        dataset="mnist",
        hidden=(16,),
        latent_dim=3,
        batch_size=50,
        train_subset=100,
        epochs=4,
        device="cpu",
    )
    train_run(config, run, str(idx_dir), False, progress=False, figures=False, tensorboard=True)


def test_only_the_main_process_opens_a_log(tmp_path, monkeypatch):
    monkeypatch.setattr(board, "is_main_process", lambda: False)
    assert board.open_log(tmp_path, None, None, None, None, 0) is None
    assert not (tmp_path / board.TENSORBOARD).exists()


def _rank_says(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    Path(out).write_text(str(board.is_main_process()))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_is_main_process_is_rank_zero_of_a_process_group(tmp_path):
    assert board.is_main_process()  # no process group: the one process is the main one
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(
            target=_rank_says, args=(r, str(tmp_path / "store"), str(tmp_path / f"{r}"))
        )
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert [(tmp_path / f"{r}").read_text() for r in (0, 1)] == ["True", "False"]


def test_a_missing_tensorboard_is_one_line_before_anything_is_written(
    tmp_path, idx_dir, monkeypatch, capsys
):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert _train(idx_dir, tmp_path / "run", "--epochs", "1", "--tensorboard") == 2
    err = capsys.readouterr().err
    assert err == (
        "pyrovae: error: --tensorboard needs the tensorboard package: "
        "pip install 'pyrovae[tensorboard]'\n"
    )
    assert not (tmp_path / "run").exists()
