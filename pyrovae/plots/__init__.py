"""Figures of training runs, latent spaces and estimator diagnostics.

Every public function returns a :class:`matplotlib.figure.Figure` built with matplotlib's object
API (no pyplot, no global backend state); :func:`save_figure` writes one as a PNG. Tensors stay on
their device for the computation (under ``torch.no_grad()``) and go to the CPU only to be drawn.
Images are flattened, (N, D) with D = side² (784 = 28² for MNIST).

"Decoding" z means the likelihood's mean E_θ[x|z] (pixel probabilities for a Bernoulli), the
picture of p_θ(x|z) that does not depend on sampling noise. A conditional model (or guide) takes
labels ``y``; each function says what shape of ``y`` it expects.
"""

from pyrovae.plots.common import DPI, decode, save_figure
from pyrovae.plots.completions import completions
from pyrovae.plots.curves import (
    bound_vs_k,
    gradient_variance,
    seed_band,
    snr_vs_k,
    training_curves,
)
from pyrovae.plots.decoded import (
    TRAVERSAL_DIMS,
    interpolation,
    manifold,
    perturbation,
    prior_samples,
    reconstructions,
    traversal,
)
from pyrovae.plots.grids import image_grid
from pyrovae.plots.latents import latent_codes, latent_scatter, latent_snapshots

__all__ = [
    "DPI",
    "TRAVERSAL_DIMS",
    "bound_vs_k",
    "completions",
    "decode",
    "gradient_variance",
    "image_grid",
    "interpolation",
    "latent_codes",
    "latent_scatter",
    "latent_snapshots",
    "manifold",
    "perturbation",
    "prior_samples",
    "reconstructions",
    "save_figure",
    "snr_vs_k",
    "seed_band",
    "training_curves",
    "traversal",
]
