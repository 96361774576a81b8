"""Test-wide set-up. Triton's interpreter must be chosen before Triton is first imported."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
