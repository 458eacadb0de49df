"""The training configuration: one frozen dataclass; the CLI is generated from its fields."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pyrovae.data.files import DATASETS
from pyrovae.data.images import PIXEL_MODES
from pyrovae.errors import PyroVAEError
from pyrovae.guides.families import GUIDES
from pyrovae.inference.estimators import ESTIMATORS
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.nets import ACTIVATIONS
from pyrovae.registry import lookup


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
    latent_dim: int = _opt(50, "latent size d")
    hidden: tuple[int, ...] = _opt((400, 400), "hidden layer sizes of encoder and decoder")
    activation: str = _opt("relu", f"activation: {', '.join(ACTIVATIONS)}")
    epochs: int = _opt(10, "number of epochs (with --resume: the total to reach)")
    batch_size: int = _opt(128, "mini-batch size")
    lr: float = _opt(1e-3, "Adam learning rate")
    seed: int = _opt(0, "random seed")
    device: str = _opt("auto", "cpu, cuda or auto (cuda when a GPU is visible)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        lookup(DATASETS, self.dataset, "dataset")
        lookup(PIXEL_MODES, self.pixels, "pixel mode")
        lookup(ESTIMATORS, self.estimator, "estimator")
        lookup(GUIDES, self.guide, "guide")
        lookup(PRIORS, self.prior, "prior")
        lookup(ACTIVATIONS, self.activation, "activation")
        get_likelihood(self.likelihood, self.pixels)
        for name in ("num_particles", "latent_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise PyroVAEError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.train_subset is not None and self.train_subset < 1:
            raise PyroVAEError(f"--train-subset must be at least 1, got {self.train_subset}")
        if not self.hidden or min(self.hidden) < 1:
            raise PyroVAEError(f"--hidden needs one or more positive sizes, got {self.hidden}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PyroVAEError(f"--lr must be a positive number, got {self.lr}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise PyroVAEError(f"--device must be cpu, cuda or auto, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
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
