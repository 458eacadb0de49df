"""Training a run: ``train_run`` (a new run folder) and ``resume_run`` (from its checkpoint).

Configuration → data → model/guide → :func:`~pyrovae.inference.train.fit`, with a checkpoint,
a metrics line and (2-D latents) a latent snapshot after every epoch, and the run's standard
figures at the end.

In a process group (``torchrun``, :mod:`~pyrovae.core.distributed`) every rank trains, and rank
0 alone touches the run folder: it checks and creates it, holds its lock, reads the checkpoint
(and sends it to the others), and writes config, metrics, checkpoints, latents and figures. The
checkpoint then holds every rank's RNG state and the world size; a resume needs the same world
size (each rank continues its own noise stream) and refuses another in one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pyrovae.core.distributed import (
    agree,
    check_batch_size,
    from_root,
    gather_all,
    is_distributed,
    on_root,
    rank,
    rank_device,
    root_context,
    world_size,
)
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable, remove_temp_files
from pyrovae.core.labels import labels_for
from pyrovae.core.runtime import get_rng_state, seeded, set_rng_state, set_seed
from pyrovae.data.base import TrainingData
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.train import fit, make_optimizer
from pyrovae.runs.build import build_estimator
from pyrovae.runs.checkpoint import checkpoint_history, save_checkpoint
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.figures import LatentSnapshots, standard_figures
from pyrovae.runs.folder import (
    FIGURES,
    check_new_run,
    create_run,
    default_run_dir,
    make_run_dir,
    read_config,
    read_run_meta,
    run_lock,
    write_metrics,
)
from pyrovae.runs.load import build_on, load_baseline_input, restore, run_data
from pyrovae.runs.records import resume_state, set_aside
from pyrovae.runs.tensorboard import open_log, require_tensorboard


def _preflight(config: TrainConfig, model, guide, data: TrainingData) -> None:
    """One loss evaluation on a first batch, before anything is written: an incompatible pair
    (analytic-kl with a flow guide or a learned prior, …) fails here with its one-line error.
    Under its own seed, so the training run draws exactly what it would have drawn."""
    b = min(config.batch_size, data.num_train)
    if config.conditional and not data.labelled:
        raise PyroVAEError(f"{config.dataset} has no labels; drop --conditional")
    with seeded(config.seed):
        x = data.train_head(b, config.seed)
        y = labels_for(model, data.train_y[:b])
        args = (x,) if y is None else (x, y)
        estimator = build_estimator(config, data)
        if isinstance(estimator, str):
            estimator = make_estimator(estimator, config.num_particles)
        loss = estimator.loss(model, guide, *args)
    if not math.isfinite(loss):
        raise PyroVAEError(f"the loss at initialization is {loss}; check the data and settings")


def _optimizer(config: TrainConfig, model, guide):
    return make_optimizer((model, guide), config.lr, config.adam_betas, config.adam_eps)


def _rng_states() -> dict[str, Any]:
    """The checkpoint's RNG entries: ``rng`` (rank 0's generators, or the one process's) and,
    in a process group, ``world_size`` and ``rank_rngs``, every rank's (a collective)."""
    states = gather_all(get_rng_state())
    if not is_distributed():
        return {"rng": states[0]}
    return {"rng": states[0], "world_size": len(states), "rank_rngs": states}


def _restore_rng(state: dict[str, Any]) -> None:
    set_rng_state(state["rank_rngs"][rank()] if "rank_rngs" in state else state["rng"])


class RunWriter:
    """What a training run writes into its folder after each epoch (rank 0 alone): the
    checkpoint (which holds the metrics and the generators' state), ``metrics.jsonl``, the
    latent snapshot (2-D latents, with ``figures``) and TensorBoard events (``board``); and the
    standard figures at the end. ``checkpoint`` is the ``on_epoch_end`` of ``fit``."""

    def __init__(
        self, config, path, model, guide, optimizer, data, start_epoch, history, figures, board
    ) -> None:
        self.config, self.path, self.data = config, path, data
        self.model, self.guide, self.optimizer = model, guide, optimizer
        self.history = list(history)
        self.figures = figures
        self.snapshots = None
        # a discrete code has no plane, a model without latents (a baseline) no code
        continuous = getattr(getattr(guide, "family", None), "latent_kind", "") == "continuous"
        if figures and config.latent_dims[0] == 2 and continuous:  # codes of z (or of z1)
            self.snapshots = on_root(lambda: LatentSnapshots(path, model, guide, data, start_epoch))
        self.log = None
        if board:  # rank 0 alone logs
            self.log = on_root(lambda: open_log(path, config, model, guide, data, start_epoch))

    def checkpoint(self, record: dict[str, Any]) -> None:
        """After an epoch: the checkpoint holds the metrics too, so a kill before
        ``metrics.jsonl`` is written loses nothing (resume rewrites the file from it)."""
        self.history.append(record)
        rng = _rng_states()

        def write() -> None:
            if self.log is not None:  # before the checkpoint: a resume purges what follows it
                self.log.record(record)
            state = {
                "epoch": record["epoch"],
                "model": self.model.state_dict(),
                "guide": self.guide.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **rng,
                "history": self.history,
            }
            save_checkpoint(self.path, state)
            write_metrics(self.path, self.history)
            if self.snapshots is not None:
                self.snapshots.record(record["epoch"])

        on_root(write)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def finish(self) -> list[dict[str, Any]]:
        """The standard figures (with ``figures``); returns the run's whole history."""
        if self.figures:
            latents = self.snapshots.as_dict() if self.snapshots is not None else None
            out, path = self.path / FIGURES, self.path
            on_root(
                lambda: standard_figures(
                    out, path.name, self.model, self.guide, self.data, self.history, latents
                )
            )
        return self.history


