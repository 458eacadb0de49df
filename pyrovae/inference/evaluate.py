"""Test-set figures: the ELBO per datapoint and its two terms, from Pyro traces."""

from __future__ import annotations

import math

import torch
from pyro import poutine

from pyrovae.core.runtime import seeded

EVAL_SEED = 1234


def bits_per_dim(log_p: float, num_dims: int) -> float:
    """−log p(x) / (D ln 2): a per-datapoint log-likelihood (or bound) in nats as bits per
    value, D = C·H·W. A code length when p is a probability (binary or 8-bit pixels)."""
    return -log_p / (num_dims * math.log(2))


def predicted_pixels(model, num_pixels: int) -> int:
    """D of bits per dimension: the pixels the likelihood covers (x_miss's for structured
    output prediction), else all ``num_pixels``."""
    predicted = getattr(getattr(model, "condition", None), "predicted", None)
    return num_pixels if predicted is None else int(predicted.sum())


def batch_args(x: torch.Tensor, y: torch.Tensor | None, start: int, size: int) -> tuple:
    """Model/guide arguments for rows start…start+size: (x,) or (x, y)."""
    sl = slice(start, start + size)
    return (x[sl],) if y is None else (x[sl], y[sl])


def _site_log_probs(trace) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ observed log-densities, Σ latent log-densities), each of shape (B,)."""
    trace.compute_log_prob()
    observed = latent = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            observed = observed + site["log_prob"]
        else:
            latent = latent + site["log_prob"]
    return observed, latent


@torch.no_grad()
def evaluate_elbo(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
    seed: int = EVAL_SEED,
) -> dict[str, float]:
    """Single-sample ELBO on ``x`` with a fixed seed, per datapoint in nats.

    ``elbo`` = E_q[log p(x, z) − log q(z|x)], ``recon`` = E_q[log p(x|z)],
    ``kl`` = E_q[log q(z|x) − log p(z)] (Monte Carlo), so elbo = recon − kl; labels ``y`` go to
    a conditional model and guide (the conditional ELBO of log p(x|y)). Global RNG streams
    are restored afterwards, so evaluating does not change what training draws next.
    """
    was_training = model.training, guide.training
    model.eval()
    guide.eval()
    totals = torch.zeros(3, device=x.device)
    with seeded(seed):
        for start in range(0, x.shape[0], batch_size):
            args = batch_args(x, y, start, batch_size)
            guide_trace = poutine.trace(guide).get_trace(*args)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
            recon, log_prior = _site_log_probs(model_trace)
            _, log_q = _site_log_probs(guide_trace)
            kl = log_q - log_prior
            totals += torch.stack([(recon - kl).sum(), recon.sum(), kl.sum()])
    model.train(was_training[0])
    guide.train(was_training[1])
    elbo, recon, kl = (totals / x.shape[0]).tolist()
    return {"elbo": elbo, "recon": recon, "kl": kl}
