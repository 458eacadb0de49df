"""Guides: encoders and the posterior families they parameterize."""

from pyrovae.guides.encoders import ENCODERS
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
    "ENCODERS",
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
