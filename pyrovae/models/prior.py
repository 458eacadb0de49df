"""Priors p(z): modules whose ``forward()`` returns the distribution of one datapoint's latent.

Every prior has the constructor ``(latent_dim, *, guide=None, num_pixels=None, **options)`` (a
prior ignores what it does not use; options: ``context_dim``, ``hidden``, ``activation``) and
``forward()`` returns a distribution with event shape (d,) and batch shape (); the model's
``pyro.plate`` broadcasts it over the batch (and the particles). A ``conditional`` prior is
p(z|c) instead: ``forward(c)`` for a context c (B, context_dim) returns batch shape (B,).
``learned`` says whether it has parameters of its own; ``code`` which guide families it pairs
with (theirs must match: ``continuous``, or a discrete code's ``categorical`` / ``bernoulli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.guides.discrete import Bernoullis, Categoricals
from pyrovae.guides.families import DiagonalNormal
from pyrovae.nets.dense import MLP


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I_d)."""

    description = "standard Normal N(0, I)"

    learned: ClassVar[bool] = False
    code: ClassVar[str] = "continuous"

    def __init__(
        self, latent_dim: int, *, guide=None, num_pixels: int | None = None, **options: Any
    ) -> None:
        super().__init__()
        # Buffers follow the module across devices, so no tensor is created per step.
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)


class MixturePrior(nn.Module):
    """p(z) = Σ_c π_c N(μ_c, diag σ_c²), C components, all learned.

    π = softmax(logits), initially uniform; μ_c ~ N(0, I) drawn from torch's global generator (so
    ``set_seed`` reproduces them), spread out so the components do not start identical;
    σ = softplus(ρ) + 1e-3, initially 1: the floor keeps a component from collapsing onto a
    point, where its density (and the ELBO) would grow without bound.
    """

    description = "learned mixture of 10 diagonal Normals"

    learned: ClassVar[bool] = True
    code: ClassVar[str] = "continuous"
    NUM_COMPONENTS: ClassVar[int] = 10
    MIN_SCALE: ClassVar[float] = 1e-3

    def __init__(
        self,
        latent_dim: int,
        *,
        guide=None,
        num_pixels: int | None = None,
        num_components: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        c = self.NUM_COMPONENTS if num_components is None else num_components
        self.logits = nn.Parameter(torch.zeros(c))  # (C,)
        self.means = nn.Parameter(torch.randn(c, latent_dim))  # (C, d)
        rho = torch.full((c, latent_dim), 1.0 - self.MIN_SCALE).expm1().log()  # softplus⁻¹
        self.rho = nn.Parameter(rho)  # (C, d)

    @property
    def scales(self) -> torch.Tensor:
        """σ_c, shape (C, d)."""
        return F.softplus(self.rho) + self.MIN_SCALE

    def forward(self) -> dist.Distribution:
        mixing = dist.Categorical(logits=self.logits, validate_args=False)
        components = dist.Normal(self.means, self.scales, validate_args=False).to_event(1)
        return dist.MixtureSameFamily(mixing, components, validate_args=False)


class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/C) Σ_c q_φ(z | u_c).

    The components are the guide's own posterior at C learned pseudo-inputs u_c ∈ [0, 1]^D, so
    the prior shares the encoder φ: a gradient of log p(z) reaches the encoder's weights. The
    paper used C = 500 on MNIST; 100 here, because log p(z) evaluates every component at every
    z, a (particles, batch, C, d) tensor, which dominates memory with many particles.

    u = sigmoid(ρ) keeps the pseudo-inputs in pixel range; ρ ~ N(0, 1) (torch's global
    generator) starts them as distinct grey noise images within (0.1, 0.9) for abs(ρ) < 2, where
    the sigmoid's slope is still at least 0.1.

    The guide is held by a plain reference, not as a submodule: registering it would put the
    encoder's parameters into ``model.parameters()`` as well as ``guide.parameters()`` (an
    optimizer over both would step them twice) and its weights into the model's state dict.
    The prior's own parameters are the pseudo-inputs only.
    """

    description = "VampPrior: q(z|u) averaged over 100 learned pseudo-inputs u (slow)"

    learned: ClassVar[bool] = True
    code: ClassVar[str] = "continuous"
    NUM_COMPONENTS: ClassVar[int] = 100

    def __init__(
        self,
        latent_dim: int,
        *,
        guide=None,
        num_pixels: int | None = None,
        num_components: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if guide is None or num_pixels is None:
            raise PyroVAEError(
                "the vamp prior needs the guide and num_pixels (its pseudo-inputs go through "
                "the guide's encoder)"
            )
        c = self.NUM_COMPONENTS if num_components is None else num_components
        # object.__setattr__ bypasses nn.Module.__setattr__, which would register a submodule.
        object.__setattr__(self, "_guide", guide)
        self.rho = nn.Parameter(torch.randn(c, num_pixels))  # (C, D)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_c = sigmoid(ρ_c), shape (C, D)."""
        return torch.sigmoid(self.rho)

    def forward(self) -> dist.Distribution:
        u = self.pseudo_inputs  # (C, D)
        components = self._guide.posterior(u)  # batch (C,), event (d,)
        mixing = dist.Categorical(logits=u.new_zeros(u.shape[0]), validate_args=False)
        return dist.MixtureSameFamily(mixing, components, validate_args=False)


