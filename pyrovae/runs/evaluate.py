"""``evaluate`` a run: test ELBO and its terms, importance-sampled log p(x), active units."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable
from pyrovae.core.labels import labels_for
from pyrovae.core.memory import format_bytes
from pyrovae.core.ranges import SIZE, IntRange
from pyrovae.guides.families import GUIDES
from pyrovae.guides.guide import PriorEncoder
from pyrovae.inference.ais import Settings, ais_cost, ais_log_marginal, bdmc, check_memory
from pyrovae.inference.evaluate import bits_per_dim, evaluate_elbo, predicted_pixels
from pyrovae.inference.marginal import (
    Cost,
    active_units_by_site,
    estimate_cost,
    log_marginal_likelihood,
)
from pyrovae.inference.semi_supervised import classification_accuracy
from pyrovae.runs.folder import read_evaluations, read_metrics, run_lock, write_evaluation
from pyrovae.runs.load import first_test_images, load_run


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a standard error from a single image is recorded as null."""
    return value if math.isfinite(value) else None


LOG_PX_SAMPLES = 100  # the paper protocol is 5000: ~10+ min for 10k images on a 2-core CPU
"""Importance samples K of ``evaluate``'s log p(x) by default (the papers' protocol is 5000)."""
NUM_SAMPLES = IntRange(0, None)  # K: 0 skips log p(x); no upper end, MAX_DRAWS bounds the work
# The most draws of z (test images × K) taken on unasked: 20× the paper protocol's 10⁴ × 5000,
# some hours on a 2-core CPU. More needs --max-draws: a mistyped K is told before it runs for years.
MAX_DRAWS = 10**9
MAX_DRAWS_RANGE = IntRange(1, None)
AIS_STEPS, AIS_CHAINS, AIS_LEAPFROG = 100, 16, 10  # defaults: T, C, L (Wu et al. use 10⁴, 16, 10)


def evaluate_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    num_samples: int = LOG_PX_SAMPLES,
    test_subset: int | None = None,
    progress: bool = True,
    allow_other_data: bool = False,
    max_draws: int = MAX_DRAWS,
    report: Callable[[dict[str, Any]], None] | None = None,
    note: Callable[[str], None] | None = None,
    method: str = "is",
    ais_steps: int = AIS_STEPS,
    chains: int = AIS_CHAINS,
    leapfrog: int = AIS_LEAPFROG,
    ais_from: str = "guide",
) -> dict[str, Any]:
    """Test figures of a run's checkpoint, also added to the run's ``evaluation.json`` (which
    keeps one entry per epoch, K and number of test images).

    ``test_elbo`` / ``test_recon`` / ``test_kl``: single-sample ELBO and its terms;
    ``log_px``: log p(x) ≈ log (1/K) Σ_k p(x, z_k)/q(z_k|x), K = ``num_samples`` (0 skips it),
    with ``log_px_stderr`` (over images), ``log_px_mc_stderr`` (Monte Carlo) and ``ess``;
    ``test_elbo_bpd`` and ``log_px_bpd``: the same in bits per dimension, −log p / (D ln 2);
    ``test_accuracy`` (M2 runs): the share of test images whose most probable class under
    q(y|x) is their label; M2's ELBO and log p(x) are those of the image alone, y summed over;
    ``active_units``: latent dimensions with Cov_x(E_q[z_j|x]) > 0.01, out of ``latent_dim``
    (with several stochastic layers, both are lists: one count and size per layer, bottom first;
    for a discrete code ``latent_dim`` is its number of values, G·C for a categorical one).
    A point-mass guide (the autoencoder) has no density: ``point_mass`` is then true,
    ``test_kl`` holds −log p(z) at the code (Pyro's log q = 0), ``test_elbo`` is no bound, and
    no log p(x) is estimated (importance sampling needs q's density).
    ``test_subset=N`` uses the first N test images only (from one image: no stderr, no active
    units, recorded as null).

    ``method`` says how log p(x) is estimated (:data:`METHODS`): ``"is"`` as above;
    ``"ais"``, annealed importance sampling from the guide (or ``ais_from="prior"``) with T =
    ``ais_steps``, C = ``chains`` and L = ``leapfrog`` (``log_px`` and its errors then come
    from AIS, with ``ais_acceptance``; :func:`~pyrovae.inference.ais.ais_log_marginal`);
    ``"bdmc"``, bidirectional Monte Carlo on as many images simulated from the model
    (``bdmc_lower``, ``bdmc_upper``, ``bdmc_gap`` and its standard error;
    :func:`~pyrovae.inference.ais.bdmc`). AIS needs continuous latents, and a density to start
    from: the point-mass guide anneals from the prior only.

    Before log p(x) its cost is estimated (:func:`~pyrovae.inference.marginal.estimate_cost`,
    :func:`~pyrovae.inference.ais.ais_cost`) and told to ``note``; more than ``max_draws``
    draws of z (test images × K) are refused in one line that quotes the estimate, and so is an
    AIS run whose chains need more memory than the device has free. ``report`` gets the
    figures before they are written, so that a write that fails (a full disk) loses nothing it
    has shown.
    """
    NUM_SAMPLES.check("--num-samples", num_samples)
    SIZE.check("--test-subset", test_subset)
    MAX_DRAWS_RANGE.check("--max-draws", max_draws)
    if method not in METHODS:
        raise PyroVAEError(f"unknown --method {method!r}: one of {', '.join(METHODS)}")
    ais = Settings(ais_steps, chains, leapfrog, ais_from)
    ais.check()
    path = Path(run_dir)
    with run_lock(path):  # checked writable before any work: the results are not lost
        check_writable(path)
        run = load_run(path, device, data_dir, download, allow_other_data)
        x = first_test_images(run.data, test_subset, "--test-subset")
        y = labels_for(run.model, run.data.test_y[: x.shape[0]])
        if method == "is":
            log_px = num_samples > 0 and GUIDES[run.config.guide].has_density
            if log_px:  # told, or refused, before the long part
                cost = estimate_cost(run.model, run.guide, x, num_samples, y)
                told = _cost_in_words(cost, num_samples, x.shape[0], max_draws)
                if note is not None:
                    note(told)
            figures = _figures(run, x, y, num_samples, log_px, progress)
        else:
            _check_annealable(run.config, ais)
            cost = ais_cost(run.model, run.guide, x, y, **ais.options(), directions=METHODS[method])
            what = f"{method.upper()} with T={ais_steps}, C={chains}, L={leapfrog}"
            check_memory(cost, x.device, what)
            if note is not None:
                note(
                    f"{what} on {x.shape[0]} images: about {_duration(cost.seconds)} here "
                    f"(one gradient evaluation timed), {format_bytes(cost.bytes)} at a time"
                )
            figures = _figures(run, x, y, 0, False, progress)
            figures.update(_ANNEALED[method](run, x, y, ais, progress))
        figures["method"] = method
        if report is not None:
            report(figures)
        write_evaluation(path, figures)
    return figures


