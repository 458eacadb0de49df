"""The allowed values of every integer setting, declared once per setting.

A flag declared with an :class:`IntRange` as its argparse ``type`` is read as a whole number, and
:func:`pyrovae.cli.parser.check_ranges` refuses it right after parsing, in one line, before any
file is read; :class:`~pyrovae.runs.config.TrainConfig` and the ``*_run`` functions check the same
ranges when a config file or the Python API supplies the value.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from pyrovae.core.errors import PyroVAEError

# The upper end of sizes and counts: the product of two sizes (a weight matrix between two
# layers, H × W) still fits PyTorch's 64-bit element counts, (2³¹ − 1)² < 2⁶³; every value past
# it is absurd here (one row of 2³¹ floats is 8.6 GB), and 10²³ overflowed torch with a traceback.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class IntRange:
    """Whole numbers ``low`` ≤ n ≤ ``high`` (``high`` None: no upper end; ``why`` says where
    the upper end comes from)."""

    low: int
    high: int | None = INT32_MAX
    why: str = "2³¹ − 1"

    def __call__(self, text: str) -> int:
        """argparse's conversion: a whole number (``1e21`` is not one), unchecked."""
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None

    def check(self, name: str, value: int | Sequence[int] | None) -> None:
        """A one-line :class:`PyroVAEError` naming ``name`` unless ``value`` (each of several)
        is in the range; None (not given) passes."""
        if value is None:
            return
        values = [value] if isinstance(value, int) else list(value)
        shown = " ".join(map(str, values))
        if any(v < self.low for v in values):
            raise PyroVAEError(f"{name} must be at least {self.low}, got {shown}")
        if self.high is not None and any(v > self.high for v in values):
            raise PyroVAEError(f"{name} must be at most {self.high} ({self.why}), got {shown}")


SEED = IntRange(0, 2**32 - 1, "2³² − 1: NumPy's seeds are 32-bit")
SIZE = IntRange(1)  # a width, a batch, a number of images or particles, epochs
COUNT = IntRange(0)  # where 0 means none: warm-up steps, worker processes, a class label
