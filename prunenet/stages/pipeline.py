"""Running the stages of a `compress` or `prune_` call: the original loaded once, each compressed model built
from it, changed by every stage in turn, and handed back as tensors for the writer."""
from __future__ import annotations

import copy

import torch

from ..calibration.probes import SELF, Probes, get_probes
from ..config import CompressConfig
from ..memory import require_memory
from ..model.checkpoint import Checkpoint
from ..model.embedded import cache_root
from ..model.families import Family
from ..model.ffn_map import SlicePlan
from ..model.in_memory import ModelTensors, slice_in_place
from . import STAGES, Stage


class StagePipeline:
    def __init__(self, config: CompressConfig):
        self.config = config
        self.stages: list[Stage] = [stage(config) for stage in STAGES.values() if stage.enabled(config)]
        self.text: Probes | None = None

    def __bool__(self) -> bool:
        return bool(self.stages)

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def check_memory(self, parameters: int, device: torch.device) -> None:
        """Refuse in one line, before any work, a model the stages cannot hold on `device`."""
        require_memory(max(stage.memory_bytes(parameters) for stage in self.stages), device,
                       f"stage(s) {', '.join(self.names)} need the original and a compressed model whole")

    def text_config(self):
        """The probe options of the self-written text the stages train on (the longest asked for), or None."""
        wanted = [text for stage in self.stages if (text := stage.text_probes(self.config.probes)) is not None]
        return max(wanted, key=lambda text: (text.tokens, text.length or 0), default=None)

    @property
    def text_needs_chat_template(self) -> bool:
        """Whether the stages' text is self-written from the chat template (which `chat_turn` checks)."""
        text_config = self.text_config()
        return text_config is not None and text_config.source == SELF and text_config.start == "chat"

    def write_text(self, checkpoint: Checkpoint, device: torch.device, progress: bool) -> None:
        """The stages' text, drawn as the probes are (cached); before the original is loaded, so that only one
        whole model is in memory at a time."""
        text_config = self.text_config()
        if text_config is not None:
            self.text = get_probes(checkpoint, text_config, self.config.seed, cache_root(), device, progress)

    def run(self, teacher: torch.nn.Module, student: torch.nn.Module, progress: bool) -> dict:
        """Every stage on the compressed `student`, in place; the report per stage."""
        return {stage.name: stage.run(teacher, student, self.text, progress) for stage in self.stages}


def load_teacher(path, device: torch.device) -> torch.nn.Module:
    """The original, whole, in float32 (what the stages train and measure in), on `device`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device).eval()  # type: ignore[arg-type]


def stored_names(model: torch.nn.Module, checkpoint_names) -> dict[str, str]:
    """Each of `model`'s state-dict names -> the checkpoint's name for that tensor (with or without the outer
    prefix, e.g. `model.`); names the checkpoint does not store (a tied head) are left out."""
    names = set(checkpoint_names)
    prefix = f"{model.base_model_prefix}."
    found: dict[str, str] = {}
    held: list[str] = list(model.state_dict())
    for name in held:
        if name in names:
            found[name] = name
        elif name.startswith(prefix) and name[len(prefix):] in names:
            found[name] = name[len(prefix):]
    return found


def sliced_copy(teacher: torch.nn.Module, family: Family, kept: torch.Tensor, replacements: dict[str, torch.Tensor],
                names: dict[str, str]) -> torch.nn.Module:
    """A copy of `teacher` compressed to `kept`, with `replacements` named as in the checkpoint (`names`:
    `stored_names` of the teacher)."""
    student = copy.deepcopy(teacher)
    slice_in_place(student, SlicePlan(ModelTensors(student), family), kept.to(next(student.parameters()).device),
                   {state: replacements[stored] for state, stored in names.items() if stored in replacements})
    return student


def stored_tensors(model: torch.nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Every tensor of `model` the checkpoint stores, under the checkpoint's name: what the writer writes."""
    return {names[state]: tensor for state, tensor in model.state_dict().items() if state in names}
