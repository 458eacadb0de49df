"""A run folder's figures: latent snapshots recorded during training, the standard figures
``train`` draws at the end, and those of what ``evaluate`` / ``diagnose`` recorded."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pyrovae import plots
from pyrovae.core.errors import Note
from pyrovae.core.labels import labels_for
from pyrovae.core.runtime import seeded
from pyrovae.data.base import TrainingData
from pyrovae.plots.common import layer_note
from pyrovae.runs.folder import (
    DIAGNOSTICS,
    EVALUATION,
    read_diagnostics,
    read_evaluations,
    read_latents,
    write_latents,
)

SNAPSHOT_IMAGES = 2000  # test images whose codes are recorded per epoch (2-D latent only)
FIGURE_SEED = 0  # figures that draw (prior samples, a flow's mean) are reproducible


class LatentSnapshots:
    """E_q[z|x] of the first test images, per epoch, kept in the run's ``latents.pt``.

    Codes are computed under their own seed (a flow's mean is sampled), which restores every
    generator: training draws exactly what it would draw without snapshots.
    """

    def __init__(self, path: Path, model, guide, data: TrainingData, start_epoch: int) -> None:
        self.path, self.guide = path, guide
        n = min(SNAPSHOT_IMAGES, data.test_x.shape[0])
        self.x = data.test_x[:n]
        self.labels = data.test_y[:n].cpu()
        self.y = labels_for(model, data.test_y[:n])
        self.epochs: list[int] = []
        self.codes: list[torch.Tensor] = []
        old = read_latents(path)
        if old is not None and torch.equal(old["labels"], self.labels):
            keep = [i for i, e in enumerate(old["epochs"].tolist()) if e <= start_epoch]
            self.epochs = [int(old["epochs"][i]) for i in keep]
            self.codes = [old["codes"][i] for i in keep]
        if not self.epochs or self.epochs[-1] != start_epoch:
            self.record(start_epoch)  # the weights training starts (or resumes) from

    def record(self, epoch: int) -> None:
        with seeded(FIGURE_SEED):
            codes = plots.latent_codes(self.guide, self.x, self.y)  # (N, 2)
        self.epochs.append(epoch)
        self.codes.append(codes.float().cpu())
        write_latents(self.path, self.as_dict())

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "epochs": torch.tensor(self.epochs, dtype=torch.long),  # (E,)
            "codes": torch.stack(self.codes),  # (E, N, 2)
            "labels": self.labels,  # (N,)
        }


SAMPLES_PER_CLASS = 8
COMPLETED_IMAGES = 8


def standard_figures(
    out: Path,
    label: str,
    model,
    guide,
    data: TrainingData,
    history: Sequence[dict[str, Any]],
    latents: dict[str, torch.Tensor] | None,
) -> list[Path]:
    """A run's figures into ``out``: training_curves, reconstructions (the first 8 test
    images), samples (a conditional VAE: one row per class), traversal (of the first test
    image along its 10 most active dimensions); with a 2-D latent space also latent (codes of
    the first 2000 test images), manifold and latent_snapshots (from ``latents``); a discrete
    code (one-hot or binary) gets neither traversal nor latent figures, with a note. With several
    stochastic layers the codes are the bottom layer's z1 (the decoder's input), the samples
    ancestral, and each figure's title says so. A run of structured output prediction
    (``--condition-on``) gets training_curves and completions (of the first 8 test images,
    beside the truth and the ``--baseline-input``'s prediction) instead."""
    written = []

    def save(name: str, fig) -> None:
        written.append(plots.save_figure(fig, out / name))

    n = min(SNAPSHOT_IMAGES, data.test_x.shape[0])
    x, y = data.test_x[:n], labels_for(model, data.test_y[:n])
    first = min(8, n)
    if history:
        save("training_curves.png", plots.training_curves({label: history}))
    if (
        getattr(getattr(model, "condition", None), "predicted", None) is not None
    ):  # structured output
        with seeded(FIGURE_SEED):
            baseline = getattr(model.condition, "baseline", None)
            fig = plots.completions(model, x[:COMPLETED_IMAGES], baseline=baseline)
            save("completions.png", fig)
        return written
    with seeded(FIGURE_SEED):
        codes = plots.latent_codes(guide, x, y)  # (n, d)
        save("reconstructions.png", plots.reconstructions(model, guide, x[:first], _head(y, first)))
        if model.num_classes:
            c = model.num_classes
            per_class = torch.arange(c, device=x.device).repeat_interleave(SAMPLES_PER_CLASS)
            fig = plots.prior_samples(
                model,
                c * SAMPLES_PER_CLASS,
                per_class,
                cols=SAMPLES_PER_CLASS,
                row_labels=[f"y = {k}" for k in range(c)],
            )
        else:
            fig = plots.prior_samples(model, 64)
        save("samples.png", fig)
        d = codes.shape[1]
        discrete = getattr(getattr(guide, "family", None), "latent_kind", "") == "discrete"
        if discrete:  # a one-hot or binary code: no axis to walk along, no plane to scatter in
            _noted(None)(
                "traversal.png and the latent-space figures are not drawn for a discrete code "
                "(its values are one-hot or binary, not points on continuous axes)"
            )
        else:
            # the most active dimensions first: Var_x E_q[z_j|x] (zero for a single image)
            activity = codes.var(0) if n > 1 else codes.new_zeros(d)
            dims = activity.argsort(descending=True)[: plots.TRAVERSAL_DIMS].tolist()
            save("traversal.png", plots.traversal(model, guide, x[0], dims, y=_head(y, 1)))
        note = layer_note(guide)  # several stochastic layers: the codes are z1's
        if d == 2 and not discrete:
            labels = data.test_y[:n]
            if note:
                title, names = f"E_q[z1|x] ({note}), test images", ("z1[0]", "z1[1]")
                fig = plots.latent_scatter(codes, labels, title, axis_names=names)
            else:
                fig = plots.latent_scatter(codes, labels, "E_q[z|x], test images")
            save("latent.png", fig)
            save("manifold.png", plots.manifold(model, y=0 if model.num_classes else None))
        if latents is not None and len(latents["epochs"]) and not discrete:
            fig = plots.latent_snapshots(
                latents["epochs"].tolist(),
                latents["codes"],
                latents["labels"],
                title=f"E_q[z1|x] ({note})" if note else None,
            )
            save("latent_snapshots.png", fig)
    return written


def _head(y: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if y is None else y[:n]


def _noted(note: Callable[[str], None] | None) -> Callable[[str], None]:
    return note if note is not None else (lambda text: warnings.warn(text, Note, stacklevel=3))


def diagnostic_figures(
    path: Path, out: Path, epoch: int, note: Callable[[str], None] | None = None
) -> list[Path]:
    """Figures of what ``evaluate`` and ``diagnose`` recorded in run folder ``path`` at the
    checkpoint's ``epoch``: bound_vs_k (test ELBO = L_1 and the importance-weighted L_K of every
    K evaluated on the same test images; AIS's and BDMC's evaluations are not L_K's), snr_vs_k
    and gradient_variance. What was recorded only at other epochs is not drawn; ``note``
    (default: a warning) says so."""
    note = _noted(note)
    written = []
    evaluations = [  # importance sampling's L_K (AIS's and BDMC's figures have no K)
        e
        for e in read_evaluations(path)
        if e.get("log_px") is not None and e.get("method", "is") == "is"
    ]
    current = [e for e in evaluations if e.get("epoch") == epoch]
    if current:
        most = max(e["num_test"] for e in current)
        same = sorted((e for e in current if e["num_test"] == most), key=lambda e: e["num_samples"])
        rows = [{"estimator": "L_K", "num_particles": 1, "bound": same[0]["test_elbo"]}]
        rows += [
            {
                "estimator": "L_K",
                "num_particles": e["num_samples"],
                "bound": e["log_px"],
                "stderr": e.get("log_px_mc_stderr"),
            }
            for e in same
        ]
        written.append(plots.save_figure(plots.bound_vs_k(rows), out / "bound_vs_k.png"))
    elif evaluations:
        note(_stale("bound_vs_k.png", EVALUATION, evaluations, epoch, f"pyrovae evaluate {path}"))
    rows = read_diagnostics(path)
    current = [r for r in rows if r.get("epoch") == epoch]
    if current:
        written.append(plots.save_figure(plots.snr_vs_k(current), out / "snr_vs_k.png"))
        written.append(
            plots.save_figure(plots.gradient_variance(current), out / "gradient_variance.png")
        )
    elif rows:
        note(_stale("snr_vs_k.png", DIAGNOSTICS, rows, epoch, f"pyrovae diagnose {path} …"))
    return written


def _stale(figure: str, file: str, entries: list[dict], epoch: int, command: str) -> str:
    held = sorted({e.get("epoch") for e in entries}, key=lambda e: -1 if e is None else e)
    epochs = ", ".join("unknown" if e is None else str(e) for e in held)
    return (
        f"{figure} not drawn: {file} holds epoch {epochs} only and the checkpoint is at epoch "
        f"{epoch}; run `{command}` again"
    )
