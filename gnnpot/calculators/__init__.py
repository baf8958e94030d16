"""ASE calculator (one model or a committee), molecular dynamics and relaxation."""

from gnnpot.calculators.calculator import GNNPotCalculator
from gnnpot.calculators.dynamics import MDResult, MDStop, RelaxResult, relax, run_md

__all__ = ["GNNPotCalculator", "MDResult", "MDStop", "RelaxResult", "relax", "run_md"]
