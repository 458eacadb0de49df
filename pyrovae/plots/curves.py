"""Curves: training runs over epochs, and estimators over the number of particles K."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyrovae.core.errors import PyroVAEError
from pyrovae.plots.common import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GROUPS = (("encoder", "encoder φ"), ("decoder", "decoder θ"))
LAYER_STYLES = ("s--", "^:", "v-.")  # per stochastic layer, in snr_vs_k
# per estimator in snr_vs_k: marker, line style and marker size, so that a line drawn over an
# equal one (IWAE's and DReG's decoder SNR) leaves the one below visible
ESTIMATOR_STYLES = (("o", "-", 7), ("s", "--", 5.5), ("^", ":", 4.5), ("D", "-.", 3.5))
MARKERS = 30  # training curves mark every epoch up to this many, then every n-th


def _log_y(ax: Axes) -> None:
    """A log-scale y axis whose tick labels are plain numbers (0.32, 1e-05), not 3.2×10⁻¹:
    narrow enough that the axis label keeps its place inside the figure's margin."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Compact(LogFormatterSciNotation):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.3g}" if super().__call__(x, pos) else ""  # label where matplotlib would

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(Compact())
    ax.yaxis.set_minor_formatter(Compact(labelOnlyBase=False))


def training_curves(histories: Mapping[str, Sequence[dict[str, Any]]]) -> Figure:
    """Per-epoch curves of one or more runs, one colour per run (label ↦ metrics.jsonl records).

    Panels: the training objective (dashed: the mean of the training steps' estimates, the
    ELBO, or L_K for the IWAE estimators) and the test ELBO E_q[log p(x, z) − log q(z|x)]
    (solid), the test reconstruction term E_q[log p(x|z)] and the test KL(q(z|x) ‖ p(z)), all
    per datapoint in nats.
    """
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise PyroVAEError("training_curves needs at least one run's history")
    fig = new_figure(11, 3.2, gap=0.5)
    ax_elbo, ax_recon, ax_kl = fig.subplots(1, 3)
    for i, (label, records) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in records]
        # markers show each epoch (a 1-epoch run is a single point), at most ~30 per curve
        style = {"color": f"C{i % 10}", "marker": "o", "markersize": 3}
        style["markevery"] = max(1, len(epochs) // MARKERS)
        ax_elbo.plot(epochs, [r["train_elbo"] for r in records], "--", **style)
        ax_elbo.plot(epochs, [r["test_elbo"] for r in records], "-", label=label, **style)
        ax_recon.plot(epochs, [r["test_recon"] for r in records], "-", label=label, **style)
        ax_kl.plot(epochs, [r["test_kl"] for r in records], "-", label=label, **style)
    ax_elbo.set_title("train objective (dashed), test ELBO (solid)", fontsize=9)
    ax_recon.set_title("test reconstruction E_q log p(x|z)", fontsize=9)
    ax_kl.set_title("test KL(q(z|x) ‖ p(z))", fontsize=9)
    for ax in (ax_elbo, ax_recon, ax_kl):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a 2-epoch run: no 0.5 ticks
        ax.grid(alpha=0.3)
    ax_elbo.set_ylabel("nats per image")
    ax_elbo.legend(fontsize=7)
    return fig


def seed_band(histories: Mapping[str, Sequence[dict[str, Any]]]) -> Figure:
    """Runs that differ only in their seed (label ↦ records): per epoch the mean over seeds
    (line) ± one standard deviation (band) of the test ELBO, reconstruction term and KL, each
    seed a thin line behind; epochs that not every seed has reached are left out."""
    from matplotlib.ticker import MaxNLocator

    if len(histories) < 2:
        raise PyroVAEError("seed_band needs the histories of at least two seeds")
    common = set.intersection(*({r["epoch"] for r in rs} for rs in histories.values()))
    epochs = sorted(common)
    fig = new_figure(11, 3.2, gap=0.5)
    panels = (("test_elbo", "test ELBO"), ("test_recon", "test reconstruction E_q log p(x|z)"),
              ("test_kl", "test KL(q(z|x) ‖ p(z))"))
    for ax, (key, title) in zip(fig.subplots(1, 3), panels, strict=True):
        by_epoch = {label: {r["epoch"]: r[key] for r in rs} for label, rs in histories.items()}
        for values in by_epoch.values():
            ax.plot(epochs, [values[e] for e in epochs], "-", color="0.6", lw=0.7)
        column = [[values[e] for values in by_epoch.values()] for e in epochs]
        stats = [(statistics.mean(c), statistics.stdev(c)) for c in column]
        mean = [m for m, _ in stats]
        ax.fill_between(epochs, [m - s for m, s in stats], [m + s for m, s in stats],
                        color="C0", alpha=0.25, label="± 1 sd")
        ax.plot(epochs, mean, "o-", color="C0", markersize=3, label=f"mean of {len(histories)}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("nats per image")
    fig.axes[0].legend(fontsize=7)
    return fig


def _by_estimator(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows grouped by estimator (first-seen order), each group sorted by K."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["estimator"], []).append(row)
    return {name: sorted(g, key=lambda r: r["num_particles"]) for name, g in groups.items()}


def _k_axis(ax: Axes, ks: Sequence[int]) -> None:
    """A log-scale x axis of particle counts, ticked at the K values drawn."""
    ax.set_xscale("log")
    ticks = sorted(set(ks))
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlabel("K (particles)")


def bound_vs_k(rows: Sequence[Mapping[str, Any]], exact: float | None = None) -> Figure:
    """Bounds on log p(x) against the number of particles K (log scale), one line per estimator.

    Rows: {"estimator", "num_particles", "bound", optional "stderr"} (error bars ±stderr). For the
    importance-weighted bound L_K = E log (1/K) Σ_k p(x, z_k)/q(z_k|x): L_1 = ELBO ≤ L_K ≤ L_{K+1}
    ≤ log p(x). ``exact`` draws log p(x) itself as a horizontal line (e.g. the linear-Gaussian
    model's closed form).
    """
    fig = new_figure(5, 3.5)
    ax = fig.add_subplot()
    for i, (name, group) in enumerate(_by_estimator(rows).items()):
        ks = [r["num_particles"] for r in group]
        bounds = [r["bound"] for r in group]
        ax.plot(ks, bounds, "o-", color=f"C{i % 10}", label=name)
        stderr = [r.get("stderr") for r in group]
        if any(s is not None for s in stderr):
            errors = [float("nan") if s is None else s for s in stderr]
            ax.errorbar(ks, bounds, yerr=errors, fmt="none", ecolor=f"C{i % 10}", capsize=3)
    if exact is not None:
        ax.axhline(exact, color="k", linestyle=":", label="exact log p(x)")
    _k_axis(ax, [r["num_particles"] for r in rows])
    ax.set_ylabel("nats per datapoint")
    ax.set_title("bound on log p(x) against K", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


COINCIDE = 1e-4  # relative: points this close are drawn on top of each other


def _coincide(a: tuple[list[int], list[float]], b: tuple[list[int], list[float]]) -> bool:
    """Whether two lines (Ks, values) have the same Ks and values equal to :data:`COINCIDE`."""
    return a[0] == b[0] and all(
        math.isclose(u, v, rel_tol=COINCIDE) for u, v in zip(a[1], b[1], strict=True)
    )


def snr_vs_k(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Gradient signal-to-noise ratio against K, log-log; encoder φ and decoder θ panels.

    SNR = mean over components of abs(E g) / std g (Rainforth et al. 2018), from the rows of
    :func:`pyrovae.runs.diagnose_run`. For IWAE the encoder's SNR decays as O(1/√K)
    while the decoder's grows as O(√K); DReG's encoder SNR does not decay. Rows of a model with
    several stochastic layers also hold ``encoder/z1``, …: each layer is drawn too, in the
    estimator's colour with its own line style, labelled by layer.

    Each estimator has its own marker and line style, later ones smaller, so equal lines stay
    visible one inside the other; an estimator whose points equal an earlier one's in a panel
    to :data:`COINCIDE` (DReG changes only the encoder's gradient, so its decoder SNR is IWAE's
    up to float rounding) says so in that panel's legend.
    """
    fig = new_figure(9, 3.5, left=1.0, gap=0.8)
    axes = fig.subplots(1, 2)
    groups = _by_estimator(rows)
    for ax, (group, title) in zip(axes, GROUPS, strict=True):
        layers = sorted({key for r in rows for key in r if key.startswith(f"{group}/")})
        drawn: dict[str, tuple[list[int], list[float]]] = {}
        for i, (name, g) in enumerate(groups.items()):
            ks = [r["num_particles"] for r in g]
            snr = [r[group]["snr"] for r in g]
            same = [other for other, points in drawn.items() if _coincide(points, (ks, snr))]
            drawn[name] = (ks, snr)
            marker, line, size = ESTIMATOR_STYLES[i % len(ESTIMATOR_STYLES)]
            label = f"{name} (same as {same[0]})" if same else name
            style = {"marker": marker, "linestyle": line, "markersize": size}
            ax.plot(ks, snr, color=f"C{i % 10}", label=label, **style)
            for j, layer in enumerate(layers):
                snr = [r[layer]["snr"] for r in g]
                style = LAYER_STYLES[j % len(LAYER_STYLES)]
                site = layer.split("/", 1)[1]
                ax.plot(ks, snr, style, color=f"C{i % 10}", label=f"{name}, {site} only")
        _k_axis(ax, [r["num_particles"] for r in rows])
        _log_y(ax)
        ax.set_title(f"gradient SNR, {title}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean |E g| / std g")
    return fig


def gradient_variance(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Mean per-component gradient variance (1/P) Σ_p Var[g_p], log scale, as grouped bars:
    one group per estimator, one bar per K; encoder φ and decoder θ panels."""
    groups = _by_estimator(rows)
    ks = sorted({r["num_particles"] for r in rows})
    width = 0.8 / max(len(ks), 1)
    fig = new_figure(max(6.0, 1.6 * len(groups) + 2), 3.8, left=1.0, bottom=0.9, top=0.6)
    axes = fig.subplots(1, 2)
    for ax, (group, title) in zip(axes, GROUPS, strict=True):
        for j, k in enumerate(ks):
            xs, heights = [], []
            for i, g in enumerate(groups.values()):
                for r in g:
                    if r["num_particles"] == k:
                        xs.append(i + (j - (len(ks) - 1) / 2) * width)
                        heights.append(r[group]["variance_mean"])
            ax.bar(xs, heights, width=width, color=f"C{j % 10}", label=f"K = {k}")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(list(groups), rotation=30, ha="right", fontsize=7)
        _log_y(ax)
        ax.set_title(f"gradient variance, {title}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("mean variance per component")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncols=len(ks), fontsize=7)
    return fig
