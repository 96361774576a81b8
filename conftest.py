"""Pytest started as `python -m pytest` puts the checkout first on sys.path, and there its `kernels/` folder
(installed as `prunenet_kernels`) would shadow the Hugging Face `kernels` package, which transformers imports
when it builds a model. The tests and benchmarks import the installed packages only, so the checkout leaves
sys.path before any of them runs. (`prunenet/checkout.py` does the same for `python -m prunenet` and farm
workers; this file cannot import it, since importing prunenet imports Triton before `tests/conftest.py`
has chosen its interpreter.)"""
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != CHECKOUT]
