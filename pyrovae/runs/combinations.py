"""Which settings of a training config go together: a discrete code's prior and estimator,
what the semi-supervised M2 and the Fisher objective can be combined with. One-line errors
otherwise.

Each check takes the :class:`~pyrovae.runs.config.TrainConfig` being built (typed ``Any``:
that module imports this one)."""

from __future__ import annotations

import math
from typing import Any

from pyrovae.core.errors import PyroVAEError
from pyrovae.guides.discrete import check_enumerable
from pyrovae.guides.families import GUIDES
from pyrovae.inference.estimators import ESTIMATORS, estimator_entry
from pyrovae.inference.kinds import applicable, estimator_kinds
from pyrovae.inference.temperature import check_schedule
from pyrovae.models.condition import parse_mask
from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.prior import PRIORS


def check_semi_supervised(config: Any, dims: tuple[int, ...]) -> None:
    """--semi-supervised needs --labels; --labels and --alpha need it; what M2 cannot be."""
    if not config.semi_supervised:
        for name in ("labels", "alpha"):
            if getattr(config, name) is not None:
                raise PyroVAEError(f"--{name} needs --semi-supervised")
        return
    if config.labels is None:
        raise PyroVAEError("--semi-supervised needs --labels N, the labelled images")
    if config.alpha is not None and not (math.isfinite(config.alpha) and config.alpha >= 0):
        raise PyroVAEError(f"--alpha must be a number ≥ 0, got {config.alpha}")
    refused = {
        "--conditional (M2 has y as a latent site already)": config.conditional,
        "--autoencoder or --guide delta (q(z|x,y) needs a density)": config.guide == "delta",
        "several --latent-dim sizes (M2 has one stochastic layer)": len(dims) > 1,
        f"--estimator {config.estimator} (M2 sums y out with its own objective)": (
            config.estimator != "elbo"
        ),
        f"--prior {config.prior} (M2's p(z) is the standard Normal)": config.prior != "normal",
        f"--net {config.net} (M2's networks are MLPs)": config.net != "mlp",
        "--beta or --kl-warmup (M2's objective is unweighted)": (
            config.beta != 1.0 or config.kl_warmup > 0
        ),
    }
    for what, bad in refused.items():
        if bad:
            raise PyroVAEError(f"--semi-supervised does not work with {what}")


def check_condition(config: Any, dims: tuple[int, ...]) -> None:
    """What a conditional run (a label's or observed pixels') needs and refuses: one condition
    at a time, ``--prior conditional`` only with one, a GSNN with the conditional prior as its
    one normal layer, ``--baseline-input`` for a latent model of observed pixels."""
    conditioned = config.conditional or config.condition_on is not None
    if config.condition_on is not None:
        parse_mask(config.condition_on)
    refused = {
        "--conditional and --condition-on together (one condition at a time)": (
            config.conditional and config.condition_on is not None
        ),
        "--condition-on with --semi-supervised (M2 conditions on labels)": (
            config.semi_supervised and config.condition_on is not None
        ),
        "--prior conditional without a condition (--conditional or --condition-on)": (
            getattr(PRIORS[config.prior], "conditional", False) and not conditioned
        ),
        f"--conditional-model {config.conditional_model} without a condition "
        "(--conditional or --condition-on)": config.conditional_model != "cvae" and not conditioned,
        "--prior vamp with --condition-on (its components are q(z|u) without a context)": (
            config.prior == "vamp" and config.condition_on is not None
        ),
        "--baseline-input without --condition-on": (
            config.baseline_input is not None and config.condition_on is None
        ),
        "--baseline-input with --conditional-model baseline (the baseline is what it feeds)": (
            config.baseline_input is not None and config.conditional_model == "baseline"
        ),
        "--autoencoder with --conditional-model baseline (it has no latent)": (
            config.autoencoder and config.conditional_model == "baseline"
        ),
    }
    if config.conditional_model == "gsnn":
        refused.update(
            {
                f"--conditional-model gsnn with --prior {config.prior} (q = p(z|c) needs "
                "--prior conditional)": config.prior != "conditional",
                f"--conditional-model gsnn with --guide {config.guide} (q is the prior's normal)": (
                    config.guide != "normal"
                ),
                "--conditional-model gsnn with several --latent-dim sizes (one layer)": len(dims)
                > 1,
            }
        )
    for what, bad in refused.items():
        if bad:
            raise PyroVAEError(f"cannot run {what}")


def check_code(config: Any, dims: tuple[int, ...]) -> None:
    """Guide, prior and estimator fit together: the prior is over the guide's kind of code,
    the estimator applies to it, and an enumerated code has few enough states."""
    family, prior = GUIDES[config.guide], PRIORS[config.prior]
    estimator = estimator_entry(config.estimator)
    if family.code != getattr(prior, "code", "continuous"):
        fits = [n for n, p in PRIORS.items() if getattr(p, "code", "continuous") == family.code]
        raise PyroVAEError(
            f"--prior {config.prior} does not pair with --guide {config.guide}: a "
            f"{family.code} code needs --prior {' or '.join(fits)}"
        )
    kind = family.latent_kind
    if kind not in estimator_kinds(estimator):
        what = (
            "pathwise, and a discrete code has no path to φ"
            if kind == "discrete"
            else ("for discrete codes (--guide categorical or bernoulli)")
        )
        raise PyroVAEError(
            f"--estimator {config.estimator} does not apply to --guide {config.guide} "
            f"({kind}): it is {what}; use one of: {', '.join(applicable(ESTIMATORS, kind))}"
        )
    if kind == "discrete" and len(dims) > 1:
        raise PyroVAEError(f"--guide {config.guide} is one discrete layer; give one --latent-dim")
    if getattr(estimator, "enumerates", False):
        check_enumerable(family, dims[0], config.categories)
    check_schedule(
        config.temperature,
        config.temperature_min,
        config.temperature_rate,
        config.temperature_interval,
    )


def check_objective(config: Any, dims: tuple[int, ...]) -> None:
    """The Fisher objective needs a density in x twice differentiable in x (a smooth likelihood
    on grey pixels), a guide with a density, and no KL weight to scale; Hutchinson's probes are
    its alone."""
    fisher = getattr(estimator_entry(config.estimator), "name", None) == "fisher"
    if not fisher:
        if config.hutchinson_probes is not None:
            raise PyroVAEError("--hutchinson-probes is for --estimator fisher")
        return
    smooth = [n for n, c in LIKELIHOODS.items() if getattr(c, "smooth", False)]
    refused = {
        f"--likelihood {config.likelihood} (Hyvärinen's score needs log p(x|z) twice "
        f"differentiable in x: use {' or '.join(smooth)})": not getattr(
            LIKELIHOODS.get(config.likelihood), "smooth", False
        ),
        f"--pixels {config.pixels} (the Fisher divergence is between densities of continuous "
        "x: use --pixels grey)": config.pixels != "grey",
        "--autoencoder or --guide delta (∇_z log q(z|x) needs a density)": config.guide == "delta",
        "--beta or --kl-warmup (the objective has no KL term to weight)": (
            config.beta != 1 or config.kl_warmup != 0
        ),
        "--condition-on (the observed pixels are not scored)": config.condition_on is not None,
        "--semi-supervised (M2 has its own objective)": config.semi_supervised,
    }
    for what, bad in refused.items():
        if bad:
            raise PyroVAEError(f"--estimator fisher cannot run with {what}")
