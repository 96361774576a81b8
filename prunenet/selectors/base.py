"""What a row selector is: what it needs, its own options, and the keep priority it produces.

A selector ranks the FFN rows of every layer from one of two inputs:
- `WeightSelector`: the stacked scored matrices (L, n, h) of the checkpoint (the paper's policy, baselines);
- `StatisticsSelector`: one layer at a time, the activation statistics of the probes (`LayerStats`) and the
  layer's output matrix, during the layer-streaming pass. One that `uses_model` also runs the whole original
  model, loaded, on the probe tokens once before that pass (`prepare_model`: gradients through every layer).
The driver asks a selector what it `needs`; it never tests a selector's name. Each selector's options are
a `Config` dataclass of its own (`options`), refused when another selector is in use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import torch

import prunenet_kernels as K

from ..config import Config, NoOptions

if TYPE_CHECKING:
    from ..calibration.statistics import LayerStats, OutputMatrix
    from ..model.ffn_map import SlicePlan
    from ..report import PhaseTimer
    from ..scores import StoredScores


@dataclass
class Ranking:
    """What a selector decided for every layer: a nested keep priority, or the kept rows of each width."""

    priority: torch.Tensor | None = None  # (L, n): the rows kept at width k are each layer's top k
    kept: dict[int, torch.Tensor] = field(default_factory=dict)  # width -> (L, k), ascending

    def rows(self, k: int) -> torch.Tensor:
        if self.priority is not None:
            return K.topk_rows(self.priority, k)
        return self.kept[k]


@dataclass(frozen=True)
class Run:
    """What a selector may need to know of the command that runs it."""

    timer: PhaseTimer
    progress: bool
    overwrite: bool  # outputs a selector writes itself (a trained policy) may replace existing files
    model_type: str | None


class Selector:
    """One row-selection method; subclasses set `name`, `help`, `needs` and, if any, `options`."""

    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help
    needs: ClassVar[Literal["weights", "statistics"]]
    options: ClassVar[type[Config]] = NoOptions
    trains_policy: ClassVar[bool] = False  # its scores file is a trained policy (`fit`), not a ranking

    def __init__(self, config: Config, seed: int = 0):
        self.config = config
        self.seed = seed

    def stored_scores(self, path: str | Path) -> StoredScores | None:
        """The ranking a scores file (written by `score`) holds for this selector."""
        from ..scores import load_scores

        return load_scores(path, self.name)

    def check_outputs(self, ratios: list[float], overwrite: bool) -> None:
        """Refuse, before any work, an output of the selector's own that could not be written."""

    def prepare(self, weights: torch.Tensor | None, ratios: list[float], run: Run) -> None:
        """Work a selector does once before it ranks (the paper's selector trains or loads its policy)."""

    def training_ratio(self, ratios: list[float]) -> float:
        """The ratio a policy is trained at (selectors that `trains_policy`)."""
        raise NotImplementedError(f"selector {self.name!r} trains no policy")

    def provenance(self) -> dict | None:
        """What an output records of how the selector was made ready (e.g. the policy's fit), if anything."""
        return None

    def fit_report(self) -> dict | None:
        """The summary of a training this run did, if it did one."""
        return None


class WeightSelector(Selector):
    needs = "weights"

    def rank(self, weights: torch.Tensor, widths: list[int]) -> Ranking:
        """The ranking of every layer's rows from the stacked scored matrices `weights` (L, n, h)."""
        raise NotImplementedError


class StatisticsSelector(Selector):
    needs = "statistics"
    uses_model: ClassVar[bool] = False  # it runs the whole original model on the probes first (`prepare_model`)

    def prepare_model(self, model: torch.nn.Module, plan: SlicePlan, tokens: torch.Tensor, progress: bool) -> None:
        """Work on the whole loaded original `model` and the probe `tokens` (S, T), once, before any layer is
        ranked (selectors that `uses_model`)."""

    def rank_layer(self, index: int, stats: LayerStats, output: OutputMatrix, smallest_width: int) -> torch.Tensor:
        """Keep priority (n,) of the rows of layer `index`, ranking down to `smallest_width` where that matters."""
        raise NotImplementedError
