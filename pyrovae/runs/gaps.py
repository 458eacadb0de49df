"""``gaps`` of a run: the inference gap log p(x) − L[q_φ] split into its approximation and
amortization parts (Cremer et al. 2018) on the first test images, appended to ``gaps.json``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable
from pyrovae.core.labels import labels_for
from pyrovae.core.ranges import SIZE, IntRange
from pyrovae.guides.families import GUIDES
from pyrovae.inference.gaps import ELBO_SAMPLES, FIGURES, LOCAL, LocalSettings, inference_gaps
from pyrovae.inference.marginal import EVAL_SEED
from pyrovae.runs.folder import append_gaps, read_config, read_gaps, run_lock
from pyrovae.runs.load import first_test_images, load_run

TEST_SUBSET = 100  # images: the local search and AIS on each take some seconds on a 2-core CPU
AIS_STEPS, CHAINS, LEAPFROG = 100, 16, 10
SAMPLES = IntRange(2)  # S for each L: a Monte-Carlo error needs two draws


def check_gaps_apply_to(config) -> None:
    """Refuse, in one line and before anything is loaded, a run the split does not apply to."""
    family = GUIDES[config.guide]
    if config.semi_supervised:
        raise PyroVAEError(
            "gaps does not apply to an M2 (--semi-supervised) run: its class y is a discrete "
            "latent site, with no family to optimize per datapoint and no AIS over it"
        )
    if not family.has_density:
        raise PyroVAEError(
            f"gaps does not apply to --guide {config.guide}: a point mass has no density, so "
            "no ELBO of q* and no AIS from q"
        )
    if family.latent_kind != "continuous":
        raise PyroVAEError(
            f"gaps does not apply to --guide {config.guide}: a discrete code has no continuous "
            "parameters to optimize per datapoint, and AIS needs continuous latents"
        )


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a standard error over a single image is recorded as null."""
    return value if math.isfinite(value) else None


def gaps_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    test_subset: int | None = TEST_SUBSET,
    ais_steps: int = AIS_STEPS,
    chains: int = CHAINS,
    leapfrog: int = LEAPFROG,
    samples: int = ELBO_SAMPLES,
    local: LocalSettings = LOCAL,
    seed: int = EVAL_SEED,
    progress: bool = True,
    allow_other_data: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
    log_px_fn: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The inference gap split at a run's checkpoint on its first ``test_subset`` test images
    (:func:`~pyrovae.inference.gaps.inference_gaps`), appended to the run's ``gaps.json``.

    The entry holds its settings (``epoch``, ``guide``, ``num_test``, ``samples``, ``seed``,
    ``ais``: steps, chains, leapfrog; ``local``: the search's settings) and figures: for each
    of ``log_px``, ``elbo_local`` (L[q*]), ``elbo_amortized`` (L[q_φ]), ``approximation_gap``
    and ``amortization_gap`` a ``{"mean", "stderr", "mc_stderr"}`` (per image in nats;
    stderr over images, null from one; Monte-Carlo error), with ``local_steps`` and
    ``local_plateau`` (per batch of 100 images), AIS's ``acceptance`` and ``seconds``.
    Earlier entries are never changed or removed; a ``gaps.json`` that is not pyrovae's is
    refused before any work. Refused in one line: a point-mass guide, a discrete code, M2.
    ``report`` gets the entry before it is written (a failed write loses nothing shown).
    ``log_px_fn`` replaces AIS (tests).
    """
    SIZE.check("--test-subset", test_subset)
    for flag, value in (("--ais-steps", ais_steps), ("--chains", chains), ("--leapfrog", leapfrog)):
        SIZE.check(flag, value)
    SAMPLES.check("--samples", samples)
    path = Path(run_dir)
    check_gaps_apply_to(read_config(path))
    with run_lock(path):  # checked writable, and gaps.json readable, before any work
        check_writable(path)
        read_gaps(path)
        run = load_run(path, device, data_dir, download, allow_other_data)
        x = first_test_images(run.data, test_subset, "--test-subset")
        y = labels_for(run.model, run.data.test_y[: x.shape[0]])
        found = inference_gaps(
            run.model,
            run.guide,
            x,
            y,
            samples=samples,
            local=local,
            ais_steps=ais_steps,
            chains=chains,
            leapfrog=leapfrog,
            seed=seed,
            progress=progress,
            log_px_fn=log_px_fn,
        )
        settings = found["settings"]
        entry: dict[str, Any] = {
            "epoch": run.epoch,
            "guide": run.config.guide,
            "num_test": settings["num_test"],
            "samples": samples,
            "seed": seed,
            "ais": settings["ais"],
            "local": settings["local"],
            "local_steps": found["local_steps"],
            "local_plateau": found["local_plateau"],
        }
        for key, _ in FIGURES:
            figure = found[key]
            entry[key] = {**figure, "stderr": _finite_or_none(figure["stderr"])}
        entry["acceptance"] = found["acceptance"]
        entry["seconds"] = found["seconds"]
        if report is not None:
            report(entry)
        append_gaps(path, entry)
    return entry
