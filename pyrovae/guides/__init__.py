"""Guides: encoders and the posterior families they parameterize."""

from pyrovae.guides.encoders import ENCODERS
from pyrovae.guides.families import GUIDES, DiagonalNormal, Family
from pyrovae.guides.guide import AmortizedGuide

__all__ = ["ENCODERS", "GUIDES", "AmortizedGuide", "DiagonalNormal", "Family"]
