"""Inference: ELBO estimators, SVI training, evaluation and gradient diagnostics."""

from pyrovae.inference.ais import ais_log_marginal, bdmc
from pyrovae.inference.diagnostics import gradient_statistics
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.gaps import (
    LocalSettings,
    elbo_per_datapoint,
    inference_gaps,
    local_guide,
    optimize_local,
)
from pyrovae.inference.marginal import (
    active_units,
    active_units_by_site,
    log_marginal_likelihood,
    posterior_means,
)
from pyrovae.inference.particles import draw_particles, log_mean_exp
from pyrovae.inference.train import fit, make_optimizer, svi_step

__all__ = [
    "ESTIMATORS",
    "LocalSettings",
    "active_units",
    "active_units_by_site",
    "ais_log_marginal",
    "bdmc",
    "draw_particles",
    "elbo_per_datapoint",
    "evaluate_elbo",
    "fit",
    "gradient_statistics",
    "inference_gaps",
    "local_guide",
    "log_marginal_likelihood",
    "log_mean_exp",
    "make_estimator",
    "make_optimizer",
    "optimize_local",
    "posterior_means",
    "svi_step",
]
