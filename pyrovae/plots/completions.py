"""Structured output prediction (image completion): completions of each input beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pyrovae.plots.common import evaluating, image_shape
from pyrovae.plots.grids import as_images, image_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISSING_GREY = 0.5  # how the input tile shows a pixel that is not observed


def completions(model, x: torch.Tensor, num: int = 6, baseline=None) -> Figure:
    """One row per image x (N, D): the input (observed pixels, the missing ones mid-grey), the
    truth, the ``baseline``'s one completion when given, then ``num`` completions of the model
    (:meth:`VAE.complete`: z ~ p(z|x_obs), the missing pixels E_θ[x_miss|z, x_obs]; a model without
    latents has one). Draws from the global RNG."""
    with torch.no_grad(), evaluating(model):
        observed = model.condition.observed  # (D,)
        shown = torch.where(observed, x, x.new_full((), MISSING_GREY))
        columns = [shown, x]
        names = ["input", "truth"]
        if baseline is not None:
            columns.append(baseline.complete(x, 1)[0])
            names.append("baseline")
        latent = bool(getattr(model, "sites", ()))
        drawn = model.complete(x, num if latent else 1)  # (S, N, D)
    columns.extend(drawn)
    names += [f"sample {s + 1}" for s in range(num)] if latent else ["prediction"]
    images = torch.stack(columns, dim=1).flatten(0, 1)  # (N·cols, D), row by row
    title = (
        "completions: samples z ~ p(z|x_obs), then E[x_miss|z, x_obs]"
        if latent
        else "completion: the prediction E[x_miss|x_obs]"
    )
    shape = image_shape(model)
    return image_grid(as_images(images, shape), len(columns), col_labels=names, title=title)
