"""A group of runs that differ only in their seed, trained side by side in one process.

A group folder holds ``seeds.json`` (the seeds, in order) and one complete run folder per seed,
``seed-S/``: its own config (with ``seed`` = S), checkpoint, metrics and figures, so that
``evaluate``, ``plot``, ``sample`` and ``diagnose`` work on each as on any run, and a group
folder given to ``evaluate`` reports the mean ± standard deviation over its seeds. Training
(:func:`~pyrovae.inference.replicas.fit_replicas`) batches the replicas' steps into one graph;
each replica is the run its seed would give alone (up to floating-point summation order).

Resuming a group resumes every replica from its own checkpoint. A kill can fall between two
replicas' checkpoints of one epoch: a replica that is behind then first trains alone up to the
others (the same run), and the group goes on side by side.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyrovae.core.distributed import is_distributed
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import atomic_write, check_writable
from pyrovae.core.runtime import get_rng_state, resolve_device
from pyrovae.inference.side_by_side import check_seeds, fit_replicas, mean_and_std
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import (
    CONFIG,
    check_new_run,
    create_run,
    default_run_dir,
    make_run_dir,
    read_config,
    read_run_meta,
    run_lock,
)
from pyrovae.runs.load import restore
from pyrovae.runs.tensorboard import require_tensorboard
from pyrovae.runs.train import (
    RunWriter,
    _data,
    _fresh_start,
    _optimizer,
    _recover,
    _restore_rng,
    _train,
    fit_settings,
)

SEEDS_FILE = "seeds.json"
SEEDS_FORMAT = "pyrovae-seeds/1"


def seed_folder(group: Path, seed: int) -> Path:
    return group / f"seed-{seed}"


def is_group(path: str | Path) -> bool:
    """Whether ``path`` is a group folder (it holds ``seeds.json``)."""
    return (Path(path) / SEEDS_FILE).is_file()


def read_seeds(group: str | Path) -> list[int]:
    """The group's seeds, in order; a damaged ``seeds.json`` is one line."""
    file = Path(group) / SEEDS_FILE
    try:
        meta = json.loads(file.read_text())
        if meta.get("format") != SEEDS_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        return check_seeds([int(s) for s in meta["seeds"]])
    except (OSError, ValueError, TypeError, KeyError, PyroVAEError) as e:
        raise PyroVAEError(f"{file} is damaged ({e})") from None


def seed_runs(path: str | Path) -> list[Path]:
    """The run folders of group ``path``, one per seed in order; a missing one is an error."""
    group = Path(path)
    runs = [seed_folder(group, s) for s in read_seeds(group)]
    for run in runs:
        if not (run / CONFIG).is_file():
            raise PyroVAEError(
                f"{run} has no {CONFIG}: the group was stopped while it was being created; "
                f"remove {group} and train it again"
            )
    return runs


def summarize(results: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, tuple]:
    """(mean, standard deviation) over replicas of each numeric figure in ``keys``."""
    out = {}
    for key in keys:
        values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
        if len(values) == len(results):
            out[key] = mean_and_std(values)
    return out


def _check_one_process() -> None:
    if is_distributed():
        raise PyroVAEError("seeds side by side run in one process; drop torchrun or --seeds")


def train_seeds(
    config: TrainConfig,
    seeds: list[int],
    run_dir: str | Path | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    figures: bool = True,
    tensorboard: bool = False,
    epoch_lines: bool | None = None,
) -> tuple[Path, list[list[dict[str, Any]]]]:
    """Train ``config`` once per seed in ``seeds``, side by side; returns the group folder and
    each replica's per-epoch metrics. As :func:`~pyrovae.runs.train.train_run`, bad input
    writes nothing (folder, data, model size and first loss of every replica checked first)."""
    _check_one_process()
    seeds = check_seeds(seeds)
    if tensorboard:
        require_tensorboard()
    device = resolve_device(config.device)
    group = Path(run_dir) if run_dir is not None else default_run_dir(config)
    check_new_run(group)
    check_writable(group)
    data = _data(config, device, data_dir, download)
    configs = [config.replace(seed=s) for s in seeds]
    parts = [_fresh_start(c, data, device) for c in configs]
    meta = {"device": str(device), "num_pixels": data.num_pixels,
            "num_classes": data.num_classes, "data": data.describe()}
    make_run_dir(group)
    with ExitStack() as locks:
        locks.enter_context(run_lock(group))
        body = json.dumps({"format": SEEDS_FORMAT, "seeds": seeds}, indent=2) + "\n"
        atomic_write(group / SEEDS_FILE, lambda f: f.write(body.encode()))
        writers = []
        for c, (model, guide, optimizer) in zip(configs, parts, strict=True):
            path = seed_folder(group, c.seed)
            make_run_dir(path)
            locks.enter_context(run_lock(path))
            create_run(path, c, meta)
            writers.append(
                RunWriter(c, path, model, guide, optimizer, data, 0, [], figures, tensorboard)
            )
        return group, _side_by_side(config, seeds, writers, data, 0, None, progress, epoch_lines)


