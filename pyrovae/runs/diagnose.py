"""``diagnose`` a run: gradient variance and SNR of estimators × K at its checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyrovae.core.errors import PyroVAEError, check_at_least
from pyrovae.core.labels import labels_for
from pyrovae.core.runtime import seeded
from pyrovae.inference.diagnostics import gradient_statistics
from pyrovae.inference.estimators import make_estimator
from pyrovae.runs.folder import write_diagnostics
from pyrovae.runs.load import first_test_images, load_run

DIAGNOSTIC_FIGURES = ("snr", "variance_mean", "mean_norm")


def diagnose_run(
    run_dir: str | Path,
    estimators: Sequence[str],
    num_particles: Sequence[int],
    samples: int = 100,
    batch_size: int = 64,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> list[dict[str, Any]]:
    """Gradient variance and SNR of each estimator × K at the run's checkpoint.

    The batch is the first ``batch_size`` test images; each row draws ``samples`` gradients
    under seed 0 (:func:`~pyrovae.inference.diagnostics.gradient_statistics`). Rows hold
    ``estimator``, ``num_particles`` and, per group (``encoder`` φ, ``decoder`` θ; with several
    stochastic layers also ``encoder/z1``, ``decoder/z1``, … per layer), ``snr``
    (mean over components of |E g| / std g), ``variance_mean`` and ``mean_norm`` ‖E g‖.
    Also written to the run's ``diagnostics.json``.
    """
    if not estimators or not num_particles:
        raise PyroVAEError("diagnose needs at least one estimator and one --num-particles")
    check_at_least("--samples", samples, 2)
    check_at_least("--batch-size", batch_size, 1)
    # every (name, K) is checked before the (slower) checkpoint and data are loaded
    grid = [(name, k, make_estimator(name, k)) for name in estimators for k in num_particles]
    run = load_run(run_dir, device, data_dir, download)
    path, data, model, guide = run.path, run.data, run.model, run.guide
    xb = first_test_images(data, batch_size, "--batch-size")
    yb = data.test_y[: xb.shape[0]]
    rows = []
    for name, k, estimator in grid:
        with seeded(0):
            stats = gradient_statistics(
                model, guide, xb, estimator, num_samples=samples, y=labels_for(model, yb)
            )
        row: dict[str, Any] = {
            "estimator": name,
            "num_particles": k,
            "samples": samples,
            "batch_size": int(xb.shape[0]),
        }
        for group, figures in stats.items():
            row[group] = {key: figures[key] for key in DIAGNOSTIC_FIGURES}
        rows.append(row)
    write_diagnostics(path, rows)
    return rows
