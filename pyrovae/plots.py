"""Figures of training runs, latent spaces and estimator diagnostics.

Every public function returns a :class:`matplotlib.figure.Figure` built with matplotlib's object
API (no pyplot, no global backend state); :func:`save_figure` writes one as a PNG. Tensors stay on
their device for the computation (under ``torch.no_grad()``) and go to the CPU only to be drawn.
Images are flattened, (N, D) with D = side² (784 = 28² for MNIST).

"Decoding" z means the likelihood's mean E_θ[x|z] (pixel probabilities for a Bernoulli), the
picture of p_θ(x|z) that does not depend on sampling noise. A conditional model (or guide) takes
labels ``y``; each function says what shape of ``y`` it expects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pyrovae.errors import PyroVAEError
from pyrovae.images import as_square, image_grid
from pyrovae.inference.marginal import MEAN_SAMPLES, posterior_mean
from pyrovae.rundir import atomic_write
from pyrovae.runtime import seeded

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 80
TRAVERSAL_DIMS = 10
GROUPS = (("encoder", "encoder φ"), ("decoder", "decoder θ"))


def _figure(
    width: float,
    height: float,
    *,
    left: float = 0.75,
    right: float = 0.15,
    bottom: float = 0.5,
    top: float = 0.3,
    gap: float = 0.6,
) -> Figure:
    """A ``width`` × ``height`` inch figure whose subplots keep the given margins and gaps (in
    inches). Fixed geometry rather than a layout engine: drawing is then one pass, which keeps
    the figures that every training run writes cheap."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap / 2,
        hspace=gap / 1.5,
    )
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created), atomically: readers see the
    old file or the whole new one. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    return path


# ---------------------------------------------------------------- curves and estimator figures


def training_curves(histories: Mapping[str, Sequence[dict[str, Any]]]) -> Figure:
    """Per-epoch curves of one or more runs, one colour per run (label ↦ metrics.jsonl records).

    Panels: the ELBO E_q[log p(x, z) − log q(z|x)] (train dashed: the mean of the training
    steps' estimates; test solid), the test reconstruction term E_q[log p(x|z)] and the test
    KL(q(z|x) ‖ p(z)), all per datapoint in nats.
    """
    if not histories:
        raise PyroVAEError("training_curves needs at least one run's history")
    fig = _figure(11, 3.2, gap=0.5)
    ax_elbo, ax_recon, ax_kl = fig.subplots(1, 3)
    for i, (label, records) in enumerate(histories.items()):
        color = f"C{i % 10}"
        epochs = [r["epoch"] for r in records]
        ax_elbo.plot(epochs, [r["train_elbo"] for r in records], "--", color=color)
        ax_elbo.plot(epochs, [r["test_elbo"] for r in records], "-", color=color, label=label)
        ax_recon.plot(epochs, [r["test_recon"] for r in records], "-", color=color, label=label)
        ax_kl.plot(epochs, [r["test_kl"] for r in records], "-", color=color, label=label)
    ax_elbo.set_title("ELBO (train dashed, test solid)", fontsize=9)
    ax_recon.set_title("test reconstruction E_q log p(x|z)", fontsize=9)
    ax_kl.set_title("test KL(q(z|x) ‖ p(z))", fontsize=9)
    for ax in (ax_elbo, ax_recon, ax_kl):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_elbo.set_ylabel("nats per image")
    ax_elbo.legend(fontsize=7)
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
    fig = _figure(5, 3.5)
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


