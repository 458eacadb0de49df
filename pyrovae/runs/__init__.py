"""Runs: the configuration, building model and guide from it, the run folder, and one module per
verb on a run (train/resume, load, evaluate, diagnose, sample, plot) with the figures it writes.

The command line (:mod:`pyrovae.cli`) is a thin layer over these functions.
"""

from pyrovae.runs.build import build_model_and_guide
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.diagnose import diagnose_run
from pyrovae.runs.evaluate import LOG_PX_SAMPLES, evaluate_run
from pyrovae.runs.folder import read_config, read_metrics
from pyrovae.runs.gaps import gaps_run
from pyrovae.runs.load import LoadedRun, load_run
from pyrovae.runs.plot import plot_runs
from pyrovae.runs.sample import sample_run
from pyrovae.runs.train import resume_run, train_run

__all__ = [
    "LOG_PX_SAMPLES",
    "LoadedRun",
    "TrainConfig",
    "build_model_and_guide",
    "diagnose_run",
    "evaluate_run",
    "gaps_run",
    "load_checkpoint",
    "load_run",
    "plot_runs",
    "read_config",
    "read_metrics",
    "resume_run",
    "sample_run",
    "train_run",
]
