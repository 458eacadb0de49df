"""The defaults and flag names that ``--help`` shows, without importing torch.

Each constant here is a copy of one defined next to the code that uses it, in a module that
imports torch (:data:`LIVE` names it): the command line's parser and
:class:`~pyrovae.runs.config.TrainConfig`'s field defaults read the copy, so ``pyrovae --help``
answers without loading torch. ``tests/test_startup.py`` asserts that each copy equals its
original.
"""

from __future__ import annotations

from typing import NamedTuple

from pyrovae.core.ranges import IntRange

# TrainConfig's defaults
TEMPERATURE, TEMPERATURE_MIN = 1.0, 0.5
TEMPERATURE_RATE, TEMPERATURE_INTERVAL = 1e-4, 500
DIVERGENCE_FACTOR = 100.0
BURDA_EPOCHS = 3280  # the burda2015 preset's epochs: the first 8 stages, Σ_{i<8} 3^i

# the held-out split of runs recorded before --test-split
LEGACY_SPLIT = "file-order"

# train
DEFAULT_TIMEOUT = 300.0  # --dist-timeout
OTHER_DATA_FLAG = "--allow-other-data"
RESTART_FLAG = "--restart"
RESTARTED = "restarted-"
TENSORBOARD = "tensorboard"

# evaluate
LOG_PX_SAMPLES = 100
NUM_SAMPLES = IntRange(0, None)
MAX_DRAWS = 10**9
MAX_DRAWS_RANGE = IntRange(1, None)
AIS_STEPS, AIS_CHAINS, AIS_LEAPFROG = 100, 16, 10

# diagnose
DIAGNOSE_SAMPLES = IntRange(2)
DIAGNOSE_BATCH = 64
DIAGNOSE_MOST_ESTIMATORS = 3

# gaps
GAPS_TEST_SUBSET = 100
GAPS_AIS_STEPS, GAPS_CHAINS, GAPS_LEAPFROG = 100, 16, 10
GAPS_SAMPLES = IntRange(2)
ELBO_SAMPLES = 100


class LocalSearch(NamedTuple):
    """The fields of the search for q* that ``gaps --help`` shows (of ``LocalSettings()``)."""

    max_steps: int = 2000
    lr: float = 1e-2
    samples: int = 10
    check_every: int = 50
    tolerance: float = 0.01
    patience: int = 3


LOCAL = LocalSearch()

# copy ↦ (module, name) of the original
LIVE = {
    "TEMPERATURE": ("pyrovae.inference.temperature", "TEMPERATURE"),
    "TEMPERATURE_MIN": ("pyrovae.inference.temperature", "TEMPERATURE_MIN"),
    "TEMPERATURE_RATE": ("pyrovae.inference.temperature", "TEMPERATURE_RATE"),
    "TEMPERATURE_INTERVAL": ("pyrovae.inference.temperature", "TEMPERATURE_INTERVAL"),
    "DIVERGENCE_FACTOR": ("pyrovae.inference.divergence", "DIVERGENCE_FACTOR"),
    "LEGACY_SPLIT": ("pyrovae.data.splits", "LEGACY_SPLIT"),
    "DEFAULT_TIMEOUT": ("pyrovae.core.distributed", "DEFAULT_TIMEOUT"),
    "OTHER_DATA_FLAG": ("pyrovae.runs.load", "OTHER_DATA_FLAG"),
    "RESTART_FLAG": ("pyrovae.runs.records", "RESTART_FLAG"),
    "RESTARTED": ("pyrovae.runs.records", "RESTARTED"),
    "TENSORBOARD": ("pyrovae.runs.tensorboard", "TENSORBOARD"),
    "LOG_PX_SAMPLES": ("pyrovae.runs.evaluate", "LOG_PX_SAMPLES"),
    "NUM_SAMPLES": ("pyrovae.runs.evaluate", "NUM_SAMPLES"),
    "MAX_DRAWS": ("pyrovae.runs.evaluate", "MAX_DRAWS"),
    "MAX_DRAWS_RANGE": ("pyrovae.runs.evaluate", "MAX_DRAWS_RANGE"),
    "AIS_STEPS": ("pyrovae.runs.evaluate", "AIS_STEPS"),
    "AIS_CHAINS": ("pyrovae.runs.evaluate", "AIS_CHAINS"),
    "AIS_LEAPFROG": ("pyrovae.runs.evaluate", "AIS_LEAPFROG"),
    "DIAGNOSE_SAMPLES": ("pyrovae.runs.diagnose", "SAMPLES"),
    "DIAGNOSE_BATCH": ("pyrovae.runs.diagnose", "BATCH"),
    "DIAGNOSE_MOST_ESTIMATORS": ("pyrovae.runs.diagnose", "MOST_ESTIMATORS"),
    "GAPS_TEST_SUBSET": ("pyrovae.runs.gaps", "TEST_SUBSET"),
    "GAPS_AIS_STEPS": ("pyrovae.runs.gaps", "AIS_STEPS"),
    "GAPS_CHAINS": ("pyrovae.runs.gaps", "CHAINS"),
    "GAPS_LEAPFROG": ("pyrovae.runs.gaps", "LEAPFROG"),
    "GAPS_SAMPLES": ("pyrovae.runs.gaps", "SAMPLES"),
    "ELBO_SAMPLES": ("pyrovae.inference.gaps", "ELBO_SAMPLES"),
    "LOCAL": ("pyrovae.inference.gaps", "LOCAL"),  # each field of LocalSearch
    "BURDA_EPOCHS": ("pyrovae.inference.schedules", "burda_epochs(8)"),
}
