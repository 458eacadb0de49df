"""Exact enumeration of a discrete code: E_q[f(z)] = Σ_z q(z|x) f(z), no sampling.

``enumerate`` is Pyro's ``TraceEnum_ELBO`` with every guide site enumerated in parallel (the
estimator configures the guide itself): for one latent site z with S joint states,

    L = Σ_z q_φ(z|x) [log p_θ(x|z) + log p(z) − log q_φ(z|x)],

the ELBO itself, with its exact gradient (no variance). The cost is S decoder passes per
datapoint; codes of more than :data:`~pyrovae.guides.discrete.ENUMERATION_LIMIT` states are
refused.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer import ELBO, TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.kinds import DISCRETE, refusal, site_kind


class Enumerate(ELBO):
    """``enumerate``: Pyro's ELBO contract over ``TraceEnum_ELBO`` with the guide's latent
    sites marked ``infer={"enumerate": "parallel"}``; a continuous site is refused in one line
    (``TraceEnum_ELBO`` would sample it and differentiate it pathwise, silently)."""

    description = "discrete codes: exact sum over every state of the code; no variance, S× cost"
    name = "enumerate"
    latent_kinds = frozenset({DISCRETE})
    enumerates = True  # its cost is the code's number of states: checked against the limit
    # TraceEnum_ELBO's expectation masks q > 0 (masked_select, a shape that depends on values):
    # no recorded graph can hold that, so the compiled path runs it eagerly, saying so once
    compilable = False

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **kwargs) -> None:
        if num_particles != 1:
            raise PyroVAEError(
                "enumerate sums over every state exactly and draws nothing: use --num-particles 1"
            )
        kwargs.pop("vectorize_particles", None)
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting, **kwargs)
        self._inner = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)

    def _enumerated(self, guide):
        def config(msg) -> dict:
            if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
                return {}
            if site_kind(msg["fn"]) != DISCRETE:
                raise PyroVAEError(refusal(self.name, site_kind(msg["fn"]), msg["name"]))
            return {"enumerate": "parallel"}

        return poutine.infer_config(guide, config)

    def _get_trace(self, model, guide, args, kwargs):
        """(model trace, guide trace) with the guide's sites enumerated, as Pyro's ELBOs give."""
        return self._inner._get_trace(model, self._enumerated(guide), args, kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self._inner.loss(model, self._enumerated(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        if not torch.is_grad_enabled():  # TraceEnum_ELBO refuses a loss without a graph
            with torch.enable_grad():
                return self.differentiable_loss(model, guide, *args, **kwargs).detach()
        return self._inner.differentiable_loss(model, self._enumerated(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
