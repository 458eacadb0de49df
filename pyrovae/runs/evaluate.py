"""``evaluate`` a run: test ELBO and its terms, importance-sampled log p(x), active units."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pyrovae.core.errors import PyroVAEError, check_at_least
from pyrovae.core.files import check_writable
from pyrovae.core.labels import labels_for
from pyrovae.guides.families import GUIDES
from pyrovae.inference.evaluate import bits_per_dim, evaluate_elbo
from pyrovae.inference.marginal import active_units_by_site, log_marginal_likelihood
from pyrovae.runs.folder import run_lock, write_evaluation
from pyrovae.runs.load import first_test_images, load_run


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a standard error from a single image is recorded as null."""
    return value if math.isfinite(value) else None


LOG_PX_SAMPLES = 100  # the paper protocol is 5000: ~10+ min for 10k images on a 2-core CPU


def evaluate_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    num_samples: int = LOG_PX_SAMPLES,
    test_subset: int | None = None,
    progress: bool = True,
    allow_other_data: bool = False,
) -> dict[str, Any]:
    """Test figures of a run's checkpoint, also added to the run's ``evaluation.json`` (which
    keeps one entry per epoch, K and number of test images).

    ``test_elbo`` / ``test_recon`` / ``test_kl``: single-sample ELBO and its terms;
    ``log_px``: log p(x) ≈ log (1/K) Σ_k p(x, z_k)/q(z_k|x), K = ``num_samples`` (0 skips it),
    with ``log_px_stderr`` (over images), ``log_px_mc_stderr`` (Monte Carlo) and ``ess``;
    ``test_elbo_bpd`` and ``log_px_bpd``: the same in bits per dimension, −log p / (D ln 2);
    ``active_units``: latent dimensions with Cov_x(E_q[z_j|x]) > 0.01, out of ``latent_dim``
    (with several stochastic layers, both are lists: one count and size per layer, bottom first).
    A point-mass guide (the autoencoder) has no density: ``point_mass`` is then true,
    ``test_kl`` holds −log p(z) at the code (Pyro's log q = 0), ``test_elbo`` is no bound, and
    no log p(x) is estimated (importance sampling needs q's density).
    ``test_subset=N`` uses the first N test images only (from one image: no stderr, no active
    units, recorded as null).
    """
    if num_samples < 0:
        raise PyroVAEError(f"--num-samples must be 0 (no log p(x)) or more, got {num_samples}")
    if test_subset is not None:
        check_at_least("--test-subset", test_subset, 1)
    path = Path(run_dir)
    with run_lock(path):  # checked writable before any work: the results are not lost
        check_writable(path)
        figures = _evaluate(
            path, device, data_dir, download, num_samples, test_subset, progress, allow_other_data
        )
        write_evaluation(path, figures)
    return figures


def _evaluate(path, device, data_dir, download, num_samples, test_subset, progress, allow_other):
    run = load_run(path, device, data_dir, download, allow_other)
    config, data, model, guide = run.config, run.data, run.model, run.guide
    x = first_test_images(data, test_subset, "--test-subset")
    y = labels_for(model, data.test_y[: x.shape[0]])
    test = evaluate_elbo(model, guide, x, y)
    figures: dict[str, Any] = {
        "epoch": run.epoch,
        "num_test": int(x.shape[0]),
        "num_samples": num_samples,
        "test_elbo": test["elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "test_elbo_bpd": bits_per_dim(test["elbo"], data.num_pixels),
    }
    point_mass = not GUIDES[config.guide].has_density
    if point_mass:  # Pyro's log q = 0 for a point mass: "KL" holds −log p(z) at the code
        figures["point_mass"] = True
    if num_samples > 0 and not point_mass:
        lml = log_marginal_likelihood(model, guide, x, num_samples, y, progress=progress)
        figures.update(
            log_px=lml["log_px"],
            log_px_bpd=lml["bits_per_dim"],
            log_px_stderr=_finite_or_none(lml["stderr"]),
            log_px_mc_stderr=lml["mc_stderr"],
            ess=lml["ess"],
        )
    active = None  # a covariance over one image is undefined
    if x.shape[0] > 1:
        active = list(active_units_by_site(guide, x, y).values())
        active = active[0] if len(active) == 1 else active
    figures["active_units"] = active
    figures["latent_dim"] = config.to_dict()["latent_dim"]
    return figures
