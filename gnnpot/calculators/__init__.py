"""ASE calculators."""

from gnnpot.calculators.calculator import GNNPotCalculator

__all__ = ["GNNPotCalculator"]
