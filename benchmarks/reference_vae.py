"""A hand-written PyTorch VAE (no Pyro): the baseline that ``epoch_time.py`` times pyrovae against.

It has the nets and the data path of pyrovae's default model, so the two differ only in how
the loss and its gradient are computed (Pyro's traces and ELBOs against plain tensor code):

- p(z) = N(0, I_d), p_θ(x|z) = Π_i Bernoulli(x_i; σ(ℓ_i)), ℓ = dec_θ(z)
- q_φ(z|x) = N(μ, diag σ²), [μ, ρ] = enc_φ(x), σ = softplus(ρ) + 1e-4
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.data import ImageData
from pyrovae.data.batches import epoch_generator, shuffled_batches
from pyrovae.data.images import epoch_seed
from pyrovae.guides.families import MIN_SCALE
from pyrovae.nets import mlp


class ReferenceVAE(nn.Module):
    """Encoder ``D → hidden… → 2d`` and decoder ``d → reversed(hidden)… → D``, as pyrovae builds."""

    def __init__(
        self,
        num_pixels: int = 784,
        hidden: Sequence[int] = (400, 400),
        latent_dim: int = 50,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.encoder = mlp([num_pixels, *hidden, 2 * latent_dim], activation)
        self.decoder = mlp([latent_dim, *reversed(hidden), num_pixels], activation)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of q_φ(z|x), each (B, d)."""
        loc, rho = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(rho) + MIN_SCALE

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_θ(x|z) = Σ_i [x_i log σ(ℓ_i) + (1 − x_i) log(1 − σ(ℓ_i))], shape (B,)."""
        logits = self.decoder(z)  # (B, D)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def elbo_loss(vae: ReferenceVAE, x: torch.Tensor) -> torch.Tensor:
    """−Σ_b [log p(x|z) + log N(z; 0, I) − log q(z|x)], z = μ + σ ε, ε ~ N(0, I) (Trace_ELBO).

    With (z − μ)/σ = ε, log N(z; 0, I) − log q(z|x) = Σ_j [½ε_j² − ½z_j² + log σ_j]: the log 2π
    terms cancel, and the gradient is the same as through log q's density at z.
    """
    loc, scale = vae.posterior(x)
    eps = torch.randn_like(loc)
    z = loc + scale * eps  # (B, d)
    log_ratio = (0.5 * (eps**2 - z**2) + scale.log()).sum(-1)
    return -(vae.log_likelihood(x, z) + log_ratio).sum()


def analytic_kl_loss(vae: ReferenceVAE, x: torch.Tensor) -> torch.Tensor:
    """−Σ_b [log p(x|z) − KL(q ‖ p)], KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) (TraceMeanField_ELBO).

    z = μ + σ ε, ε ~ N(0, I), one sample per datapoint.
    """
    loc, scale = vae.posterior(x)
    z = loc + scale * torch.randn_like(loc)  # (B, d)
    var = scale**2
    kl = 0.5 * (loc**2 + var - 1 - var.log()).sum(-1)
    return -(vae.log_likelihood(x, z) - kl).sum()


LOSSES: dict[str, Callable[[ReferenceVAE, torch.Tensor], torch.Tensor]] = {
    "elbo": elbo_loss,
    "analytic-kl": analytic_kl_loss,
}


def epoch_batches(
    data: ImageData, batch_size: int, seed: int, epoch: int
) -> Iterator[torch.Tensor]:
    """The mini-batches ``pyrovae.fit`` draws in ``epoch``: same binarization, same shuffle.

    The binarization happens now; the shuffle on the first ``next`` (as in ``fit``, whose epoch
    clock starts between the two).
    """
    x_epoch = data.train_epoch(seed, epoch)
    shuffle = epoch_generator(x_epoch.device, epoch_seed(seed, epoch) + 1)
    return shuffled_batches(x_epoch, batch_size, shuffle)


def make_optimizer(vae: ReferenceVAE, lr: float = 1e-3, fused: bool = False) -> torch.optim.Adam:
    """Adam as a hand-written loop would build it (torch's defaults), or its fused kernel."""
    return torch.optim.Adam(vae.parameters(), lr=lr, fused=fused or None)


def train_epoch(
    vae: ReferenceVAE,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[torch.Tensor],
    loss: str = "elbo",
) -> float:
    """One pass of Adam steps on ``LOSSES[loss]``; returns the loss summed over all datapoints.

    Like ``pyrovae.svi_step``, each step reads its loss back as a Python float.
    """
    loss_fn = LOSSES[loss]
    vae.train()
    total = 0.0
    for xb in batches:
        value = loss_fn(vae, xb)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += value.item()
    return total
