"""Guides: the amortized guide and the posterior families its encoder parameterizes."""

from pyrovae.guides.discrete import (
    ENUMERATION_LIMIT,
    BernoulliCode,
    Bernoullis,
    CategoricalCode,
    Categoricals,
    Relaxed,
)
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
    "ENUMERATION_LIMIT",
    "GUIDES",
    "MIN_SCALE",
    "AmortizedGuide",
    "BernoulliCode",
    "Bernoullis",
    "CategoricalCode",
    "Categoricals",
    "DiagonalLaplace",
    "DiagonalLogistic",
    "DiagonalNormal",
    "DiagonalStudentT",
    "Family",
    "FullCovarianceNormal",
    "InverseAutoregressiveFlow",
    "PointMass",
    "Relaxed",
]
