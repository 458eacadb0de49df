"""pyrovae: variational autoencoders on Pyro and PyTorch.

The model p(z) p_θ(x|z) and the amortized guide q_φ(z|x) are Pyro functions (PyroModules);
training is SVI with an ELBO estimator chosen by name.

The public names are imported on first use (PEP 562), so ``import pyrovae`` and the command
line's ``--help`` do not load torch: ``from pyrovae import TrainConfig`` works as before.
"""

from __future__ import annotations

from pyrovae.core.lazy import lazy_exports

__version__ = "0.1.0"

# public name ↦ the module that defines it
_SOURCES = {
    "PyroVAEError": "pyrovae.core.errors",
    "TrainingDiverged": "pyrovae.core.errors",
    "resolve_device": "pyrovae.core.runtime",
    "seeded": "pyrovae.core.runtime",
    "set_seed": "pyrovae.core.runtime",
    "ImageData": "pyrovae.data",
    "load_data": "pyrovae.data",
    "GUIDES": "pyrovae.guides",
    "AmortizedGuide": "pyrovae.guides",
    "ESTIMATORS": "pyrovae.inference",
    "evaluate_elbo": "pyrovae.inference",
    "fit": "pyrovae.inference",
    "make_estimator": "pyrovae.inference",
    "svi_step": "pyrovae.inference",
    "LIKELIHOODS": "pyrovae.models",
    "PRIORS": "pyrovae.models",
    "VAE": "pyrovae.models",
    "LoadedRun": "pyrovae.runs",
    "TrainConfig": "pyrovae.runs",
    "build_model_and_guide": "pyrovae.runs",
    "diagnose_run": "pyrovae.runs",
    "evaluate_run": "pyrovae.runs",
    "load_run": "pyrovae.runs",
    "plot_runs": "pyrovae.runs",
    "read_metrics": "pyrovae.runs",
    "resume_run": "pyrovae.runs",
    "sample_run": "pyrovae.runs",
    "train_run": "pyrovae.runs",
}

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


__getattr__, __dir__ = lazy_exports(globals(), _SOURCES)
