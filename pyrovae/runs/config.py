"""The training configuration: one frozen dataclass; the CLI is generated from its fields."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.data.files import DATASETS
from pyrovae.data.images import PIXEL_MODES
from pyrovae.guides.families import GUIDES
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.nets import ACTIVATIONS, NETS


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; recorded in the run folder's ``config.json``."""

    dataset: str = _opt("fashion-mnist", f"dataset: {', '.join(DATASETS)}")
    pixels: str = _opt("dynamic", "pixel mode: dynamic, static (binarized once) or grey")
    train_subset: int | None = _opt(None, "train on the first N training images only")
    estimator: str = _opt("elbo", f"ELBO estimator: {', '.join(ESTIMATORS)}")
    num_particles: int = _opt(1, "K, samples of z per datapoint (vectorized)")
    likelihood: str = _opt("bernoulli", "likelihood p(x|z)")
    guide: str = _opt("normal", "guide family q(z|x)")
    prior: str = _opt("normal", "prior p(z)")
    net: str = _opt("mlp", "encoder/decoder networks: mlp or conv (28×28 images)")
    beta: float = _opt(1.0, "β: weight of the KL / latent site (β-VAE); 0 drops it")
    kl_warmup: int = _opt(0, "anneal β linearly from 0 over this many steps (0: constant β)")
    conditional: bool = _opt(False, "conditional VAE: p(x|z,y), q(z|x,y) with the label y")
    autoencoder: bool = _opt(False, "deterministic autoencoder baseline: z = encoder mean, no KL")
    latent_dim: int | tuple[int, ...] = _opt(
        50, "latent size d; several values, bottom first, stack stochastic layers (100 50)"
    )
    hidden: tuple[int, ...] = _opt((400, 400), "hidden layer sizes of encoder and decoder")
    upper_hidden: tuple[int, ...] = _opt(
        (), "hidden sizes of the networks between stochastic layers; () for the --hidden sizes"
    )
    activation: str = _opt("relu", f"activation: {', '.join(ACTIVATIONS)}")
    epochs: int = _opt(10, "number of epochs (with --resume: the total to reach)")
    batch_size: int = _opt(128, "mini-batch size")
    lr: float = _opt(1e-3, "Adam learning rate")
    seed: int = _opt(0, "random seed")
    device: str = _opt("auto", "cpu, cuda or auto (cuda when a GPU is visible)")
    no_jit: bool = _opt(
        False,
        "run Pyro's handlers at every step instead of replaying the loss graph recorded once "
        "per batch shape (for a model whose control flow depends on the data)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "upper_hidden", tuple(self.upper_hidden))
        dims = (self.latent_dim,) if isinstance(self.latent_dim, int) else tuple(self.latent_dim)
        if not dims:
            raise PyroVAEError("--latent-dim needs one size per stochastic layer, got none")
        if min(dims) < 1:
            shown = dims[0] if len(dims) == 1 else " ".join(map(str, dims))
            raise PyroVAEError(f"--latent-dim must be at least 1, got {shown}")
        object.__setattr__(self, "latent_dim", dims[0] if len(dims) == 1 else dims)
        lookup(DATASETS, self.dataset, "dataset")
        lookup(PIXEL_MODES, self.pixels, "pixel mode")
        lookup(ESTIMATORS, self.estimator, "estimator")
        if self.autoencoder:  # composed, not a new model: a point-mass guide and no KL
            if self.guide not in ("normal", "delta") or self.beta not in (0.0, 1.0):
                raise PyroVAEError("--autoencoder sets --guide delta --beta 0; drop those flags")
            object.__setattr__(self, "guide", "delta")
            object.__setattr__(self, "beta", 0.0)
        lookup(GUIDES, self.guide, "guide")
        lookup(PRIORS, self.prior, "prior")
        lookup(NETS, self.net, "network")
        if self.guide == "delta" and self.prior == "vamp":
            raise PyroVAEError("--prior vamp needs a guide with a density; not --guide delta")
        if self.conditional and self.prior == "vamp":
            raise PyroVAEError("--prior vamp needs q(z|u) without labels; use it unconditionally")
        if self.guide == "delta" and len(dims) > 1:
            raise PyroVAEError(
                "--guide delta (the autoencoder) has one latent layer: with β = 0 nothing above "
                "z1 is trained; give one --latent-dim"
            )
        if self.prior == "vamp" and len(dims) > 1:
            raise PyroVAEError(
                "--prior vamp needs one stochastic layer (its components are q(z|u)); "
                "give one --latent-dim"
            )
        make_estimator(self.estimator, self.num_particles)  # e.g. a baseline that needs K ≥ 2
        lookup(ACTIVATIONS, self.activation, "activation")
        get_likelihood(self.likelihood, self.pixels)
        for name in ("num_particles", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise PyroVAEError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.train_subset is not None and self.train_subset < 1:
            raise PyroVAEError(f"--train-subset must be at least 1, got {self.train_subset}")
        if not self.hidden or min(self.hidden) < 1:
            raise PyroVAEError(f"--hidden needs one or more positive sizes, got {self.hidden}")
        if self.upper_hidden and min(self.upper_hidden) < 1:
            raise PyroVAEError(f"--upper-hidden needs positive sizes, got {self.upper_hidden}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PyroVAEError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise PyroVAEError(f"--beta must be a number ≥ 0, got {self.beta}")
        if self.kl_warmup < 0:
            raise PyroVAEError(f"--kl-warmup must be ≥ 0 steps, got {self.kl_warmup}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise PyroVAEError(f"--device must be cpu, cuda or auto, got {self.device!r}")

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """One latent size per stochastic layer, bottom first."""
        return (self.latent_dim,) if isinstance(self.latent_dim, int) else self.latent_dim

    @property
    def layer_hidden(self) -> tuple[int, ...]:
        """Hidden sizes of the networks between stochastic layers."""
        return self.upper_hidden or self.hidden

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("hidden", "upper_hidden"):
            d[name] = list(d[name])
        if not isinstance(self.latent_dim, int):
            d["latent_dim"] = list(self.latent_dim)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise PyroVAEError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
