"""Inference: ELBO estimators, SVI training, evaluation and gradient diagnostics."""

from pyrovae.inference.ais import ais_log_marginal, bdmc
from pyrovae.inference.diagnostics import gradient_statistics
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.evaluate import evaluate_elbo
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
    "active_units",
    "active_units_by_site",
    "ais_log_marginal",
    "bdmc",
    "draw_particles",
    "evaluate_elbo",
    "fit",
    "gradient_statistics",
    "log_marginal_likelihood",
    "log_mean_exp",
    "make_estimator",
    "make_optimizer",
    "posterior_means",
    "svi_step",
]
