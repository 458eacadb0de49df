"""ELBO estimators by name. Each keeps Pyro's contract: ``loss``, ``differentiable_loss``,
``loss_and_grads`` (so SVI-style steps, ``ELBOModule`` and plain torch loops all work).

- ``elbo`` (Trace_ELBO, L^A): (1/K) Σ_k [log p(x, z_k) − log q(z_k|x)], z_k = g_φ(ε_k, x).
- ``analytic-kl`` (TraceMeanField_ELBO, L^B): (1/K) Σ_k log p(x|z_k) − KL(q(z|x) ‖ p(z)).
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from pyrovae.errors import PyroVAEError
from pyrovae.registry import lookup

ESTIMATORS: dict[str, Callable[..., ELBO]] = {
    "elbo": Trace_ELBO,
    "analytic-kl": TraceMeanField_ELBO,
}


def make_estimator(name: str, num_particles: int = 1) -> ELBO:
    """Estimator ``name`` with K = ``num_particles`` samples per datapoint, vectorized for K > 1.

    The losses are summed over the data plate: divide by the batch size for per-datapoint nats.
    """
    factory = lookup(ESTIMATORS, name, "estimator")
    if num_particles < 1:
        raise PyroVAEError(f"--num-particles must be at least 1, got {num_particles}")
    return factory(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,  # the "data" plate; particles go in dim -2
    )
