"""``diagnose`` a run: gradient variance and SNR of estimators × K at its checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable
from pyrovae.core.labels import labels_for
from pyrovae.core.ranges import SIZE, IntRange
from pyrovae.core.runtime import seeded
from pyrovae.data.batches import num_batches
from pyrovae.inference.diagnostics import default_groups, gradient_statistics
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.nvil import guide_baseline
from pyrovae.inference.temperature import Temperature
from pyrovae.runs.folder import run_lock, write_diagnostics
from pyrovae.runs.load import first_test_images, load_run

DIAGNOSTIC_FIGURES = ("snr", "variance_mean", "mean_norm")
SAMPLES = IntRange(2)  # gradients per row: a variance needs two


def diagnose_run(
    run_dir: str | Path,
    estimators: Sequence[str],
    num_particles: Sequence[int],
    samples: int = 100,
    batch_size: int = 64,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    allow_other_data: bool = False,
) -> list[dict[str, Any]]:
    """Gradient variance and SNR of each estimator × K at the run's checkpoint.

    The batch is the first ``batch_size`` test images; each row draws ``samples`` gradients
    under seed 0 (:func:`~pyrovae.inference.diagnostics.gradient_statistics`). Rows hold
    ``estimator``, ``num_particles`` and, per group (``encoder`` φ, ``decoder`` θ; with several
    stochastic layers also ``encoder/z1``, ``decoder/z1``, … per layer; ``baseline``, NVIL's
    b_ψ, on ``nvil``'s rows of a run trained with it), ``snr``
    (mean over components of abs(E g) / std g), ``variance_mean`` and ``mean_norm`` ‖E g‖.
    Also added to the run's ``diagnostics.json`` with the checkpoint's ``epoch`` (rows of the
    same setting replace earlier ones). ``progress``: a bar over all gradients drawn.

    ``nvil`` needs the baseline network its run was trained with (its gradient is measured with
    the learned b_ψ and running average of the checkpoint); on a run trained with another
    estimator it is a one-line error: a fresh, untrained baseline would report a variance that
    no training run has. The relaxed estimators (``gumbel-softmax``, ``straight-through``) are
    measured at the temperature of the checkpoint's last training step, recorded as
    ``temperature``.
    """
    if not estimators or not num_particles:
        raise PyroVAEError("diagnose needs at least one estimator and one --num-particles")
    SAMPLES.check("--samples", samples)
    SIZE.check("--batch-size", batch_size)
    SIZE.check("--num-particles", num_particles)
    # every (name, K) is checked before the (slower) checkpoint and data are loaded
    grid = [(name, k, make_estimator(name, k)) for name in estimators for k in num_particles]
    path = Path(run_dir)
    with run_lock(path):  # checked writable before any work: the results are not lost
        check_writable(path)
        run = load_run(path, device, data_dir, download, allow_other_data)
        if not getattr(run.guide, "sites", ("z",)):
            raise PyroVAEError(
                f"{path} has no latent variable (a --conditional-model baseline): there is no "
                "estimator to compare, its objective is the exact log p(x_miss|x_obs)"
            )
        if any(getattr(e, "needs_baseline_net", False) for _, _, e in grid):
            guide_baseline(run.guide)  # nvil on a run trained without its b_ψ: refused
        xb = first_test_images(run.data, batch_size, "--batch-size")
        yb = labels_for(run.model, run.data.test_y[: xb.shape[0]])
        bar = tqdm(total=len(grid) * samples, desc="gradients", disable=not progress)
        rows = [_row(run, name, k, estimator, samples, xb, yb, bar) for name, k, estimator in grid]
        bar.close()
        write_diagnostics(path, rows)
    return rows


def _row(run, name: str, k: int, estimator, samples: int, xb, yb, bar) -> dict[str, Any]:
    bar.set_postfix_str(f"{name} K={k}", refresh=False)
    groups = default_groups(run.model, run.guide)
    if not getattr(estimator, "needs_baseline_net", False):
        groups.pop("baseline", None)  # b_ψ gets no gradient from this estimator
    annealed = getattr(estimator, "annealed", False)
    tau = _temperature(run) if annealed else None
    with seeded(0), Temperature(tau) if annealed else nullcontext():
        stats = gradient_statistics(
            run.model,
            run.guide,
            xb,
            estimator,
            num_samples=samples,
            groups=groups,
            y=yb,
            on_sample=bar.update,
        )
    row: dict[str, Any] = {
        "epoch": run.epoch,
        "estimator": name,
        "num_particles": k,
        "samples": samples,
        "batch_size": int(xb.shape[0]),
    }
    if annealed:
        row["temperature"] = tau
    for group, figures in stats.items():
        row[group] = {key: figures[key] for key in DIAGNOSTIC_FIGURES}
    return row


def _temperature(run) -> float:
    """τ at the checkpoint's last step: a relaxed estimator is measured where training left it."""
    steps = num_batches(run.data.num_train, run.config.batch_size)
    return run.config.temperature_schedule()(max(run.epoch * steps - 1, 0))
