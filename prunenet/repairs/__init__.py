"""The repairs of the output matrix after slicing, by name: adding one means one module and one entry below."""
from __future__ import annotations

from .base import NoRepair, Refit, Repair
from .lsq import LeastSquaresRepair, refit_output
from .refine import RefineRepair

REPAIRS: dict[str, Repair] = {repair.name: repair for repair in (LeastSquaresRepair(), RefineRepair(), NoRepair())}

__all__ = ["REPAIRS", "Refit", "Repair", "refit_output"]
