"""The training configuration: one frozen dataclass; the CLI is generated from its fields."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrovae.core import choices
from pyrovae.core.defaults import (
    BURDA_EPOCHS,
    DIVERGENCE_FACTOR,
    LEGACY_SPLIT,
    TEMPERATURE,
    TEMPERATURE_INTERVAL,
    TEMPERATURE_MIN,
    TEMPERATURE_RATE,
)
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.ranges import COUNT, SEED, SIZE, IntRange
from pyrovae.core.registry import lookup


def _opt(
    default: Any,
    help: str,
    choices: Mapping[str, Any] | None = None,
    bounds: IntRange | None = None,
) -> Any:
    """A field with its ``--help`` text; ``choices``: the registry its value names (``--help``
    lists each entry with its one-line description); ``bounds``: an integer's allowed values
    (each of several), checked by the parser, :meth:`TrainConfig.check_settings` and the
    constructor."""
    return field(default=default, metadata={"help": help, "choices": choices, "range": bounds})


def flag(name: str) -> str:
    """A field's command-line flag: ``--latent-dim`` for ``latent_dim``."""
    return "--" + name.replace("_", "-")


# Settings renamed since a run could record them: old name → new name (same meaning).
RENAMED = {"no_jit": "no_compile"}  # the traced fast path became the compiled one

