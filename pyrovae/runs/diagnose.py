"""``diagnose`` a run: gradient variance and SNR of estimators × K at its checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable
from pyrovae.core.labels import labels_for
from pyrovae.core.ranges import SIZE, IntRange
from pyrovae.core.runtime import seeded
from pyrovae.data.batches import num_batches
from pyrovae.inference.diagnostics import default_groups, gradient_statistics
from pyrovae.inference.estimators import estimator_entry, make_estimator
from pyrovae.inference.nvil import guide_baseline
from pyrovae.inference.temperature import Temperature
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import read_config, run_lock, write_diagnostics
from pyrovae.runs.load import first_test_images, load_run

DIAGNOSTIC_FIGURES = ("snr", "variance_mean", "mean_norm")
SAMPLES = IntRange(2)  # gradients per row: a variance needs two
COMPARED = ("elbo", "iwae", "iwae-dreg", "score-function")  # beside the run's own, by default
MOST_ESTIMATORS = 3  # the run's own and the first of those that apply to it
DEFAULT_PARTICLES = (1, 10)  # and the run's own K
BATCH = 64  # test images in the batch, by default
CALIBRATION = 3  # gradients drawn per setting to time one (the first pays one-time costs)


def default_estimators(config: TrainConfig) -> list[str]:
    """The run's own estimator, then those of :data:`COMPARED` that the run could have been
    trained with (its guide's kind of code, M2's own objective, …), :data:`MOST_ESTIMATORS` in
    all."""
    names = [config.estimator]
    for name in COMPARED:
        if len(names) >= MOST_ESTIMATORS or name in names:
            continue
        try:
            config.replace(estimator=name, hutchinson_probes=None)
        except PyroVAEError:
            continue
        names.append(name)
    return names


def default_particles(config: TrainConfig, estimators: Sequence[str]) -> list[int]:
    """Of K = 1 (the ELBO's own), 10 and the run's own K, those every one of ``estimators``
    takes (VIMCO needs K ≥ 2)."""

    def takes(name: str, k: int) -> bool:
        try:
            make_estimator(name, k)
        except PyroVAEError:
            return False
        return True

    ks = sorted({*DEFAULT_PARTICLES, config.num_particles})
    return [k for k in ks if all(takes(name, k) for name in estimators)]


@dataclass(frozen=True)
class Estimate:
    """How long ``diagnose`` will take: ``seconds``, from gradients timed at every setting
    before the work, for ``estimators`` × ``num_particles`` × ``samples`` gradients of
    ``batch_size`` images."""

    seconds: float
    estimators: tuple[str, ...]
    num_particles: tuple[int, ...]
    samples: int
    batch_size: int

    def __str__(self) -> str:
        e, k = self.estimators, self.num_particles
        return (
            f"about {_duration(self.seconds)}: {_count(len(e), 'estimator')} ({', '.join(e)}) "
            f"× {_count(len(k), 'value')} of K ({', '.join(map(str, k))}) × {self.samples} "
            f"gradients of {self.batch_size} test images"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def diagnose_run(
    run_dir: str | Path,
    estimators: Sequence[str] | None = None,
    num_particles: Sequence[int] | None = None,
    samples: int = 100,
    batch_size: int | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    allow_other_data: bool = False,
    announce: Callable[[Estimate], object] | None = None,
) -> list[dict[str, Any]]:
    """Gradient variance and SNR of each estimator × K at the run's checkpoint.

    ``estimators`` default to the run's own and the standard ones that apply to it
    (:func:`default_estimators`), ``num_particles`` to 1, 10 and the run's K. Before the work,
    ``announce`` (if given) receives an :class:`Estimate` of its duration, from
    :data:`CALIBRATION` gradients timed at each setting.

    The batch is the first ``batch_size`` test images (default: :data:`BATCH`, or all when
    there are fewer); each row draws ``samples`` gradients
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
    path = Path(run_dir)
    if estimators is None or num_particles is None:
        config = read_config(path)
        estimators = default_estimators(config) if estimators is None else estimators
        if num_particles is None:
            for name in estimators:
                estimator_entry(name)  # an unknown name is named, not a K that none takes
            num_particles = default_particles(config, estimators)
            if not num_particles:
                raise PyroVAEError(
                    f"none of K = 1, 10, {config.num_particles} suits every estimator of "
                    f"{', '.join(estimators)}; give --num-particles"
                )
    if not estimators or not num_particles:
        raise PyroVAEError("diagnose needs at least one estimator and one --num-particles")
    SAMPLES.check("--samples", samples)
    if batch_size is not None:
        SIZE.check("--batch-size", batch_size)
    SIZE.check("--num-particles", num_particles)
    # every (name, K) is checked before the (slower) checkpoint and data are loaded
    grid = [(name, k, make_estimator(name, k)) for name in estimators for k in num_particles]
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
        if batch_size is None:
            batch_size = min(BATCH, run.data.test_x.shape[0])
        xb = first_test_images(run.data, batch_size, "--batch-size")
        yb = labels_for(run.model, run.data.test_y[: xb.shape[0]])
        if announce is not None:
            each = sum(_seconds_per_gradient(run, e, xb, yb) for _, _, e in grid)
            shape = (tuple(estimators), tuple(num_particles), samples, int(xb.shape[0]))
            announce(Estimate(each * samples, *shape))
        bar = tqdm(total=len(grid) * samples, desc="gradients", disable=not progress)
        rows = [_row(run, name, k, estimator, samples, xb, yb, bar) for name, k, estimator in grid]
        bar.close()
        write_diagnostics(path, rows)
    return rows


def _statistics(run, estimator, samples: int, xb, yb, on_sample) -> dict[str, Any]:
    """``samples`` gradients of ``estimator`` at the checkpoint, under seed 0."""
    groups = default_groups(run.model, run.guide)
    if not getattr(estimator, "needs_baseline_net", False):
        groups.pop("baseline", None)  # b_ψ gets no gradient from this estimator
    annealed = getattr(estimator, "annealed", False)
    tau = _temperature(run) if annealed else None
    with seeded(0), Temperature(tau) if annealed else nullcontext():
        return gradient_statistics(
            run.model,
            run.guide,
            xb,
            estimator,
            num_samples=samples,
            groups=groups,
            y=yb,
            on_sample=on_sample,
        )


def _seconds_per_gradient(run, estimator, xb, yb) -> float:
    """One gradient's time: the mean over the draws after the first of :data:`CALIBRATION`."""
    times: list[float] = []

    def clock() -> None:
        if xb.device.type == "cuda":
            torch.cuda.synchronize(xb.device)  # the work queued, not only launched
        times.append(time.perf_counter())

    _statistics(run, estimator, CALIBRATION, xb, yb, clock)
    return (times[-1] - times[0]) / (len(times) - 1)


def _row(run, name: str, k: int, estimator, samples: int, xb, yb, bar) -> dict[str, Any]:
    bar.set_postfix_str(f"{name} K={k}", refresh=False)
    annealed = getattr(estimator, "annealed", False)
    tau = _temperature(run) if annealed else None
    stats = _statistics(run, estimator, samples, xb, yb, bar.update)
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
