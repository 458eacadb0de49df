"""Inference: ELBO estimators, SVI training and evaluation."""

from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.train import fit, make_optimizer, svi_step

__all__ = ["ESTIMATORS", "evaluate_elbo", "fit", "make_estimator", "make_optimizer", "svi_step"]