def fit_settings(config: TrainConfig) -> dict[str, Any]:
    """``fit``'s keyword arguments that a run's config sets (all but seed and optimizer)."""
    return {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "num_particles": config.num_particles,
        "beta": config.beta,
        "kl_warmup": config.kl_warmup,
        "lr_schedule": config.lr_schedule,
        "temperature": config.temperature_schedule(),
        "divergence_factor": config.divergence_factor,
        "compile": not config.no_compile,
    }


def _train(
    config,
    path,
    model,
    guide,
    optimizer,
    data,
    start_epoch,
    history,
    progress,
    figures,
    board,
    epoch_lines=None,
):
    writer = RunWriter(
        config, path, model, guide, optimizer, data, start_epoch, history, figures, board
    )
    try:
        fit(
            model,
            guide,
            data,
            build_estimator(config, data),
            seed=config.seed,
            optimizer=optimizer,
            start_epoch=start_epoch,
            progress=progress,
            epoch_lines=epoch_lines,
            on_epoch_end=writer.checkpoint,
            **fit_settings(config),
        )
    finally:
        writer.close()
    return writer.finish()


def _fresh_start(config: TrainConfig, data: TrainingData, device):
    """Seeded initialization (part of the run; the same on every rank), checked by one loss
    evaluation, and Adam."""

    def start():
        set_seed(config.seed)
        model, guide = build_on(config, data.num_pixels, data.num_classes, device, data.shape)
        if config.baseline_input is not None:
            load_baseline_input(config, model, device)
        _preflight(config, model, guide, data)
        return model, guide, _optimizer(config, model, guide)

    return agree(start)


def _data(
    config: TrainConfig,
    device,
    data_dir: str | None,
    download: bool,
    recorded: dict[str, Any] | None = None,
    allow_other_data: bool = False,
) -> TrainingData:
    """Every rank's copy of the data (one process per machine first: it may unpack or
    download into a cache the others then read); ``recorded``: what the run was trained on."""
    return agree(
        lambda: run_data(config, device, data_dir, download, recorded, allow_other_data),
        local_root_first=True,
    )


def _new_folder(config: TrainConfig, run_dir: str | Path | None) -> Path:
    path = Path(run_dir) if run_dir is not None else default_run_dir(config)
    check_new_run(path)
    check_writable(path)
    return path


