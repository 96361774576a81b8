"""The repairs of the output matrix after slicing, by name: adding one means one module and one entry below."""
from __future__ import annotations

from .base import NoRepair, Repair
from .lsq import LeastSquaresRepair, refit_output

REPAIRS: dict[str, Repair] = {repair.name: repair for repair in (LeastSquaresRepair(), NoRepair())}

__all__ = ["REPAIRS", "Repair", "refit_output"]