def evaluation_at(
    run_dir: str | Path,
    num_samples: int,
    test_subset: int | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> dict[str, Any]:
    """The importance-sampling evaluation of the run's last trained epoch with K = ``num_samples``
    on ``test_subset`` test images (None: whatever number was recorded), read from its
    ``evaluation.json`` when recorded there, else made (and recorded) by :func:`evaluate_run`.
    What the benchmarks use to resume a table without evaluating a run twice."""
    path = Path(run_dir)
    epoch = read_metrics(path)[-1]["epoch"]
    found = [
        e
        for e in read_evaluations(path)
        if e.get("method", "is") == "is"
        and e["epoch"] == epoch
        and e["num_samples"] == num_samples
        and (test_subset is None or e["num_test"] == test_subset)
    ]
    if found:
        return found[-1]
    return evaluate_run(
        path,
        device,
        data_dir,
        download,
        num_samples=num_samples,
        test_subset=test_subset,
        progress=False,
    )


def measured(model, guide) -> dict[str, str]:
    """What the figures are of, by the model's condition and latent layers: ``log_px_of``
    (log p(x), log p(x|y) or log p(x_miss|x_obs)) and ``kl_of`` (KL(q(z|x) ‖ p(z)), with q's
    and p's conditions, over all layers: KL(q(z1,z2|x) ‖ p(z1,z2)) for two)."""
    condition = getattr(model, "condition", None)
    given = getattr(condition, "given", None)  # "y", "x_obs" or None
    target = getattr(condition, "target", "x")
    prior = getattr(model, "prior", None)
    z = ",".join(getattr(guide, "sites", ())) or "z"  # "z", or "z1,z2" bottom first
    p = f"p({z}|{given})" if getattr(prior, "conditional", False) else f"p({z})"
    if isinstance(getattr(guide, "encoder", None), PriorEncoder):  # the GSNN: q = p(z|c)
        q = p
    else:
        q = f"q({z}|x,y)" if given == "y" else f"q({z}|x)"
    return {
        "log_px_of": f"log p({target}|{given})" if given else "log p(x)",
        "kl_of": f"KL({q} || {p})",
    }


def _figures(run, x, y, num_samples: int, log_px: bool, progress: bool) -> dict[str, Any]:
    config, model, guide = run.config, run.model, run.guide
    test = evaluate_elbo(model, guide, x, y)
    figures: dict[str, Any] = {
        "epoch": run.epoch,
        "num_test": int(x.shape[0]),
        "num_samples": num_samples,
        "test_elbo": test["elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "test_elbo_bpd": bits_per_dim(test["elbo"], predicted_pixels(model, run.data.num_pixels)),
        "has_latents": bool(getattr(guide, "sites", ())),
        **measured(model, guide),
    }
    if hasattr(guide, "classify"):  # M2: its classifier q(y|x) on the same test images
        figures["test_accuracy"] = classification_accuracy(guide, x, run.data.test_y[: x.shape[0]])
    if not GUIDES[config.guide].has_density:  # Pyro's log q = 0: "KL" is −log p(z) at the code
        figures["point_mass"] = True
    if log_px:
        lml = log_marginal_likelihood(model, guide, x, num_samples, y, progress=progress)
        figures.update(
            log_px=lml["log_px"],
            log_px_bpd=bits_per_dim(lml["log_px"], predicted_pixels(model, run.data.num_pixels)),
            log_px_stderr=_finite_or_none(lml["stderr"]),
            log_px_mc_stderr=lml["mc_stderr"],
            ess=lml["ess"],
        )
    active = None  # a covariance over one image is undefined, and a baseline has no code
    if x.shape[0] > 1 and figures["has_latents"]:
        by_site = active_units_by_site(guide, x, y)
        active = [by_site[site] for site in guide.sites]  # z's sites, not M2's class y
        active = active[0] if len(active) == 1 else active
    figures["active_units"] = active
    dims = config.to_dict()["latent_dim"]
    # a categorical code's means are its G·C one-hot probabilities: count out of those
    code_dim = getattr(getattr(guide, "family", None), "code_dim", None)
    figures["latent_dim"] = code_dim if isinstance(dims, int) and code_dim else dims
    return figures


# How log p(x) is estimated: the name and how many annealing directions it runs (0: none).
METHODS: dict[str, int] = {"is": 0, "ais": 1, "bdmc": 2}


def _check_annealable(config, ais: Settings) -> None:
    """One line where AIS cannot run: discrete latents, none at all, or nothing to start from."""
    if config.conditional_model == "baseline":
        raise PyroVAEError(
            "the baseline has no latent to anneal: its log p(x_miss|x_obs) is exact, "
            "use --method is"
        )
    family = GUIDES[config.guide]
    if config.semi_supervised or family.latent_kind != "continuous":
        what = "M2's class y" if config.semi_supervised else f"the {config.guide} code"
        raise PyroVAEError(
            f"AIS anneals continuous latents and {what} is discrete: use --method is"
        )
    if ais.start == "guide" and not family.has_density:
        raise PyroVAEError(
            f"the {config.guide} guide is a point mass with no density to anneal from: "
            "use --ais-from prior"
        )


def _ais_setting(ais: Settings) -> dict[str, Any]:
    """What keys an AIS or BDMC evaluation in ``evaluation.json`` (with epoch and images)."""
    return {
        "ais_steps": ais.steps,
        "chains": ais.chains,
        "leapfrog": ais.leapfrog,
        "ais_from": ais.start,
    }


def _annealed(run, x, y, ais: Settings, progress: bool) -> dict[str, Any]:
    result = ais_log_marginal(run.model, run.guide, x, y, **ais.options(), progress=progress)
    return {
        **_ais_setting(ais),
        "log_px": result["log_px"],
        "log_px_bpd": result["bits_per_dim"],
        "log_px_stderr": _finite_or_none(result["stderr"]),
        "log_px_mc_stderr": result["mc_stderr"],
        "ais_acceptance": result["acceptance"],
    }


def _bidirectional(run, x, y, ais: Settings, progress: bool) -> dict[str, Any]:
    result = bdmc(run.model, run.guide, x, y, **ais.options(), progress=progress)
    return {
        **_ais_setting(ais),
        "bdmc_lower": result["lower"],
        "bdmc_upper": result["upper"],
        "bdmc_gap": result["gap"],
        "bdmc_gap_stderr": _finite_or_none(result["gap_stderr"]),
        "ais_acceptance": result["acceptance_forward"],
        "ais_acceptance_reverse": result["acceptance_reverse"],
    }


_ANNEALED = {"ais": _annealed, "bdmc": _bidirectional}


def _cost_in_words(cost: Cost, num_samples: int, num_test: int, max_draws: int) -> str:
    """The estimate in words, or a one-line refusal quoting it beyond ``max_draws``."""
    what = (
        f"log p(x) with K={num_samples} on {num_test} test images is {_count(cost.draws)} draws "
        f"of z: about {_duration(cost.seconds)} here (one chunk timed), "
        f"{format_bytes(cost.chunk_bytes)} of particles at a time"
    )
    if cost.draws > max_draws:
        raise PyroVAEError(
            f"{what}; that is more than --max-draws {_count(max_draws)} allows: ask for a smaller "
            f"--num-samples or --test-subset, or pass --max-draws {cost.draws} to run it"
        )
    return what


# (unit, seconds in it): a duration is shown in the largest unit it holds twice
DURATIONS = (("s", 1), ("min", 60), ("h", 3600), ("days", 86400), ("years", 365.25 * 86400))


def _duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps a number of at least 2: ``40 s``, ``3.5 h``,
    ``1.2e+13 years``."""
    unit, size = next(((u, s) for u, s in reversed(DURATIONS) if seconds >= 2 * s), DURATIONS[0])
    return f"{seconds / size:.2g} {unit}"


def _count(n: int) -> str:
    """``1,000,000,000``; past 10¹² ``1e+25`` (the digits would say no more)."""
    return f"{n:,}" if n < 10**12 else f"{n:.3g}"
