"""Discrete codes: G groups of a C-way one-hot, or n binary units, and their relaxations.

A code's value is flat, shape (d,): d = G·C for the categorical code (group g is the slice
[g·C, (g + 1)·C)), d = n for the binary one; the decoder reads it as it is. The distributions
have no ``rsample`` (Pyro's ELBOs then know the site is not reparameterized), enumerate the
joint states of one datapoint's code (Pyro's ``TraceEnum_ELBO``), and give relaxed draws:

- Concrete / Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017), per group:
  y = softmax((log π + g)/τ), g_c ~ Gumbel(0, 1) i.i.d.;
- binary Concrete, per unit: y = σ((l + L)/τ), l = log(p/(1 − p)), L ~ Logistic(0, 1);
- straight-through: the hard value argmax (one-hot) or [l + L > 0] in the forward pass, the
  relaxed y's gradient in the backward one, z = hard + y − stop-grad(y). The hard value is an
  exact draw of the code (the Gumbel-max trick), so the forward pass is unbiased.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import clamp_probs

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import onehot
from pyrovae.guides.family import Family

ENUMERATION_LIMIT = 1024
"""Most joint states one datapoint's code may have for enumeration: the decoder runs on all S of
them for every datapoint, an (S, B, D) likelihood; at S = 1024, B = 128, D = 784 that is 10⁸
values (0.4 GB in float32) before the hidden layers' activations and their gradients, about the
most a training step on one GPU holds. 10 binary units or 3 groups of 10 fit."""


def _check_states(count: int, what: str, exponent: str) -> None:
    if count > ENUMERATION_LIMIT:
        raise PyroVAEError(
            f"enumeration of {exponent} states ({what}) is beyond the limit of "
            f"{ENUMERATION_LIMIT}: use gumbel-softmax, straight-through or score-function"
        )


def _support_shape(states: torch.Tensor, batch_shape: torch.Size, expand: bool) -> torch.Tensor:
    """(S, d) states as (S,) + (1,)*len(batch) + (d,), or expanded to (S,) + batch + (d,)."""
    s, d = states.shape
    out = states.reshape((s,) + (1,) * len(batch_shape) + (d,))
    return out.expand((s,) + tuple(batch_shape) + (d,)) if expand else out


class _Code(TorchDistribution):
    """Shared plumbing of the code distributions: flat logits (…, d), batch (…,), event (d,)."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.boolean, 1)  # every value is 0 or 1
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = False) -> None:
        self.logits = logits  # (…, d)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    def _options(self) -> dict[str, Any]:
        """What the constructor needs besides the logits (a categorical code: its groups)."""
        return {}

    def expand(self, batch_shape, _instance=None) -> _Code:
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return type(self)(logits, **self._options())

    def _noise(self, sample_shape: torch.Size) -> torch.Tensor:
        """u ~ U(ε, 1 − ε), shape sample_shape + batch + (d,) (a clamped u keeps logs finite)."""
        shape = self._extended_shape(sample_shape)
        return clamp_probs(torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device))

    def relaxed(self, temperature: Any, hard: bool = False) -> Relaxed:
        """This code's relaxation at temperature τ (straight-through with ``hard``)."""
        return Relaxed(self, temperature, hard)