def snr_vs_k(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Gradient signal-to-noise ratio against K, log-log; encoder φ and decoder θ panels.

    SNR = mean over components of |E g| / std g (Rainforth et al. 2018), from the rows of
    :func:`pyrovae.experiment.diagnose_run`. For IWAE the encoder's SNR decays as O(1/√K)
    while the decoder's grows as O(√K); DReG's encoder SNR does not decay.
    """
    fig = _figure(9, 3.5, left=0.8)
    axes = fig.subplots(1, 2)
    groups = _by_estimator(rows)
    for ax, (group, title) in zip(axes, GROUPS, strict=True):
        for i, (name, g) in enumerate(groups.items()):
            ks = [r["num_particles"] for r in g]
            ax.plot(ks, [r[group]["snr"] for r in g], "o-", color=f"C{i % 10}", label=name)
        _k_axis(ax, [r["num_particles"] for r in rows])
        ax.set_yscale("log")
        ax.set_title(f"gradient SNR, {title}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("mean |E g| / std g")
    axes[0].legend(fontsize=7)
    return fig


def gradient_variance(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Mean per-component gradient variance (1/P) Σ_p Var[g_p], log scale, as grouped bars:
    one group per estimator, one bar per K; encoder φ and decoder θ panels."""
    groups = _by_estimator(rows)
    ks = sorted({r["num_particles"] for r in rows})
    width = 0.8 / max(len(ks), 1)
    fig = _figure(max(6.0, 1.6 * len(groups) + 2), 3.8, left=0.8, bottom=0.9, top=0.6)
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
        ax.set_yscale("log")
        ax.set_title(f"gradient variance, {title}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("mean variance per component")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncols=len(ks), fontsize=7)
    return fig


# ---------------------------------------------------------------- model and guide computations


@contextmanager
def _evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Modules in eval mode and no gradients inside the block; training modes restored after."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def _labels(y: torch.Tensor | int | None, n: int, device: torch.device) -> torch.Tensor | None:
    """Labels for a batch of ``n``: None stays None, one label (int or one element) is repeated,
    an (n,) tensor is used as it is."""
    if y is None:
        return None
    y = torch.as_tensor(y, dtype=torch.long, device=device).reshape(-1)
    if y.numel() == 1:
        return y.expand(n)
    if y.numel() != n:
        raise PyroVAEError(f"expected 1 or {n} labels, got {y.numel()}")
    return y


def _rows(x: torch.Tensor) -> torch.Tensor:
    """One image (D,) or a batch (N, D) as a batch, checked to be square images (D = side²)
    before any network sees it."""
    x = x.unsqueeze(0) if x.dim() == 1 else x
    as_square(x)
    return x


def decode(model, z: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
    """E_θ[x|z] (the likelihood's mean) for codes z (N, d), shape (N, D)."""
    with _evaluating(model):
        return model.mean(z, _labels(y, z.shape[0], z.device))


def _latent_dim(model) -> int:
    with torch.no_grad():
        return int(model.prior().event_shape[-1])


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
    (drawn from the global RNG: wrap the call in ``pyrovae.runtime.seeded`` to fix it).
    """
    if num_samples < 1:
        raise PyroVAEError(f"num_samples must be at least 1, got {num_samples}")
    x = _rows(x)
    y = _labels(y, x.shape[0], x.device)
    codes = []
    with _evaluating(guide):
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            q = guide.posterior(x[sl], None if y is None else y[sl])
            codes.append(posterior_mean(q, num_samples))
    if not codes:
        raise PyroVAEError("latent_codes needs at least one image")
    return torch.cat(codes)  # (N, d)


# ---------------------------------------------------------------- image figures


def reconstructions(model, guide, x: torch.Tensor, y: torch.Tensor | int | None = None) -> Figure:
    """Originals x (top row) above their reconstructions E_θ[x | z = E_q[z|x]] (bottom row).

    ``y``: (N,) labels (or one label for all) for a conditional model.
    """
    x = _rows(x)
    recon = decode(model, latent_codes(guide, x, y), y)  # (N, D)
    images = torch.cat([as_square(x), as_square(recon)])
    return image_grid(images, x.shape[0], row_labels=["original", "reconstruction"])


def prior_samples(
    model,
    num: int = 64,
    y: torch.Tensor | int | None = None,
    *,
    cols: int | None = None,
    row_labels: Sequence[str] | None = None,
) -> Figure:
    """``num`` images E_θ[x|z], z ~ p(z) (:meth:`VAE.generate`, global RNG); ``y``: (num,)
    labels (or one label) for a conditional model."""
    device = next(model.parameters()).device
    with _evaluating(model):
        images = model.generate(num, _labels(y, num, device))  # (num, D)
    return image_grid(as_square(images), cols, row_labels=row_labels)


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


def latent_scatter(codes: torch.Tensor, labels: torch.Tensor, title: str | None = None) -> Figure:
    """Codes (N, d), d ≥ 2, as a scatter of (z_1, z_2) coloured by label; for d > 2 only the
    first two dimensions are drawn, as the axis labels say."""
    if codes.dim() != 2 or codes.shape[1] < 2:
        raise PyroVAEError(f"latent_scatter needs (N, d ≥ 2) codes, got {tuple(codes.shape)}")
    fig = _figure(4.8, 4, right=0.8)
    ax = fig.add_subplot()
    _scatter_by_label(ax, codes, labels, size=4)
    d = codes.shape[1]
    suffix = f" (dims 1–2 of {d})" if d > 2 else ""
    ax.set_xlabel(f"z₁{suffix}")
    ax.set_ylabel(f"z₂{suffix}")
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
) -> Figure:
    """Codes (E, N, 2) recorded at ``epochs`` as a grid of scatters titled "epoch e", on common
    axes, to show how q's means arrange themselves over training. With more than
    ``max_panels`` snapshots, evenly spaced ones are drawn (the first and last always)."""
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
    fig = _figure(2.3 * cols + 1.3, 2.2 * rows + 0.3, left=0.5, right=0.8, bottom=0.3)
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
    return fig


def manifold(model, n: int = 20, limit: float = 3.0, y: torch.Tensor | int | None = None) -> Figure:
    """E_θ[x|z] over an n × n grid of z ∈ [−limit, limit]² (2-D latent only): z₁ grows to the
    right, z₂ upwards. ``y``: one label for a conditional model."""
    if n < 1:
        raise PyroVAEError(f"the manifold needs n ≥ 1 points per axis, got {n}")
    d = _latent_dim(model)
    if d != 2:
        raise PyroVAEError(f"the manifold figure needs a 2-D latent space, this model's is {d}-D")
    device = next(model.parameters()).device
    values = torch.linspace(-limit, limit, n, device=device)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # top row: z₂ = +limit
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)  # (n², 2), row-major
    images = as_square(decode(model, z, y))
    ends = {0, n - 1} | ({n // 2} if n % 2 else set())  # the ends, and 0 when it is on the grid
    ticks = [f"{v:.1f}" if i in ends else "" for i, v in enumerate(values.tolist())]
    return image_grid(
        images,
        n,
        row_labels=ticks[::-1],
        col_labels=ticks,
        title=f"E[x|z]: z₁ along columns, z₂ up rows, in [−{limit:g}, {limit:g}]",
        tile_inches=min(0.5, 7.0 / n),
    )


def interpolation(
    model,
    guide,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    steps: int = 10,
    y: torch.Tensor | int | None = None,
) -> Figure:
    """x_a, E_θ[x | z_t] for z_t = (1 − t) μ_a + t μ_b, t = 0 … 1 in ``steps`` steps, then x_b;
    μ = E_q[z|x], the posterior means. ``y``: one label for a conditional model (encoder and
    decoder both)."""
    if steps < 2:
        raise PyroVAEError(f"an interpolation needs at least 2 steps, got {steps}")
    x = torch.cat([_rows(x_a), _rows(x_b)])  # (2, D)
    mu = latent_codes(guide, x, y)  # (2, d)
    t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)  # (T, 1)
    path = (1 - t) * mu[0] + t * mu[1]  # (T, d)
    images = torch.cat([x[:1], decode(model, path, y), x[1:]])
    labels = ["x_a", *(f"{v:.2f}" for v in t.squeeze(1).tolist()), "x_b"]
    return image_grid(images, steps + 2, col_labels=labels)


def traversal(
    model,
    guide,
    x: torch.Tensor,
    dims: Sequence[int] | None = None,
    values: torch.Tensor | None = None,
    y: torch.Tensor | int | None = None,
) -> Figure:
    """One row per latent dimension j in ``dims``: E_θ[x|z] with z = E_q[z|x] except z_j set to
    each of ``values`` (default −3 … 3 in 9 steps).

    ``dims`` default to the first min(d, 10); training's figure passes the most active ones
    (largest Var_x E_q[z_j|x] over the test images). ``x`` is one image (D,) or (1, D); ``y``
    its label for a conditional model.
    """
    x = _rows(x)[:1]
    code = latent_codes(guide, x, y)[0]  # (d,)
    d = code.shape[0]
    dims = list(range(min(d, TRAVERSAL_DIMS))) if dims is None else list(dims)
    bad = [j for j in dims if not 0 <= j < d]
    if bad or not dims:
        raise PyroVAEError(f"traversal dims must be in 0..{d - 1}, got {dims}")
    values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values)
    values = values.to(code.device, code.dtype)
    v = values.shape[0]
    z = code.repeat(len(dims), v, 1)  # (J, V, d)
    for row, j in enumerate(dims):
        z[row, :, j] = values
    images = decode(model, z.reshape(-1, d), y)  # (J·V, D)
    return image_grid(
        as_square(images),
        v,
        row_labels=[f"z{j}" for j in dims],
        col_labels=[f"{u:.1f}" for u in values.tolist()],
    )


def perturbation(
    runs: Mapping[str, tuple[Any, Any]],
    x: torch.Tensor,
    scales: Sequence[float] = (0.5, 1.0),
    seed: int = 0,
    y: torch.Tensor | int | None = None,
) -> Figure:
    """How smooth each run's decoder is around its codes.

    Top row: the originals x. Then per run (label ↦ (model, guide)): E_θ[x | μ] with μ = E_q[z|x],
    and E_θ[x | μ + s ε] for each scale s, with one ε ~ N(0, I) (seeded) shared by every run.
    A VAE's decoder sees z ~ q(z|x) of spread σ during training, so perturbed codes still decode
    to plausible images (often another item); an autoencoder's decoder is trained only at its
    codes, whose scale it chooses freely, so the same absolute noise can mean little or much to
    it: compare at several scales, and relative to each run's code spread.
    """
    if not runs:
        raise PyroVAEError("perturbation needs at least one (model, guide) run")
    x = _rows(x)
    codes = {name: latent_codes(guide, x, y) for name, (_, guide) in runs.items()}
    dims = {c.shape[1] for c in codes.values()}
    if len(dims) != 1:
        raise PyroVAEError(f"perturbation needs runs with one latent size, got {sorted(dims)}")
    with seeded(seed):
        eps = torch.randn(x.shape[0], dims.pop())  # on the CPU: the same ε on every device
    rows, labels = [as_square(x)], ["original"]
    for name, (model, _) in runs.items():
        mu = codes[name]
        rows.append(as_square(decode(model, mu, y)))
        labels.append(f"{name}: E[x|μ]")
        for s in scales:
            rows.append(as_square(decode(model, mu + s * eps.to(mu), y)))
            labels.append(f"{name}: μ + {s:g}ε")
    return image_grid(torch.cat(rows), x.shape[0], row_labels=labels)