@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; recorded in the run folder's ``config.json``."""

    dataset: str = _opt(
        "fashion-mnist",
        "dataset: a registered name, or a folder of images, or a .npy/.npz/.pt file",
        choices.DATASETS,
    )
    pixels: str = _opt("dynamic", "pixel mode", choices.PIXEL_MODES)
    train_subset: int | None = _opt(None, "train on the first N training images only", bounds=SIZE)
    channels: int | None = _opt(
        None, "convert the images to 1 (grey) or 3 (RGB) channels", bounds=IntRange(1, 3, "RGB")
    )
    image_size: tuple[int, ...] | None = _opt(
        None, "resize the images to H [W]: scaled to cover, then centre-cropped", bounds=SIZE
    )
    allow_large_images: bool = _opt(
        False, "decode image files of more than 8192×8192 pixels (refused by default)"
    )
    test_fraction: float | None = _opt(
        None, "hold out this fraction of the training images as the test split"
    )
    test_split: str = _opt(
        "stratified", "how --test-fraction picks its test images", choices.TEST_SPLITS
    )
    split_seed: int = _opt(
        0,
        "seed of the --test-fraction split (not --seed's: runs that differ in --seed hold out "
        "the same images)",
        bounds=SEED,
    )
    stream: bool = _opt(
        False, "stream training batches through a DataLoader even when the data fits"
    )
    workers: int = _opt(2, "DataLoader worker processes when streaming (0: none)", bounds=COUNT)
    estimator: str = _opt(
        "elbo", "ELBO estimator; NAME:PARAMETER for miwae:M, ciwae:β, piwae:M", choices.ESTIMATORS
    )
    num_particles: int = _opt(
        1,
        "K, samples of z per datapoint (vectorized); per bound for miwae:M and piwae:M, which "
        "draw M·K",
        bounds=SIZE,
    )
    hutchinson_probes: int | None = _opt(
        None,
        "--estimator fisher: estimate the Laplacian Δ_x log p(x|z) with N Rademacher probes "
        "(Hutchinson) instead of exactly by autograd",
        bounds=SIZE,
    )
    likelihood: str = _opt("bernoulli", "likelihood p(x|z)", choices.LIKELIHOODS)
    guide: str = _opt("normal", "guide family q(z|x)", choices.GUIDES)
    prior: str = _opt("normal", "prior p(z)", choices.PRIORS)
    net: str = _opt("mlp", "encoder/decoder networks (conv: images of at least 4×4)", choices.NETS)
    beta: float = _opt(1.0, "β: weight of the KL / latent site (β-VAE); 0 drops it")
    kl_warmup: int = _opt(
        0, "anneal β linearly from 0 over this many steps (0: constant β)", bounds=COUNT
    )
    conditional: bool = _opt(False, "conditional VAE: p(x|z,y), q(z|x,y) with the label y")
    condition_on: str | None = _opt(
        None,
        "structured output prediction: observe these pixels and predict the rest, "
        "p(x_miss|z, x_obs): quadrants:N (N = 1, 2, 3) or mask:FILE.npy (True = observed)",
    )
    conditional_model: str = _opt(
        "cvae",
        "with --conditional or --condition-on: how the conditional model is built",
        choices.CONDITIONAL_MODELS,
    )
    baseline_input: str | None = _opt(
        None,
        "a trained --conditional-model baseline run (same data and mask): its prediction of "
        "x_miss joins the context c (Sohn et al.'s baseline as an input)",
    )
    autoencoder: bool = _opt(False, "deterministic autoencoder baseline: z = encoder mean, no KL")
    latent_dim: int | tuple[int, ...] = _opt(
        50,
        "latent size d; several values, bottom first, stack stochastic layers (100 50)",
        bounds=SIZE,
    )
    hidden: tuple[int, ...] = _opt(
        (400, 400), "hidden layer sizes of encoder and decoder", bounds=SIZE
    )
    categories: int = _opt(
        10, "C, categories per group of a categorical code (--guide categorical)",
        bounds=IntRange(2),
    )
    temperature: float = _opt(
        TEMPERATURE, "τ₀, the relaxation's starting temperature (gumbel-softmax, straight-through)"
    )
    temperature_min: float = _opt(
        TEMPERATURE_MIN, "τ_min: τ_t = max(τ_min, τ₀ exp(−r N ⌊t/N⌋)) at global step t"
    )
    temperature_rate: float = _opt(TEMPERATURE_RATE, "r, the temperature's annealing rate per step")
    temperature_interval: int = _opt(
        TEMPERATURE_INTERVAL, "N: the temperature is updated every N steps", bounds=SIZE
    )
    upper_hidden: tuple[int, ...] = _opt(
        (),
        "hidden sizes of the networks between stochastic layers (default: the --hidden sizes)",
        bounds=SIZE,
    )
    activation: str = _opt("relu", "activation between layers", choices.ACTIVATIONS)
    epochs: int = _opt(10, "number of epochs (with --resume: the total to reach)", bounds=SIZE)
    batch_size: int = _opt(128, "mini-batch size", bounds=SIZE)
    lr: float = _opt(1e-3, "Adam learning rate (the schedule's starting value)")
    lr_schedule: str = _opt("constant", "learning-rate schedule lr·f", choices.LR_SCHEDULES)
    adam_betas: tuple[float, ...] = _opt((0.9, 0.999), "Adam's β₁ β₂")
    adam_eps: float = _opt(1e-8, "Adam's ε, added to √v̂")
    divergence_factor: float = _opt(
        DIVERGENCE_FACTOR,
        "stop when a step's loss per datapoint exceeds the median of the last 100 steps' by "
        "this factor × (max(|median|, median deviation) + 1) nats: a run that has blown up "
        "without NaN; 0 turns it off",
    )
    seed: int = _opt(0, "random seed", bounds=SEED)
    device: str = _opt(
        "auto", "cpu, cuda, cuda:N (the N-th GPU) or auto (cuda when a GPU is visible)"
    )
    no_compile: bool = _opt(
        False,
        "run Pyro's handlers eagerly at every step instead of the compiled step (loss and "
        "gradient recorded once per batch shape and compiled with torch.compile; for a model "
        "whose control flow depends on the data)",
    )
    semi_supervised: bool = _opt(
        False,
        "M2 (Kingma et al. 2014): p(y) p(z) p(x|y,z), q(y|x) q(z|x,y); --labels N images keep "
        "their labels, y is summed out for the rest",
    )
    labels: int | None = _opt(
        None, "with --semi-supervised: labelled training images, balanced over classes", bounds=SIZE
    )
    alpha: float | None = _opt(
        None,
        "with --semi-supervised: weight α of E_labelled[−log q(y|x)] (default: the paper's 0.1·N)",
    )

    def __post_init__(self) -> None:
        # the checks' imports load torch: here, so that reading the fields (the CLI's parser,
        # ``--help``) does not
        from pyrovae.core.runtime import parse_device
        from pyrovae.data.base import PIXEL_MODES
        from pyrovae.data.inputs import resolve_dataset
        from pyrovae.data.sources import ImageOptions
        from pyrovae.data.splits import TEST_SPLITS
        from pyrovae.guides.families import GUIDES
        from pyrovae.inference.estimators import estimator_entry, make_estimator
        from pyrovae.inference.schedules import LR_SCHEDULES
        from pyrovae.models.likelihoods import get_likelihood
        from pyrovae.models.prior import PRIORS
        from pyrovae.nets import ACTIVATIONS, NETS
        from pyrovae.runs.combinations import (
            check_code,
            check_condition,
            check_objective,
            check_semi_supervised,
        )
        from pyrovae.runs.conditional import CONDITIONAL_MODELS

        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        object.__setattr__(self, "dataset", resolve_dataset(self.dataset))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))
        object.__setattr__(self, "upper_hidden", tuple(self.upper_hidden))
        for f in dataclasses.fields(self):  # every integer's range, as the CLI checks it
            if f.metadata["range"] is not None:
                f.metadata["range"].check(flag(f.name), getattr(self, f.name))
        ImageOptions.of(self.channels, self.image_size, self.allow_large_images)
        if self.test_fraction is not None and not 0 < self.test_fraction < 1:
            raise PyroVAEError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        lookup(TEST_SPLITS, self.test_split, "test split")
        if self.test_fraction is None and (self.test_split != "stratified" or self.split_seed):
            raise PyroVAEError("--test-split and --split-seed need --test-fraction")
        dims = (self.latent_dim,) if isinstance(self.latent_dim, int) else tuple(self.latent_dim)
        if not dims:
            raise PyroVAEError("--latent-dim needs one size per stochastic layer, got none")
        object.__setattr__(self, "latent_dim", dims[0] if len(dims) == 1 else dims)
        lookup(PIXEL_MODES, self.pixels, "pixel mode")
        estimator_entry(self.estimator)
        if self.autoencoder:  # composed, not a new model: a point-mass guide and no KL
            if self.guide not in ("normal", "delta") or self.beta not in (0.0, 1.0):
                raise PyroVAEError("--autoencoder sets --guide delta --beta 0; drop those flags")
            object.__setattr__(self, "guide", "delta")
            object.__setattr__(self, "beta", 0.0)
        lookup(GUIDES, self.guide, "guide")
        lookup(PRIORS, self.prior, "prior")
        lookup(NETS, self.net, "network")
        lookup(CONDITIONAL_MODELS, self.conditional_model, "conditional model")
        if self.guide == "delta" and self.estimator == "analytic-kl" and self.beta != 0:
            raise PyroVAEError(
                "--estimator analytic-kl with --guide delta bounds nothing: a point mass has no "
                "KL to the prior (it is infinite); use --autoencoder (β = 0) or another guide"
            )
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
        check_code(self, dims)
        make_estimator(self.estimator, self.num_particles)  # e.g. a baseline that needs K ≥ 2
        lookup(ACTIVATIONS, self.activation, "activation")
        get_likelihood(self.likelihood, self.pixels)
        if not self.hidden:
            raise PyroVAEError("--hidden needs one or more sizes, got none")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PyroVAEError(f"--lr must be a positive number, got {self.lr}")
        lookup(LR_SCHEDULES, self.lr_schedule, "learning-rate schedule")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise PyroVAEError(f"--adam-betas needs two numbers in [0, 1), got {self.adam_betas}")
        if not (math.isfinite(self.adam_eps) and self.adam_eps > 0):
            raise PyroVAEError(f"--adam-eps must be a positive number, got {self.adam_eps}")
        if not (math.isfinite(self.divergence_factor) and self.divergence_factor >= 0):
            raise PyroVAEError(
                f"--divergence-factor must be a number ≥ 0, got {self.divergence_factor}"
            )
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise PyroVAEError(f"--beta must be a number ≥ 0, got {self.beta}")
        parse_device(self.device)
        check_semi_supervised(self, dims)
        check_condition(self, dims)
        check_objective(self, dims)

    def temperature_schedule(self) -> Callable[[int], float]:
        """The relaxation's temperature schedule, global step ↦ τ."""
        from pyrovae.inference.temperature import temperature_schedule

        return temperature_schedule(
            self.temperature, self.temperature_min, self.temperature_rate,
            self.temperature_interval,
        )

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
        for name in ("hidden", "upper_hidden", "adam_betas"):
            d[name] = list(d[name])
        if not isinstance(self.latent_dim, int):
            d["latent_dim"] = list(self.latent_dim)
        if self.image_size is not None:
            d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def check_settings(cls, d: Any) -> dict[str, Any]:
        """``d``, some of this class's fields as plain values (JSON's, TOML's), checked: unknown
        keys and values of the wrong type are one-line errors naming the field."""
        if not isinstance(d, dict):
            raise PyroVAEError(f"a config must be an object of settings, got {type(d).__name__}")
        d = {RENAMED.get(k, k): v for k, v in d.items()}  # a run recorded by an older version
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PyroVAEError(f"config has unknown keys: {', '.join(unknown)}{hint}")
        bounds = {f.name: f.metadata["range"] for f in dataclasses.fields(cls)}
        for name, value in d.items():
            if not _has_type(value, hints[name]):
                raise PyroVAEError(f"{name!r} must be {_describe(hints[name])}, got {value!r}")
            if bounds[name] is not None:
                bounds[name].check(repr(name), value)
        return dict(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from plain values, checked by :meth:`check_settings`."""
        return cls(**cls.check_settings(d))

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> TrainConfig:
        """A config as a run folder recorded it: a run recorded before ``test_split`` existed
        held out its ``--test-fraction`` by ``file-order``, and keeps doing so."""
        if isinstance(d, dict) and d.get("test_fraction") is not None:
            d = {"test_split": LEGACY_SPLIT, **d}
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (an int is a float; a list a tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_has_type(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, "null" if hint is type(None) else str(hint))


# Named protocols: TrainConfig fields a preset sets; flags on the command line override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Burda, Grosse & Salakhutdinov 2015, Table 1, one stochastic layer: MNIST binarized
    # stochastically, 784-200-200-50 tanh, Adam(0.9, 0.999, 1e-4), batch 20, 3^i passes at
    # 1e-3·10^(−i/7), i = 0…7 (3280 passes).
    "burda2015": {
        "dataset": "mnist",
        "pixels": "dynamic",
        "likelihood": "bernoulli",
        "guide": "normal",
        "prior": "normal",
        "net": "mlp",
        "hidden": (200, 200),
        "latent_dim": 50,
        "activation": "tanh",
        "batch_size": 20,
        "lr": 1e-3,
        "lr_schedule": "burda",
        "adam_betas": (0.9, 0.999),
        "adam_eps": 1e-4,
        "epochs": BURDA_EPOCHS,
    },
}
# Table 1's two stochastic layers: x → 200-200 → z1 (100) → 100-100 → z2 (50), the rest as above.
PRESETS["burda2015-two-layers"] = {
    **PRESETS["burda2015"],
    "latent_dim": (100, 50),
    "upper_hidden": (100, 100),
}


def preset_config(name: str, **changes: Any) -> TrainConfig:
    """The :data:`PRESETS` entry ``name`` as a config, with ``changes`` on top."""
    return TrainConfig(**{**lookup(PRESETS, name, "preset"), **changes})
