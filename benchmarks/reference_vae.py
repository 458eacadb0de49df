"""A hand-written PyTorch VAE (no Pyro): the baseline that ``epoch_time.py`` times pyrovae against.

It has the nets and the data path of pyrovae's default model, so the two differ only in how
the loss and its gradient are computed (Pyro's traces and ELBOs against plain tensor code):

- p(z) = N(0, I_d), p_θ(x|z) = Π_i Bernoulli(x_i; σ(ℓ_i)), ℓ = dec_θ(z)
- q_φ(z|x) = N(μ, diag σ²), [μ, ρ] = enc_φ(x), σ = softplus(ρ) + 1e-4
"""

from __future__ import annotations

import math
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
        """log p_θ(x|z) = Σ_i [x_i log σ(ℓ_i) + (1 − x_i) log(1 − σ(ℓ_i))] of z (…, B, d), shape
        (…, B)."""
        logits = self.decoder(z)  # (…, B, D)
        target = x.expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def sample(
    vae: ReferenceVAE, x: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ, σ) of q_φ(z|x), each (B, d), and k draws ε ~ N(0, I), z = μ + σ ε, each (k, B, d)."""
    loc, scale = vae.posterior(x)
    eps = torch.randn((k, *loc.shape), dtype=loc.dtype, device=loc.device)
    return loc, scale, eps, loc + scale * eps


def log_weights(vae: ReferenceVAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """log w = log p(x|z) + log N(z; 0, I) − log q(z|x) of k draws per datapoint, shape (k, B).

    With (z − μ)/σ = ε, log N(z; 0, I) − log q(z|x) = Σ_j [½ε_j² − ½z_j² + log σ_j]: the log 2π
    terms cancel, and the gradient is the same as through log q's density at z.
    """
    _, scale, eps, z = sample(vae, x, k)
    return vae.log_likelihood(x, z) + (0.5 * (eps**2 - z**2) + scale.log()).sum(-1)


def elbo_loss(vae: ReferenceVAE, x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """−Σ_b mean_k log w_kb (Trace_ELBO, k particles averaged)."""
    return -log_weights(vae, x, k).mean(0).sum()


def analytic_kl_loss(vae: ReferenceVAE, x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """−Σ_b [mean_k log p(x|z_k) − KL(q ‖ p)], KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)
    (TraceMeanField_ELBO)."""
    loc, scale, _, z = sample(vae, x, k)
    var = scale**2
    kl = 0.5 * (loc**2 + var - 1 - var.log()).sum(-1)
    return -(vae.log_likelihood(x, z).mean(0) - kl).sum()


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K = Σ_b [logsumexp_k log w_kb − log K] of log weights (K, B)."""
    return (torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])).sum()


def iwae_loss(vae: ReferenceVAE, x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """−L_K (Burda et al. 2015), its gradient by autograd through z: −Σ_k w̃_k ∇ log w_k."""
    return -iwae_bound(log_weights(vae, x, k))


def dreg_loss(vae: ReferenceVAE, x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """−L_K in value; in gradient −(Σ_k w̃_k ∇_θ log w_k + Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ), the
    doubly-reparameterized estimator (Tucker et al. 2018), w̃ = softmax_k(log w).

    log q is evaluated at stop-grad(μ, σ), so φ reaches log w through z only. The surrogate
    Σ w̃ log w gives the decoder its gradient and z the incoming gradient w̃ ∂log w/∂z; a hook
    on z multiplies that by w̃ once more before it flows into μ and σ.
    """
    loc, scale, _, z = sample(vae, x, k)
    loc_stop, scale_stop = loc.detach(), scale.detach()
    eps_stop = (z - loc_stop) / scale_stop  # equals ε in value, keeps z's path
    log_ratio = (0.5 * (eps_stop**2 - z**2) + scale_stop.log()).sum(-1)
    log_w = vae.log_likelihood(x, z) + log_ratio  # (k, B)
    weights = torch.softmax(log_w.detach(), dim=0)  # w̃, per datapoint
    z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    surrogate = (weights * log_w).sum()
    bound = iwae_bound(log_w.detach())
    return -(surrogate + (bound - surrogate).detach())


LOSSES: dict[str, Callable[[ReferenceVAE, torch.Tensor, int], torch.Tensor]] = {
    "elbo": elbo_loss,
    "analytic-kl": analytic_kl_loss,
    "iwae": iwae_loss,
    "iwae-dreg": dreg_loss,
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
    num_particles: int = 1,
) -> float:
    """One pass of Adam steps on ``LOSSES[loss]`` with ``num_particles`` draws per datapoint;
    returns the loss summed over all datapoints.

    Like ``pyrovae.svi_step``, each step reads its loss back as a Python float.
    """
    loss_fn = LOSSES[loss]
    vae.train()
    total = 0.0
    for xb in batches:
        value = loss_fn(vae, xb, num_particles)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += value.item()
    return total
