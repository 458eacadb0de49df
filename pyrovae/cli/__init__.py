"""``pyrovae train`` / ``evaluate`` / ``diagnose`` / ``sample`` / ``plot``: a thin layer over
:mod:`pyrovae.runs`.

The train flags are generated from :class:`~pyrovae.runs.config.TrainConfig`'s fields (a flag that
names a registry entry lists every entry with its one-line description); ``--config FILE`` reads
them from a JSON or TOML file first. ``train`` also draws the run's figures into
``RUN_DIR/figures/`` (``--no-figures`` skips them), and ``--tensorboard`` logs each epoch.
``pyrovae plot RUN_DIR`` redraws one run's figures; ``pyrovae plot RUN_DIR RUN_DIR … --out DIR``
overlays several runs' training curves. Bad input prints one line ``pyrovae: error: …`` on
stderr and exits with status 2; Ctrl-C (status 130) and SIGTERM (143: how schedulers stop a job)
stop a command with one line too, the last checkpoint kept.

Under ``torchrun``, ``train`` joins the process group the launcher describes and trains
data-parallel; rank 0 prints the results and the errors every rank shares. The other commands
run in one process: under torchrun rank 0 runs them and the other ranks exit at once.

The verbs live one module each (``pyrovae/cli/train.py`` …), registered in
:data:`~pyrovae.cli.command.VERBS`; :mod:`pyrovae.cli.parser` holds what their parsers share.
"""

from __future__ import annotations

from pyrovae.cli.command import VERBS, build_parser, main

__all__ = ["VERBS", "build_parser", "main"]
