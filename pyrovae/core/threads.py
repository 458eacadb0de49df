"""How many threads torch computes with: every verb's ``--threads N`` or ``auto``.

On a CPU, torch splits each large operation over its intra-op threads. More threads than free
cores make every epoch wait on the busiest core (a loaded 2-core machine trained 3.5–5× faster
with one thread than with two), so ``auto`` counts the cores this process may run on
(``os.sched_getaffinity``) less the 1-minute load average, at least 1; ``OMP_NUM_THREADS``,
when set, wins over ``auto`` (the launcher's or the user's explicit choice). The thread count
is how this process runs, not part of a run's settings: it is not recorded, may change on
``--resume``, and does not change the results.

Only the intra-op threads are set: pyrovae runs one operation at a time (no ``torch.jit.fork``),
so the inter-op pool stays idle, and torch allows setting it once per process only.
"""

from __future__ import annotations

import argparse
import os

from pyrovae.core.errors import PyroVAEError

AUTO = "auto"
# more threads than any machine here has cores: torch would start them all
MAX_THREADS = 1024


def parse_threads(text: str) -> int | str:
    """``--threads``' value, checked as it is parsed: ``auto`` or a whole number in
    [1, :data:`MAX_THREADS`]."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor {AUTO}") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be in [1, {MAX_THREADS}], got {value}")
    return value


def auto_threads() -> int:
    """``$OMP_NUM_THREADS`` (its first, outermost level) when set; else the cores this process
    may use less the 1-minute load average (rounded), at least 1."""
    given = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if given:
        try:
            value = int(given)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_THREADS:
            raise PyroVAEError(
                f"$OMP_NUM_THREADS must be a whole number in [1, {MAX_THREADS}] for --threads "
                f"{AUTO}, got {os.environ['OMP_NUM_THREADS']!r}"
            )
        return value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, int((cores or 1) - load + 0.5))


def resolve_threads(value: int | str) -> int:
    """The thread count ``--threads value`` means."""
    return auto_threads() if value == AUTO else int(value)


def use_threads(value: int | str) -> int:
    """Set torch's intra-op threads as ``--threads value`` says; the count set."""
    import torch  # here: the parser imports this module and must not load torch

    count = resolve_threads(value)
    torch.set_num_threads(count)
    return count
