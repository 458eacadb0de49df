"""Runs: the configuration, building model and guide from it, the run folder, and one module per
verb on a run (train/resume, load, evaluate, diagnose, sample, plot) with the figures it writes.

The command line (:mod:`pyrovae.cli`) is a thin layer over these functions. The public names
are imported on first use (PEP 562): the command line's parser reads
:class:`~pyrovae.runs.config.TrainConfig` without loading torch.
"""

from __future__ import annotations

from pyrovae.core.lazy import lazy_exports

# public name ↦ the module that defines it
_SOURCES = {
    "build_model_and_guide": "pyrovae.runs.build",
    "load_checkpoint": "pyrovae.runs.checkpoint",
    "TrainConfig": "pyrovae.runs.config",
    "diagnose_run": "pyrovae.runs.diagnose",
    "LOG_PX_SAMPLES": "pyrovae.runs.evaluate",
    "evaluate_run": "pyrovae.runs.evaluate",
    "read_config": "pyrovae.runs.folder",
    "read_metrics": "pyrovae.runs.folder",
    "gaps_run": "pyrovae.runs.gaps",
    "LoadedRun": "pyrovae.runs.load",
    "load_run": "pyrovae.runs.load",
    "plot_runs": "pyrovae.runs.plot",
    "sample_run": "pyrovae.runs.sample",
    "resume_run": "pyrovae.runs.train",
    "train_run": "pyrovae.runs.train",
}

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


__getattr__, __dir__ = lazy_exports(globals(), _SOURCES)
