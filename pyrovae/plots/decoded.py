"""Images decoded from codes: reconstructions, samples, manifold, interpolation, traversal,
and the autoencoder-vs-VAE perturbation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import seeded
from pyrovae.plots.common import (
    DPI,
    as_rows,
    decode,
    evaluating,
    image_shape,
    label_tensor,
    latent_dim,
    layer_note,
    sites,
)
from pyrovae.plots.grids import as_images, image_grid, readable_tile
from pyrovae.plots.latents import latent_codes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TRAVERSAL_DIMS = 10
"""How many latent dimensions a traversal draws (the first ones)."""


def reconstructions(model, guide, x: torch.Tensor, y: torch.Tensor | int | None = None) -> Figure:
    """Originals x (top row) above their reconstructions E_θ[x | z = E_q[z|x]] (bottom row).

    ``y``: (N,) labels (or one label for all) for a conditional model. With several stochastic
    layers the code is the bottom layer's E_q[z1|x], as the title says.
    """
    shape = image_shape(model)
    x = as_rows(x, shape)
    recon = decode(model, latent_codes(guide, x, y), y)  # (N, D)
    images = torch.cat([as_images(x, shape), as_images(recon, shape)])
    note = layer_note(guide)
    title = f"reconstructions at E_q[z1|x] ({note})" if note else "reconstructions at E_q[z|x]"
    return image_grid(
        images,
        x.shape[0],
        row_labels=["original", "reconstruction"],
        title=title,
        tile_inches=readable_tile(shape[-1], DPI),
    )


def prior_samples(
    model,
    num: int = 64,
    y: torch.Tensor | int | None = None,
    *,
    cols: int | None = None,
    row_labels: Sequence[str] | None = None,
) -> Figure:
    """``num`` images E_θ[x|z], z ~ p(z) (:meth:`VAE.generate`, global RNG); ``y``: (num,)
    labels (or one label) for a conditional model. With several stochastic layers the draw is
    ancestral (z_L ~ p(z_L), …, z1 ~ p(z1|z2)), as the title says."""
    device = next(model.parameters()).device
    with evaluating(model):
        images = model.generate(num, label_tensor(y, num, device))  # (num, D)
    names = sites(model)
    given = " per label y" if y is not None else ""
    title = f"samples E[x|z], z ~ p(z){given}"
    if len(names) > 1:
        chain = " → ".join(names[::-1])
        title = f"ancestral samples {chain} → x, E[x|{names[0]}]{given}"
    return image_grid(
        as_images(images, image_shape(model)), cols, row_labels=row_labels, title=title
    )


def manifold(model, n: int = 20, limit: float = 3.0, y: torch.Tensor | int | None = None) -> Figure:
    """E_θ[x|z] over an n × n grid of z ∈ [−limit, limit]² (2-D latent only): z₁ grows to the
    right, z₂ upwards. ``y``: one label for a conditional model. With several stochastic layers
    the grid is over the bottom layer z1 (2-D), as the title says."""
    if n < 1:
        raise PyroVAEError(f"the manifold needs n ≥ 1 points per axis, got {n}")
    d = latent_dim(model)
    if d != 2:
        raise PyroVAEError(f"the manifold figure needs a 2-D latent space, this model's is {d}-D")
    note = layer_note(model)
    device = next(model.parameters()).device
    values = torch.linspace(-limit, limit, n, device=device)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # top row: z₂ = +limit
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)  # (n², 2), row-major
    images = as_images(decode(model, z, y), image_shape(model))
    ends = {0, n - 1} | ({n // 2} if n % 2 else set())  # the ends, and 0 when it is on the grid
    ticks = [f"{v:.1f}" if i in ends else "" for i, v in enumerate(values.tolist())]
    return image_grid(
        images,
        n,
        row_labels=ticks[::-1],
        col_labels=ticks,
        title=(
            f"E[x|z1]: z1[0] along columns, z1[1] up rows, in [−{limit:g}, {limit:g}] ({note})"
            if note
            else f"E[x|z]: z₁ along columns, z₂ up rows, in [−{limit:g}, {limit:g}]"
        ),
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
    shape = image_shape(model)
    x = torch.cat([as_rows(x_a, shape), as_rows(x_b, shape)])  # (2, D)
    mu = latent_codes(guide, x, y)  # (2, d)
    t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)  # (T, 1)
    path = (1 - t) * mu[0] + t * mu[1]  # (T, d)
    images = torch.cat([x[:1], decode(model, path, y), x[1:]])
    labels = ["x_a", *(f"{v:.2f}" for v in t.squeeze(1).tolist()), "x_b"]
    return image_grid(as_images(images, shape), steps + 2, col_labels=labels)


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
    its label for a conditional model. With several stochastic layers z is the bottom layer's
    z1: rows ``z1[j]``, and the title says so.
    """
    shape = image_shape(model)
    x = as_rows(x, shape)[:1]
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
    note = layer_note(guide)
    zi, code = ("z1[i]", "E_q[z1|x]") if note else ("z_i", "E_q[z|x]")
    low, high = values.min().item(), values.max().item()
    title = f"traversal of {note}" if note else "traversal: E[x|z], one dimension changed per row"
    return image_grid(
        as_images(images, shape),
        v,
        row_labels=[f"z1[{j}]" if note else f"z{j}" for j in dims],
        col_labels=[f"{u:.1f}" for u in values.tolist()],
        title=title,
        xlabel=f"value of {zi}, {low:g} to {high:g}; the other dimensions at {code}",
        ylabel="dimension i",
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
    shape = image_shape(next(iter(runs.values()))[0])
    x = as_rows(x, shape)
    codes = {name: latent_codes(guide, x, y) for name, (_, guide) in runs.items()}
    dims = {c.shape[1] for c in codes.values()}
    if len(dims) != 1:
        raise PyroVAEError(f"perturbation needs runs with one latent size, got {sorted(dims)}")
    with seeded(seed):
        eps = torch.randn(x.shape[0], dims.pop())  # on the CPU: the same ε on every device
    rows, labels = [as_images(x, shape)], ["original"]
    for name, (model, _) in runs.items():
        mu = codes[name]
        rows.append(as_images(decode(model, mu, y), shape))
        labels.append(f"{name}: E[x|μ]")
        for s in scales:
            rows.append(as_images(decode(model, mu + s * eps.to(mu), y), shape))
            labels.append(f"{name}: μ + {s:g}ε")
    return image_grid(torch.cat(rows), x.shape[0], row_labels=labels)