def train_run(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    figures: bool = True,
    tensorboard: bool = False,
    epoch_lines: bool | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Train a new run; returns its folder and per-epoch metrics. Bad input writes nothing:
    the folder is checked (new, writable) first, the data, model size and a first loss next,
    and only then is the folder made, under its lock.

    With ``figures`` the run's standard figures go to ``figures/`` at the end (see
    :func:`plot_runs`) and, for a 2-D latent space, the codes of the first 2000 test images are
    recorded before training and after each epoch in ``latents.pt``. With ``tensorboard`` each
    epoch's metrics and image grids go to ``tensorboard/`` as TensorBoard events
    (:mod:`pyrovae.runs.tensorboard`). None of these changes what training draws or computes.
    ``progress`` (the bar) and ``epoch_lines`` (a line per epoch; default: as ``progress``)
    are :func:`~pyrovae.inference.train.fit`'s.
    """
    if tensorboard:
        require_tensorboard()
    device = agree(lambda: rank_device(config.device))
    check_batch_size(config.batch_size)
    path = from_root(lambda: _new_folder(config, run_dir))
    data = _data(config, device, data_dir, download)
    model, guide, optimizer = _fresh_start(config, data, device)
    meta = {
        "device": str(device),
        "num_pixels": data.num_pixels,
        "num_classes": data.num_classes,
        "data": data.describe(),
    }
    if is_distributed():
        meta["world_size"] = world_size()
    on_root(lambda: make_run_dir(path))
    with root_context(lambda: run_lock(path)):
        on_root(lambda: create_run(path, config, meta))
        return path, _train(
            config,
            path,
            model,
            guide,
            optimizer,
            data,
            0,
            [],
            progress,
            figures,
            tensorboard,
            epoch_lines,
        )


def resume_run(
    run_dir: str | Path,
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
) -> tuple[Path, list[dict[str, Any]]]:
    """Continue a run from its checkpoint up to ``epochs`` in total (default: the run's own);
    ``figures``, ``progress`` and ``epoch_lines`` as for :func:`train_run` (latent snapshots
    are appended to ``latents.pt``), ``tensorboard`` too (TensorBoard drops the events logged
    after the checkpoint).

    Under the folder's lock: temporary files an interrupted write left are removed (in
    ``figures/`` too), and ``metrics.jsonl`` is rewritten from the checkpoint's own copy of the
    metrics, so the two agree whenever the previous process was killed (also when there is
    nothing left to train). A folder killed before its first checkpoint (only its config)
    trains from epoch 0, as the same seeded run; one whose checkpoint is missing while it
    records trained epochs is refused (:mod:`~pyrovae.runs.records`), unless ``restart``: then
    its records are moved into ``restarted-<date>-<time>/`` and it trains from epoch 0. Data
    whose content hash differs from the run's is refused unless ``allow_other_data``.
    """
    if tensorboard:
        require_tensorboard()
    path = Path(run_dir)
    changes = {k: v for k, v in {"epochs": epochs, "device": device}.items() if v is not None}
    config = from_root(lambda: read_config(path).replace(**changes))
    dev = agree(lambda: rank_device(config.device))
    check_batch_size(config.batch_size)
    with root_context(lambda: run_lock(path)):
        state, history = from_root(lambda: _recover(path, config, dev, restart, figures))
        recorded = from_root(lambda: read_run_meta(path).get("data"))
        data = _data(config, dev, data_dir, download, recorded, allow_other_data)
        if state is None:
            model, guide, optimizer = _fresh_start(config, data, dev)
        else:

            def restored():
                model, guide = restore(
                    config, state, data.num_pixels, data.num_classes, dev, data.shape
                )
                optimizer = _optimizer(config, model, guide)
                optimizer.load_state_dict(state["optimizer"])
                return model, guide, optimizer

            model, guide, optimizer = agree(restored)
            _restore_rng(state)
        done = int(state["epoch"]) if state is not None else 0
        return path, _train(
            config,
            path,
            model,
            guide,
            optimizer,
            data,
            done,
            history,
            progress,
            figures,
            tensorboard,
            epoch_lines,
        )


def _recover(
    path: Path, config: TrainConfig, device, restart: bool = False, figures: bool = False
) -> tuple[dict[str, Any] | None, list]:
    """Rank 0's part of a resume, under the lock: clean up, set the records aside (``restart``),
    check the figures folder (``figures``), read the checkpoint (on the CPU in a process group:
    it is sent to the other ranks), repair the metrics, check the epochs and the world size."""
    remove_temp_files(path)
    remove_temp_files(path / FIGURES)
    check_writable(path)
    if restart:
        set_aside(path)
    if figures:
        check_figures_folder(path)
    where = "cpu" if is_distributed() else device
    state = resume_state(path, where)
    done = int(state["epoch"]) if state is not None else 0
    history = checkpoint_history(path, state) if state is not None else []
    write_metrics(path, history)  # the checkpoint's record, whatever a kill left behind
    if config.epochs <= done:
        raise PyroVAEError(
            f"{path} has trained {done} of {config.epochs} epochs; pass --epochs N > {done}"
        )
    if state is not None:
        _check_world_size(path, int(state.get("world_size", 1)))
    return state, history


def check_figures_folder(path: Path) -> None:
    """Before any epoch is trained: the run's figures go into ``figures/``, which must be a
    folder that can be written (or not exist yet)."""
    folder = path / FIGURES
    if folder.exists() and not folder.is_dir():
        raise PyroVAEError(
            f"{folder} is a file, where train draws the run's figures into a folder; move it "
            "away, or pass --no-figures"
        )
    check_writable(folder)


def _check_world_size(path: Path, saved: int) -> None:
    """Refuse a resume with another number of processes: each rank's noise stream continues
    from the checkpoint, and another world size would have other streams (and shards)."""
    now = world_size()
    if saved != now:
        how = "without torchrun" if saved == 1 else f"with torchrun, {saved} processes in all"
        raise PyroVAEError(
            f"{path} was trained by {saved} process{'es' if saved > 1 else ''} and this resume "
            f"has {now}: an exact resume continues every rank's own random stream, so resume "
            f"it {how}"
        )
