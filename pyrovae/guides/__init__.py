"""Guides: the amortized guide and the posterior families its encoder parameterizes."""

from pyrovae.guides.families import (
    GUIDES,
    MIN_SCALE,
    DiagonalLaplace,
    DiagonalLogistic,
    DiagonalNormal,
    DiagonalStudentT,
    Family,
    FullCovarianceNormal,
    InverseAutoregressiveFlow,
    PointMass,
)
from pyrovae.guides.guide import AmortizedGuide

__all__ = [
    "GUIDES",
    "MIN_SCALE",
    "AmortizedGuide",
    "DiagonalLaplace",
    "DiagonalLogistic",
    "DiagonalNormal",
    "DiagonalStudentT",
    "Family",
    "FullCovarianceNormal",
    "InverseAutoregressiveFlow",
    "PointMass",
]
