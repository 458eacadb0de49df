"""``plot`` runs: one run's figures redrawn, or several runs' training curves overlaid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyrovae import plots
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable, remove_temp_files
from pyrovae.runs.checkpoint import checkpoint_history, load_checkpoint
from pyrovae.runs.figures import diagnostic_figures, standard_figures
from pyrovae.runs.folder import FIGURES, read_latents, read_run_meta
from pyrovae.runs.load import load_run, writing_into
from pyrovae.runs.seeds import is_group, seed_runs


def _finished_run(path: Path) -> tuple[int, list[dict[str, Any]]]:
    """The checkpoint's epoch and metrics of a run that has finished an epoch (else an error)."""
    read_run_meta(path)
    state = load_checkpoint(path)
    return int(state["epoch"]), checkpoint_history(path, state)


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    labels: Sequence[str] | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    note: Callable[[str], None] | None = None,
    allow_other_data: bool = False,
) -> list[Path]:
    """Draw run figures as PNGs; returns the files written.

    One run: its standard figures (those ``train`` writes, from the checkpoint and
    ``latents.pt``) plus bound_vs_k / snr_vs_k / gradient_variance of what ``evaluate`` /
    ``diagnose`` recorded at the checkpoint's epoch, into ``out`` (default: the run's
    ``figures/``). Several runs: their training curves overlaid in ``out/training_curves.png``
    (labelled by ``labels``, default the folder names) and each run's bound and diagnostic
    figures in ``out/<label>/``; ``out`` is required. Temporary files that a killed plot (or
    train) left in those folders are removed first. A group of seeds (``train --seeds``): its
    seeds' runs overlaid, and their mean ± sd per epoch in ``training_mean_sd.png`` (``out``
    defaults to the group's ``figures/``). ``note`` receives what was not drawn and
    why (default: a warning).
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise PyroVAEError("plot needs at least one run folder")
    if len(paths) == 1 and is_group(paths[0]):  # seeds side by side: each seed, and the band
        group = paths[0]
        seeds = seed_runs(group)
        target = Path(out) if out is not None else group / FIGURES
        written = plot_runs(seeds, target, None, device, data_dir, download, note,
                            allow_other_data)
        histories = {p.name: _finished_run(p)[1] for p in seeds}
        band = plots.seed_band(histories)
        return [*written, plots.save_figure(band, target / "training_mean_sd.png")]
    if len(paths) > 1 and out is None:
        raise PyroVAEError("plotting several runs needs --out DIR for the combined figures")
    if labels is not None and len(labels) != len(paths):
        raise PyroVAEError(f"--labels needs one label per run: {len(paths)}, got {len(labels)}")
    names = list(labels) if labels is not None else [p.name for p in paths]
    if len(set(names)) != len(names):
        raise PyroVAEError("two runs have the same folder name; tell them apart with --labels")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise PyroVAEError(f"--out {out} is a file; plot writes its PNGs into a folder")
    if len(paths) == 1:
        path = paths[0]
        _finished_run(path)
        target = Path(out) if out is not None else path / FIGURES
        check_writable(target)
        with writing_into(path, target):
            remove_temp_files(target)  # what a killed plot or train left half-written
            run = load_run(path, device, data_dir, download, allow_other_data)
            written = standard_figures(
                target, names[0], run.model, run.guide, run.data, run.history, read_latents(path)
            )
            return written + diagnostic_figures(path, target, run.epoch, note)
    finished = {name: _finished_run(p) for name, p in zip(names, paths, strict=True)}
    target = Path(out)
    check_writable(target)
    remove_temp_files(target)
    histories = {name: history for name, (_, history) in finished.items()}
    written = [plots.save_figure(plots.training_curves(histories), target / "training_curves.png")]
    for name, path in zip(names, paths, strict=True):
        with writing_into(path, target / name):
            remove_temp_files(target / name)
            written += diagnostic_figures(path, target / name, finished[name][0], note)
    return written
