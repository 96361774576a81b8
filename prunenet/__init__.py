"""prunenet: calibration-free compression of LLM FFNs by policy learning (PruneNet, ICLR 2025).

    import prunenet
    result = prunenet.fit("smollm2-135m", ratio=0.3, out="policy.safetensors")
    prunenet.compress("smollm2-135m", "./smol-30", ratio=0.3, policy="policy.safetensors")
"""
from .families import FAMILIES, family_for
from .fit import FitOptions, train_policy
from .pipeline import FitResult, compress, fit, info, score
from .policy import Policy, load_policy
from .row_selection import kept_width, select_rows
from .farm import farm  # the function; its modules stay importable as prunenet.farm.<module>

__all__ = [
    "FAMILIES", "FitOptions", "FitResult", "Policy", "compress", "family_for", "farm", "fit", "info", "kept_width",
    "load_policy", "score", "select_rows", "train_policy",
]
__version__ = "0.1.0"
