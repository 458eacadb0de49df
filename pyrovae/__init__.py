"""pyrovae: variational autoencoders on Pyro and PyTorch.

The model p(z) p_θ(x|z) and the amortized guide q_φ(z|x) are Pyro functions (PyroModules);
training is SVI with an ELBO estimator chosen by name.
"""

from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.core.runtime import resolve_device, seeded, set_seed
from pyrovae.data import ImageData, load_data
from pyrovae.guides import GUIDES, AmortizedGuide
from pyrovae.inference import ESTIMATORS, evaluate_elbo, fit, make_estimator, svi_step
from pyrovae.models import LIKELIHOODS, PRIORS, VAE
from pyrovae.runs import (
    LoadedRun,
    TrainConfig,
    build_model_and_guide,
    diagnose_run,
    evaluate_run,
    load_run,
    plot_runs,
    read_metrics,
    resume_run,
    sample_run,
    train_run,
)

__version__ = "0.1.0"

__all__ = [
    "ESTIMATORS",
    "GUIDES",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "AmortizedGuide",
    "ImageData",
    "LoadedRun",
    "PyroVAEError",
    "TrainConfig",
    "TrainingDiverged",
    "build_model_and_guide",
    "diagnose_run",
    "evaluate_elbo",
    "evaluate_run",
    "fit",
    "load_data",
    "load_run",
    "make_estimator",
    "plot_runs",
    "read_metrics",
    "resolve_device",
    "resume_run",
    "sample_run",
    "seeded",
    "set_seed",
    "svi_step",
    "train_run",
]