class Categoricals(_Code):
    """G independent C-way categoricals as one flat one-hot value (…, G·C).

    log q(z) = Σ_g log π_{g, c_g} = Σ_j z_j log π_j for a one-hot z; the logits are normalized
    within each group on construction.
    """

    def __init__(self, logits: torch.Tensor, groups: int, validate_args: bool | None = False):
        self.groups = groups
        self.categories = logits.shape[-1] // groups
        grouped = self._grouped(logits)
        normalized = grouped - grouped.logsumexp(-1, keepdim=True)  # log π, (…, G, C)
        super().__init__(normalized.flatten(-2))

    def _options(self) -> dict[str, Any]:
        return {"groups": self.groups}

    def _grouped(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.groups, t.shape[-1] // self.groups))  # (…, G, C)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (1 - self.probs)

    def _scores(self, sample_shape: torch.Size) -> torch.Tensor:
        """log π + g, g ~ Gumbel(0, 1), grouped: (sample_shape + batch, G, C)."""
        gumbel = -torch.log(-torch.log(self._noise(sample_shape)))
        return self._grouped(self.logits + gumbel)

    def _hard(self, scores: torch.Tensor) -> torch.Tensor:
        return onehot(scores.argmax(-1), self.categories, scores.dtype)  # Gumbel-max

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self._hard(self._scores(torch.Size(sample_shape))).flatten(-2)

    def relaxed_sample(self, sample_shape: torch.Size, temperature: Any, hard: bool):
        """softmax((log π + g)/τ) per group; with ``hard``, straight-through one-hot."""
        scores = self._scores(sample_shape)  # (…, G, C)
        soft = torch.softmax(scores / temperature, dim=-1)
        if not hard:
            return soft.flatten(-2)
        return (self._hard(scores.detach()) + soft - soft.detach()).flatten(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.logits).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum(-1)

    @property
    def num_states(self) -> int:
        return self.categories**self.groups

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """Every joint state once, C^G of them, in lexicographic order of (c_1, …, c_G)."""
        g, c = self.groups, self.categories
        _check_states(self.num_states, f"{g} groups of {c} categories", f"{c}^{g}")
        index = torch.cartesian_prod(*[torch.arange(c, device=self.logits.device)] * g)
        index = index.reshape(-1, g)  # (S, G), also for G = 1
        states = onehot(index, c, self.logits.dtype).flatten(-2)  # (S, G·C)
        return _support_shape(states, self.batch_shape, expand)


class Bernoullis(_Code):
    """n independent binary units, value (…, n); logits l = log(p/(1 − p)).

    log q(z) = Σ_j z_j l_j − softplus(l_j), the Bernoulli log-density for z ∈ {0, 1}.
    """

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (1 - self.probs)

    def _scores(self, sample_shape: torch.Size) -> torch.Tensor:
        """l + L, L = log u − log(1 − u) ~ Logistic(0, 1): shape sample_shape + batch + (n,)."""
        u = self._noise(sample_shape)
        return self.logits + torch.log(u) - torch.log1p(-u)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return (self._scores(torch.Size(sample_shape)) > 0).to(self.logits.dtype)

    def relaxed_sample(self, sample_shape: torch.Size, temperature: Any, hard: bool):
        """σ((l + L)/τ); with ``hard``, straight-through [l + L > 0]."""
        scores = self._scores(sample_shape)
        soft = torch.sigmoid(scores / temperature)
        if not hard:
            return soft
        return (scores > 0).to(soft.dtype) + soft - soft.detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.logits - F.softplus(self.logits)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (F.softplus(self.logits) - self.probs * self.logits).sum(-1)

    @property
    def num_states(self) -> int:
        return 2 ** self.event_shape[0]

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """Every joint state once, 2^n of them, unit 1 the most significant bit."""
        n = self.event_shape[0]
        _check_states(self.num_states, f"{n} binary units", f"2^{n}")
        bits = torch.arange(n - 1, -1, -1, device=self.logits.device)
        states = (torch.arange(2**n, device=self.logits.device).unsqueeze(-1) >> bits) & 1
        return _support_shape(states.to(self.logits.dtype), self.batch_shape, expand)


class Relaxed(TorchDistribution):
    """A code drawn through its relaxation: ``rsample`` is the Concrete draw at temperature τ
    (straight-through with ``hard``), differentiable in the logits.

    ``log_prob`` is the discrete code's formula (Σ_j z_j log π_j, …) at the relaxed value: the
    relaxed estimators use the KL of the discrete q in closed form instead and never read it.
    ``base`` is the discrete code, for that KL.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.boolean, 1)  # a relaxation of a discrete site
    has_rsample = True

    def __init__(self, base: _Code, temperature: Any, hard: bool = False) -> None:
        self.base, self.temperature, self.hard = base, temperature, hard
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> Relaxed:
        return Relaxed(self.base.expand(batch_shape), self.temperature, self.hard)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self.base.relaxed_sample(torch.Size(sample_shape), self.temperature, self.hard)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.base.log_prob(value)

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean


class CategoricalCode(Family):
    """``categorical``: q_φ(z|x) = Π_g Cat(z_g; softmax(a_g)), G = --latent-dim groups of a
    C = --categories way one-hot, flat (G·C,); raw = the logits a (G·C per datapoint)."""

    description = "discrete: G groups of a C-way one-hot (G = --latent-dim, C = --categories)"
    latent_kind = "discrete"
    code = "categorical"

    def __init__(self, latent_dim: int, *, categories: int = 10, **options: Any) -> None:
        super().__init__(latent_dim)
        if categories < 2:
            raise PyroVAEError(f"--categories must be at least 2, got {categories}")
        self.categories = categories
        self.num_params = latent_dim * categories

    @property
    def code_dim(self) -> int:
        return self.latent_dim * self.categories

    @classmethod
    def num_states(cls, latent_dim: int, categories: int = 10) -> int:
        return categories**latent_dim

    @classmethod
    def states_text(cls, latent_dim: int, categories: int = 10) -> tuple[str, str]:
        return f"{latent_dim} groups of {categories} categories", f"{categories}^{latent_dim}"

    def forward(self, raw: torch.Tensor) -> Categoricals:
        return Categoricals(raw, self.latent_dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, categories={self.categories}"


class BernoulliCode(Family):
    """``bernoulli``: q_φ(z|x) = Π_j Bernoulli(z_j; σ(a_j)), n = --latent-dim binary units;
    raw = the logits a (n per datapoint)."""

    description = "discrete: n binary units (n = --latent-dim), as in sigmoid belief nets"
    latent_kind = "discrete"
    code = "bernoulli"

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__(latent_dim)
        self.num_params = latent_dim

    @classmethod
    def num_states(cls, latent_dim: int, categories: int = 10) -> int:
        return 2**latent_dim

    @classmethod
    def states_text(cls, latent_dim: int, categories: int = 10) -> tuple[str, str]:
        return f"{latent_dim} binary units", f"2^{latent_dim}"

    def forward(self, raw: torch.Tensor) -> Bernoullis:
        return Bernoullis(raw)


def check_enumerable(family_cls: type[Family], latent_dim: int, categories: int = 10) -> None:
    """The one-line refusal of a code with more than :data:`ENUMERATION_LIMIT` states (checked
    from the sizes alone, before anything is built)."""
    count = family_cls.num_states(latent_dim, categories)
    if count is None:
        raise PyroVAEError("enumeration needs a discrete guide (categorical or bernoulli)")
    what, exponent = family_cls.states_text(latent_dim, categories)
    _check_states(count, what, exponent)
