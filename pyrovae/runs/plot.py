"""``plot`` runs: one run's figures redrawn, or several runs' training curves overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyrovae import plots
from pyrovae.core.errors import PyroVAEError
from pyrovae.runs.figures import diagnostic_figures, standard_figures
from pyrovae.runs.folder import (
    CHECKPOINT,
    FIGURES,
    METRICS,
    read_latents,
    read_metrics,
    read_run_meta,
)
from pyrovae.runs.load import load_run


def _finished_run(path: Path) -> list[dict[str, Any]]:
    """The metrics of a run folder that has finished an epoch (else a clear error)."""
    read_run_meta(path)
    history = read_metrics(path)
    if not history or not (path / CHECKPOINT).is_file():
        raise PyroVAEError(
            f"{path} has no {CHECKPOINT} / {METRICS} (the run never finished an epoch)"
        )
    return history


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    labels: Sequence[str] | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    allow_other_data: bool = False,
) -> list[Path]:
    """Draw run figures as PNGs; returns the files written.

    One run: its standard figures (those ``train`` writes, from the checkpoint, the metrics and
    ``latents.pt``) plus bound_vs_k / snr_vs_k / gradient_variance where ``evaluate`` /
    ``diagnose`` left their files, into ``out`` (default: the run's ``figures/``). Several
    runs: their training curves overlaid in ``out/training_curves.png`` (labelled by ``labels``,
    default the folder names) and each run's bound and diagnostic figures in ``out/<label>/``;
    ``out`` is required.
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise PyroVAEError("plot needs at least one run folder")
    if len(paths) > 1 and out is None:
        raise PyroVAEError("plotting several runs needs --out DIR for the combined figures")
    if labels is not None and len(labels) != len(paths):
        raise PyroVAEError(f"--labels needs one label per run: {len(paths)}, got {len(labels)}")
    names = list(labels) if labels is not None else [p.name for p in paths]
    if len(set(names)) != len(names):
        raise PyroVAEError("two runs have the same folder name; tell them apart with --labels")
    if len(paths) == 1:
        path = paths[0]
        _finished_run(path)
        run = load_run(path, device, data_dir, download, allow_other_data)
        path, data, model, guide = run.path, run.data, run.model, run.guide
        target = Path(out) if out is not None else path / FIGURES
        history = read_metrics(path)
        written = standard_figures(
            target, names[0], model, guide, data, history, read_latents(path)
        )
        return written + diagnostic_figures(path, target)
    histories = {name: _finished_run(p) for name, p in zip(names, paths, strict=True)}
    target = Path(out)
    written = [plots.save_figure(plots.training_curves(histories), target / "training_curves.png")]
    for name, path in zip(names, paths, strict=True):
        written += diagnostic_figures(path, target / name)
    return written
