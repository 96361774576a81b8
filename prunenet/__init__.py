"""prunenet: structured compression of LLM FFNs with no data from its user.

By default, rows are ranked by their activations on text the model writes itself and the output
matrices are refitted; the paper's method (PruneNet, ICLR 2025) is one option away.

    import prunenet
    prunenet.compress("smollm2-135m", "./smol-30", ratio=0.3)                       # the default
    prunenet.compress("smollm2-135m", "./paper-30", ratio=0.3, selector="prunenet", repair="none")
"""
from .api import FitResult, compress, fit, info, prune_, score
from .config import CompressConfig, FitConfig, HealOptions, ProbeConfig
from .farm import farm  # the function; its modules stay importable as prunenet.farm.<module>
from .model.families import FAMILIES, family_for
from .ratios import kept_width
from .selectors import SELECTORS, select_rows
from .selectors.policy.fit import train_policy
from .selectors.policy.network import Policy, load_policy

FitOptions = FitConfig  # the name of earlier versions

__all__ = [
    "FAMILIES", "SELECTORS", "CompressConfig", "FitConfig", "FitOptions", "FitResult", "HealOptions", "Policy",
    "ProbeConfig",
    "compress", "family_for", "farm", "fit", "info", "kept_width", "load_policy", "prune_", "score", "select_rows",
    "train_policy",
]
__version__ = "0.1.0"
