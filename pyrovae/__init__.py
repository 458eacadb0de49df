"""pyrovae: variational autoencoders on Pyro and PyTorch.

The model p(z) p_θ(x|z) and the amortized guide q_φ(z|x) are Pyro functions (PyroModules);
training is SVI with an ELBO estimator chosen by name.
"""

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data import ImageData, load_data
from pyrovae.errors import PyroVAEError, TrainingDiverged
from pyrovae.experiment import LoadedRun, evaluate_run, load_run, resume_run, train_run
from pyrovae.guides import GUIDES, AmortizedGuide
from pyrovae.inference import ESTIMATORS, evaluate_elbo, fit, make_estimator, svi_step
from pyrovae.models import LIKELIHOODS, PRIORS, VAE
from pyrovae.runtime import resolve_device, set_seed

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
    "evaluate_elbo",
    "evaluate_run",
    "load_run",
    "fit",
    "load_data",
    "make_estimator",
    "resolve_device",
    "resume_run",
    "set_seed",
    "svi_step",
    "train_run",
]