def _side_by_side(config, seeds, writers, data, start_epoch, streams, progress, epoch_lines):
    try:
        fit_replicas(
            [w.model for w in writers],
            [w.guide for w in writers],
            data,
            config.estimator,
            seeds=seeds,
            optimizers=[w.optimizer for w in writers],
            start_epoch=start_epoch,
            streams=streams,
            progress=progress,
            epoch_lines=epoch_lines,
            on_epoch_end=[w.checkpoint for w in writers],
            **fit_settings(config),
        )
    finally:
        for w in writers:
            w.close()
    return [w.finish() for w in writers]


def resume_seeds(
    group_dir: str | Path,
    epochs: int | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    figures: bool = True,
    allow_other_data: bool = False,
    tensorboard: bool = False,
    restart: bool = False,
    epoch_lines: bool | None = None,
) -> tuple[Path, list[list[dict[str, Any]]]]:
    """Continue every replica of group ``group_dir`` up to ``epochs`` (default: its own), side
    by side, each from its own checkpoint (see the module docstring); with ``restart`` every
    replica's records are set aside and the group trains again from epoch 0, as
    :func:`~pyrovae.runs.train.resume_run` does for one run."""
    _check_one_process()
    if tensorboard:
        require_tensorboard()
    group = Path(group_dir)
    seeds, runs = read_seeds(group), seed_runs(group)
    changes = {k: v for k, v in {"epochs": epochs, "device": device}.items() if v is not None}
    configs = [read_config(run).replace(**changes) for run in runs]
    base = configs[0]
    for c in configs[1:]:
        if c.replace(seed=base.seed) != base:
            raise PyroVAEError(f"the runs of {group} differ in more than their seed")
    dev = resolve_device(base.device)
    with ExitStack() as locks:
        locks.enter_context(run_lock(group))
        for run in runs:
            locks.enter_context(run_lock(run))
        recovered = [
            _recover(run, c, dev, restart, figures) for run, c in zip(runs, configs, strict=True)
        ]
        recorded = read_run_meta(runs[0]).get("data")
        data = _data(base, dev, data_dir, download, recorded, allow_other_data)
        done = [int(state["epoch"]) if state is not None else 0 for state, _ in recovered]
        writers, streams = [], []
        for run, c, (state, history), epoch in zip(runs, configs, recovered, done, strict=True):
            if state is None:
                model, guide, optimizer = _fresh_start(c, data, dev)
            else:
                model, guide = restore(c, state, data.num_pixels, data.num_classes, dev,
                                       data.shape)
                optimizer = _optimizer(c, model, guide)
                optimizer.load_state_dict(state["optimizer"])
                _restore_rng(state)
            if epoch < max(done):  # behind the others: alone up to them, the same run
                history = _train(c.replace(epochs=max(done)), run, model, guide, optimizer,
                                 data, epoch, history, progress, False, tensorboard, epoch_lines)
            writers.append(RunWriter(c, run, model, guide, optimizer, data, max(done), history,
                                     figures, tensorboard))
            streams.append(get_rng_state())  # its stream, as its checkpoint or catch-up left it
        if max(done) == 0:  # no replica has trained: each starts from its seed, as a new group
            streams = None
        return group, _side_by_side(
            base, seeds, writers, data, max(done), streams, progress, epoch_lines
        )
