"""Choices and defaults of the selection options, shared by the API and the CLI (imports nothing heavy).

The defaults come from the measured quality table (bench/quality_table.py; README, "Quality").
"""
RANKERS = ("activation", "obs")  # rank rows from activation statistics on probe text
BASELINES = ("random", "magnitude")
WEIGHT_SELECTORS = ("prunenet", *BASELINES)  # the paper's policy and two baselines: weights only
SELECTORS = (*RANKERS, *WEIGHT_SELECTORS)
REPAIRS = ("lsq", "none")
STATISTICS = ("oneshot", "sequential")

DEFAULT_SELECTOR = "activation"
DEFAULT_REPAIR = "lsq"
DEFAULT_STATISTICS = "oneshot"
DEFAULT_PROBE_TOKENS = 4096
DEFAULT_PROBE_LENGTH = 128
