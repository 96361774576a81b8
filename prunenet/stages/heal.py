"""The heal stage: self-distillation of each compressed model towards the original (`healing.heal`).

It trains on text the original writes itself, drawn like the probes (same sampler and seed; its start and
temperature the probes' unless `heal_start` / `heal_temperature` say otherwise; when all of that and the
budget and length match the probes' it is the probes themselves, from their cache), with the original's
top-k log-probabilities computed once and shared by every ratio of the run.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ..healing import HealConfig, TeacherTargets, heal, teacher_targets
from ..memory import FLOAT32_BYTES
from .base import Stage

ADAMW_COPIES = 3  # a gradient and two moments per trained parameter


class HealStage(Stage):
    name = "heal"
    help = "self-distillation towards the original on its own text (--heal-tokens)"

    def __init__(self, config):
        super().__init__(config)
        options = config.heal
        self.heal_config = HealConfig(tokens=options.tokens, length=options.length, batch_size=options.batch_size,
                                      lr=options.lr, schedule="constant", train=options.train, top_k=options.top_k,
                                      seed=config.seed, precision=options.precision).validate()
        self._targets: TeacherTargets | None = None

    @staticmethod
    def enabled(config) -> bool:
        return config.heal.tokens > 0

    def memory_bytes(self, parameters: int) -> int:
        # Teacher and student in float32, optimizer state for (at most) every student parameter.
        return parameters * FLOAT32_BYTES * (2 + ADAMW_COPIES)

    def text_probes(self, probes):
        options = self.config.heal
        return replace(probes, tokens=self.heal_config.tokens, length=self.heal_config.length,
                       start=probes.start if options.start == "probes" else options.start,
                       temperature=probes.temperature if options.temperature is None else options.temperature)

    def run(self, teacher, student, text, progress):
        teacher_seconds = 0.0  # the shared targets are computed for the first ratio, and counted there
        if self.heal_config.top_k and self._targets is None:
            start = time.perf_counter()
            self._targets = teacher_targets(teacher, text.tokens, self.heal_config.length, self.heal_config.top_k,
                                            self.heal_config.batch_size, progress, self.heal_config.precision)
            teacher_seconds = round(time.perf_counter() - start, 2)
        report = heal(student, teacher, text.tokens, self.heal_config, progress, self._targets)
        report.pop("kl_steps")  # one number per step: the first and last stay
        return {**report, "teacher_seconds": teacher_seconds, "text": text.info}
