"""A checkout of prunenet off `sys.path`, where a process started inside it put it there.

`python -m prunenet` puts the working directory first on `sys.path`, and Ray puts the driver's working
directory on every worker's. Inside a checkout (an editable install), its `kernels/` folder, installed as
`prunenet_kernels`, would then be found where transformers imports the Hugging Face `kernels` package, and
every model load fails. The installed packages are found without the checkout on the path.
"""
from __future__ import annotations

import sys
from pathlib import Path


def leave_checkout_off_path() -> None:
    """Drop the checkout prunenet is installed from (if it is installed from one) from `sys.path`."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "kernels" / "ops").is_dir() and (checkout / "setup.py").is_file():
        sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != checkout]
