"""Compression farms: many models x ratios on Ray (`prunenet farm PLAN.toml`, `prunenet.farm(plan)`).

Modules: `plan` (reading and checking a TOML plan), `jobs` (output layout, job keys, what is already done),
`tasks` (what runs in a Ray worker), `runner` (the task graph on Ray), `summary` (table, JSON, CSV, plot),
`api` (`farm`), `cli` (`prunenet farm`). Ray comes with the extra: pip install "prunenet[farm]".
"""
from .api import farm
from .plan import Plan, load_plan

__all__ = ["Plan", "farm", "load_plan"]
