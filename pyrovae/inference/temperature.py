"""The temperature τ of a relaxed discrete code, and its annealing schedule.

Jang et al. (2017) anneal τ = max(τ_min, exp(−r t)) in the global training step t, updated every
N steps (they searched r ∈ {10⁻⁵, 10⁻⁴}, N ∈ {500, 1000}, τ_min = 0.5). Here

    τ_t = max(τ_min, τ₀ · exp(−r · N ⌊t / N⌋)),

a pure function of the step (so a resumed run follows it exactly, as the learning-rate
schedules do). Training holds the current τ in a :class:`Temperature` handler around each step;
the relaxed estimators read it from there, and the compiled fast path records it as an input of
its graph (like β), so one graph serves every τ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK

from pyrovae.core.errors import PyroVAEError

TEMPERATURE, TEMPERATURE_MIN = 1.0, 0.5
TEMPERATURE_RATE, TEMPERATURE_INTERVAL = 1e-4, 500


class Temperature(Messenger):
    """Holds τ for the relaxed estimators run inside it; changes no site itself."""

    def __init__(self, temperature: Any) -> None:
        super().__init__()
        self.temperature = temperature


def current_temperature(default: Any) -> Any:
    """τ of the innermost enclosing :class:`Temperature`, else ``default``."""
    for handler in reversed(_PYRO_STACK):
        if isinstance(handler, Temperature):
            return handler.temperature
    return default


def temperature_schedule(
    initial: float = TEMPERATURE,
    minimum: float = TEMPERATURE_MIN,
    rate: float = TEMPERATURE_RATE,
    interval: int = TEMPERATURE_INTERVAL,
) -> Callable[[int], float]:
    """t ↦ τ_t = max(τ_min, τ₀ exp(−r N ⌊t/N⌋)) for the global step t = 0, 1, …"""
    check_schedule(initial, minimum, rate, interval)
    return lambda step: max(minimum, initial * math.exp(-rate * interval * (step // interval)))


def check_schedule(initial: float, minimum: float, rate: float, interval: int) -> None:
    """One-line errors for settings that give no schedule."""
    if not (math.isfinite(initial) and initial > 0):
        raise PyroVAEError(f"--temperature must be a positive number, got {initial}")
    if not (math.isfinite(minimum) and minimum > 0):
        raise PyroVAEError(f"--temperature-min must be a positive number, got {minimum}")
    if not (math.isfinite(rate) and rate >= 0):
        raise PyroVAEError(f"--temperature-rate must be a number ≥ 0, got {rate}")
    if interval < 1:
        raise PyroVAEError(f"--temperature-interval must be at least 1, got {interval}")
