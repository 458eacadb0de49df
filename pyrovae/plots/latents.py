"""The latent space: posterior means E_q[z|x], their scatter by label and its evolution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.marginal import MEAN_SAMPLES, posterior_mean
from pyrovae.plots.common import as_rows, evaluating, label_tensor, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def latent_codes(
    guide,
    x: torch.Tensor,
    y: torch.Tensor | int | None = None,
    *,
    batch_size: int = 1000,
    num_samples: int = MEAN_SAMPLES,
) -> torch.Tensor:
    """Posterior means E_q[z|x], shape (N, d), in chunks of ``batch_size`` images.

    Exact where q's distribution has a closed-form mean; otherwise (a flow) the average of
    ``num_samples`` draws from q, whose error per component is std_q(z_j|x) / √num_samples
    (drawn from the global RNG: wrap the call in ``pyrovae.core.runtime.seeded`` to fix it).
    """
    if num_samples < 1:
        raise PyroVAEError(f"num_samples must be at least 1, got {num_samples}")
    x = as_rows(x)
    y = label_tensor(y, x.shape[0], x.device)
    codes = []
    with evaluating(guide):
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            q = guide.posterior(x[sl], None if y is None else y[sl])
            codes.append(posterior_mean(q, num_samples))
    if not codes:
        raise PyroVAEError("latent_codes needs at least one image")
    return torch.cat(codes)  # (N, d)


def _scatter_by_label(ax: Axes, codes: torch.Tensor, labels: torch.Tensor, size: float) -> None:
    """Codes (N, ≥2) as points coloured by label (tab10: labels beyond 9 reuse colours)."""
    xy = codes[:, :2].detach().float().cpu().numpy()
    c = (labels.detach().cpu() % 10).numpy()
    ax.scatter(xy[:, 0], xy[:, 1], c=c, cmap="tab10", vmin=-0.5, vmax=9.5, s=size, linewidths=0)


def _label_legend(target, labels: torch.Tensor, **kwargs: Any) -> None:
    """A legend with one marker per class present in ``labels``."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    cmap = colormaps["tab10"]
    classes = sorted(int(k) for k in labels.unique().tolist())
    handles = [
        Line2D([], [], marker="o", linestyle="", color=cmap(k % 10), label=str(k)) for k in classes
    ]
    target.legend(handles=handles, title="label", fontsize=7, title_fontsize=7, **kwargs)


def latent_scatter(
    codes: torch.Tensor,
    labels: torch.Tensor,
    title: str | None = None,
    axis_names: tuple[str, str] = ("z₁", "z₂"),
) -> Figure:
    """Codes (N, d), d ≥ 2, as a scatter of (z_1, z_2) coloured by label; for d > 2 only the
    first two dimensions are drawn, as the axis labels say. ``axis_names`` label the two
    dimensions (say ``("z1[0]", "z1[1]")`` for a layer z1)."""
    if codes.dim() != 2 or codes.shape[1] < 2:
        raise PyroVAEError(f"latent_scatter needs (N, d ≥ 2) codes, got {tuple(codes.shape)}")
    fig = new_figure(4.8, 4, right=0.8)
    ax = fig.add_subplot()
    _scatter_by_label(ax, codes, labels, size=4)
    d = codes.shape[1]
    suffix = f" (dims 1–2 of {d})" if d > 2 else ""
    ax.set_xlabel(f"{axis_names[0]}{suffix}")
    ax.set_ylabel(f"{axis_names[1]}{suffix}")
    if title:
        ax.set_title(title, fontsize=9)
    _label_legend(ax, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def latent_snapshots(
    epochs: Sequence[int],
    codes: torch.Tensor,
    labels: torch.Tensor,
    *,
    max_panels: int = 12,
    title: str | None = None,
) -> Figure:
    """Codes (E, N, 2) recorded at ``epochs`` as a grid of scatters titled "epoch e", on common
    axes, to show how q's means arrange themselves over training. With more than
    ``max_panels`` snapshots, evenly spaced ones are drawn (the first and last always).
    ``title`` goes above the grid (say which layer's codes these are)."""
    e = codes.shape[0]
    if codes.dim() != 3 or codes.shape[2] != 2 or len(epochs) != e or e == 0:
        raise PyroVAEError(
            f"latent_snapshots needs (E, N, 2) codes for E epochs, got {tuple(codes.shape)} "
            f"and {len(epochs)} epochs"
        )
    count = min(e, max_panels)
    picks = sorted({round(i * (e - 1) / max(count - 1, 1)) for i in range(count)})
    cols = min(len(picks), 4)
    rows = math.ceil(len(picks) / cols)
    fig = new_figure(2.3 * cols + 1.3, 2.2 * rows + 0.3, left=0.5, right=0.8, bottom=0.3)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).flatten()
    shown = codes[picks].float().cpu()  # (E', N, 2)
    low, high = shown.amin((0, 1)), shown.amax((0, 1))
    margin = 0.05 * (high - low).clamp_min(1e-6)
    for ax, i in zip(axes, picks, strict=False):
        _scatter_by_label(ax, codes[i], labels, size=2)
        ax.set_title(f"epoch {epochs[i]}", fontsize=9)
    for ax in axes[len(picks) :]:
        ax.set_axis_off()
    axes[0].set_xlim(float(low[0] - margin[0]), float(high[0] + margin[0]))
    axes[0].set_ylim(float(low[1] - margin[1]), float(high[1] + margin[1]))
    _label_legend(fig, labels, loc="center right")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