class ConditionalNormalPrior(nn.Module):
    """p(z|c) = N(μ_ψ(c), diag σ_ψ(c)²), the conditional VAE's prior network (Sohn et al. 2015).

    An MLP ψ over the context c (the label's one-hot, or the observed pixels x_obs) with the
    ``hidden`` sizes gives cat(μ, ρ), σ = softplus(ρ) + 10⁻⁴, as the ``normal`` guide family
    does; so KL(q(z|x, c) ‖ p(z|c)) between two diagonal Normals has its closed form
    Σ_j log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²)/(2σ_p²) − ½. ``context_dim`` is c's length (0: there
    is no condition, refused).
    """

    description = "learned p(z|c) = N(μ(c), diag σ(c)²) (with --conditional or --condition-on)"

    learned: ClassVar[bool] = True
    code: ClassVar[str] = "continuous"
    conditional: ClassVar[bool] = True

    def __init__(
        self,
        latent_dim: int,
        *,
        guide=None,
        num_pixels: int | None = None,
        context_dim: int = 0,
        hidden: Sequence[int] = (400, 400),
        activation: str = "relu",
        **options: Any,
    ) -> None:
        super().__init__()
        if context_dim < 1:
            raise PyroVAEError(
                "--prior conditional needs a condition: --conditional (the label) or "
                "--condition-on (observed pixels)"
            )
        self.family = DiagonalNormal(latent_dim)
        self.net = MLP(context_dim, hidden, self.family.num_params, activation)

    def forward(self, c: torch.Tensor) -> dist.Distribution:
        return self.family(self.net(c))  # batch (…, B), event (d,)


class UniformCategoricalPrior(nn.Module):
    """p(z) = Π_g Cat(z_g; 1/C): G groups of a uniform C-way one-hot, flat (G·C,); C is the
    guide family's ``categories``."""

    description = "discrete: uniform over the C categories of each group (--guide categorical)"

    learned: ClassVar[bool] = False
    code: ClassVar[str] = "categorical"

    def __init__(
        self, latent_dim: int, *, guide=None, num_pixels: int | None = None, **options: Any
    ) -> None:
        super().__init__()
        categories = getattr(getattr(guide, "family", None), "categories", None)
        if categories is None:
            raise PyroVAEError("the categorical prior needs the categorical guide (its C)")
        self.groups = latent_dim
        self.register_buffer("logits", torch.zeros(latent_dim * categories))  # (G·C,)

    def forward(self) -> Categoricals:
        return Categoricals(self.logits, self.groups)


class UniformBernoulliPrior(nn.Module):
    """p(z) = Π_j Bernoulli(z_j; ½): n fair binary units."""

    description = "discrete: n fair binary units, p = ½ each (--guide bernoulli)"

    learned: ClassVar[bool] = False
    code: ClassVar[str] = "bernoulli"

    def __init__(
        self, latent_dim: int, *, guide=None, num_pixels: int | None = None, **options: Any
    ) -> None:
        super().__init__()
        self.register_buffer("logits", torch.zeros(latent_dim))  # (n,): log(½/½) = 0

    def forward(self) -> Bernoullis:
        return Bernoullis(self.logits)


PRIORS: dict[str, type[nn.Module]] = {
    "normal": StandardNormalPrior,
    "mixture": MixturePrior,
    "vamp": VampPrior,
    "conditional": ConditionalNormalPrior,
    "categorical": UniformCategoricalPrior,
    "bernoulli": UniformBernoulliPrior,
}
"""Priors by name (``--prior``): name ↦ the module returning p(z) (p(z|c) for ``conditional``)."""
