"""Self-distillation healing: train a sliced model to follow its original again, with no user data.

    text = teacher_text(teacher, tokenizer, sequences=256, length=128, seed=1)
    report = heal(student, teacher, text, HealConfig(tokens=32768))

The student (the compressed model) learns the teacher's (the original's) next-token distributions by
minimising KL(teacher || student), averaged over predicted positions, on text the teacher writes itself:
that text is already on the teacher's distribution, so no corpus is needed and nothing of the user's is
seen. Only the parameter groups of `HealConfig.train` change (by default the FFN matrices, which slicing
changed, and every norm, which sets the scale each block reads); the student is trained in place.

Two ways to get the teacher's targets: its full logits, computed under no_grad for every batch
(`top_k=0`), or its top-k log-probabilities plus the log of the remaining mass, computed once for the
whole text (`teacher_targets`) and reusable across students. The reduced form compares the two
distributions on k + 1 outcomes (the top-k tokens and "any other token"); by the log-sum inequality its
KL never exceeds the full KL, and it equals it when the teacher puts no mass outside its top k.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch

from .calibration.probes import ProbePlan, generate
from .config import SELF
from .progress import progress_bar

Train = Literal["ffn_norms", "ffn", "norms", "all", "lora"]
Schedule = Literal["cosine", "constant"]
Precision = Literal["auto", "float32", "bfloat16"]
TRAIN_CHOICES: tuple[str, ...] = get_args(Train)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Names that Hugging Face decoder layers give their FFN block ("mlp" for Llama, Qwen, Gemma, Phi, Falcon,
# GPT-NeoX) or its matrices where the layer holds them itself (OPT's fc1 and fc2).
FFN_MODULES = ("mlp", "feed_forward", "ffn", "fc1", "fc2")
TEXT_BATCH = 64  # sequences sampled together: on a CPU, 64 writes ~1.6x the tokens per second of 16


@dataclass(frozen=True)
class HealConfig:
    """How the student is trained. `steps` = tokens // (batch_size * length), each step one batch."""

    tokens: int = 32768  # training tokens, repeats counted: the text is cycled when shorter than this
    length: int = 128  # tokens per training sequence; the text's rows are cut into pieces of this length
    batch_size: int = 4  # sequences per optimizer step
    lr: float = 1e-4  # AdamW peak learning rate
    schedule: Schedule = "cosine"  # cosine decay from lr towards 0 over the steps, or constant lr
    warmup_steps: int = 0  # linear warm-up steps before the schedule
    weight_decay: float = 0.0  # AdamW decoupled decay; 0 keeps the pull towards the teacher alone
    max_grad_norm: float | None = 1.0  # gradient clipping over the trained parameters; None: no clipping
    # Which parameters train: FFN matrices + norms, FFN, norms, all, or lora: a rank-`lora_rank` update of
    # every FFN matrix (merged into it afterwards) + the FFN's biases and the norms.
    train: Train = "ffn_norms"
    lora_rank: int = 16
    top_k: int = 0  # 0: the teacher's full logits per batch; k > 0: cached top-k log-probs + the rest mass
    seed: int = 0  # the order of the sequences; same seed, same text -> identical weights
    # The forward passes' matrix products (student and teacher): float32, or bfloat16 under autocast, or auto
    # (`resolved_precision`). The weights, their updates and the KL stay float32 either way.
    precision: Precision = "auto"

    @property
    def steps(self) -> int:
        return self.tokens // (self.batch_size * self.length)

    def validate(self) -> HealConfig:
        for name in ("tokens", "length", "batch_size", "warmup_steps", "top_k", "seed", "lora_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"heal {name} must be an int, got {type(value).__name__} {value!r}")
        for name in ("lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if name == "max_grad_norm" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"heal {name} must be a number, got {type(value).__name__} {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"heal {name}={value!r} must be finite")
        if self.length < 2:
            raise ValueError(f"heal length={self.length!r} must be at least 2 tokens (one to predict)")
        if self.batch_size < 1:
            raise ValueError(f"heal batch_size={self.batch_size!r} must be at least 1")
        if self.lora_rank < 1:
            raise ValueError(f"heal lora_rank={self.lora_rank!r} must be at least 1")
        if self.tokens < self.batch_size * self.length:
            raise ValueError(f"heal tokens={self.tokens!r} is less than one step of batch_size x length = "
                             f"{self.batch_size} x {self.length} = {self.batch_size * self.length}")
        if self.lr <= 0:
            raise ValueError(f"heal lr={self.lr!r} must be positive")
        if self.weight_decay < 0:
            raise ValueError(f"heal weight_decay={self.weight_decay!r} must not be negative")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"heal max_grad_norm={self.max_grad_norm!r} must be positive (or None: no clipping)")
        if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
            raise ValueError(f"heal warmup_steps={self.warmup_steps!r} must be in [0, steps={self.steps})")
        if self.top_k < 0:
            raise ValueError(f"heal top_k={self.top_k!r} must be 0 (full logits) or positive")
        if self.train not in TRAIN_CHOICES:
            raise ValueError(f"heal train={self.train!r} is not one of {', '.join(TRAIN_CHOICES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"heal schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"heal precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        return self

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based): warm-up, then cosine or constant."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return self.lr
        # The first step after warm-up uses the full lr and the last a small but non-zero one.
        done = (step - self.warmup_steps) / (self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * done))

    def as_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps}


@dataclass(frozen=True)
class TeacherTargets:
    """The teacher's reduced next-token distributions at every predicted position of every sequence.

    indices, logprobs: (S, L - 1, k) its k most likely tokens and their log-probabilities; rest: (S, L - 1)
    the log of the mass on every other token (computed from the logits, not as 1 - sum, so it stays exact
    when tiny). Position t predicts token t + 1 of sequence s of `chunks(tokens, L)`.
    """

    indices: torch.Tensor
    logprobs: torch.Tensor
    rest: torch.Tensor

    @property
    def top_k(self) -> int:
        return self.indices.shape[-1]

    def batch(self, rows: torch.Tensor, device: torch.device) -> TeacherTargets:
        return TeacherTargets(self.indices[rows].to(device, torch.long), self.logprobs[rows].to(device),
                              self.rest[rows].to(device))


def chunks(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """The (N, T) text cut into (N * (T // length), length) sequences; each row's remainder is dropped.

    Pieces after the first start mid-text, with no BOS, as evaluation windows cut from a document do.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise TypeError(f"tokens must be a 2-D (sequences, length) tensor, got "
                        f"{type(tokens).__name__} {tuple(getattr(tokens, 'shape', ()))}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.shape[1] < length:
        raise ValueError(f"the text's sequences hold {tokens.shape[1]} tokens, fewer than length={length}")
    per_row = tokens.shape[1] // length
    return tokens[:, : per_row * length].reshape(-1, length).long()


def parameter_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Parameter names by group: "ffn" (inside an FFN block), "norms" (of any *Norm module), "other"."""
    groups: dict[str, list[str]] = {"ffn": [], "norms": [], "other": []}
    owner: dict[int, str] = {}
    for module_name, module in model.named_modules():
        parts = module_name.split(".")
        is_ffn = any(part in FFN_MODULES for part in parts)
        is_norm = "norm" in type(module).__name__.lower()
        for name, param in module.named_parameters(prefix=module_name, recurse=False):
            if id(param) in owner:  # tied weights (embedding = LM head) count once, under the first name
                continue
            group = "ffn" if is_ffn and not is_norm else "norms" if is_norm else "other"
            owner[id(param)] = group
            groups[group].append(name)
    return groups


def trained_names(model: torch.nn.Module, train: str) -> list[str]:
    """The parameters `train` selects; for "lora", on a model whose FFN matrices carry `attach_low_rank`'s
    updates: the updates, not the frozen matrices under them."""
    groups = parameter_groups(model)
    if train == "lora":
        groups["ffn"] = [name for name in groups["ffn"] if not name.endswith(".original")]
    chosen = {"ffn_norms": ("ffn", "norms"), "ffn": ("ffn",), "norms": ("norms",),
              "all": ("ffn", "norms", "other"), "lora": ("ffn", "norms")}[train]
    names = [name for group in chosen for name in groups[group]]
    if not names:
        raise ValueError(f"train={train!r} selects no parameter of this model (no FFN block named one of "
                         f"{FFN_MODULES} or no *Norm module)")
    return names


class LowRankUpdate(torch.nn.Module):
    """A parametrization W -> W + up @ down: a rank-r update of a frozen matrix (LoRA, without its alpha/r
    scale, which only rescales the learning rate of Adam). `up` starts at zero, so the first step sees the
    sliced model itself."""

    def __init__(self, shape: torch.Size, rank: int, generator: torch.Generator):
        super().__init__()
        rows, columns = shape
        self.down = torch.nn.Parameter(torch.randn(rank, columns, generator=generator) / math.sqrt(columns))
        self.up = torch.nn.Parameter(torch.zeros(rows, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.up @ self.down


def attach_low_rank(model: torch.nn.Module, rank: int, seed: int) -> list[tuple[torch.nn.Module, str]]:
    """Put a seeded `LowRankUpdate` of rank `rank` on every FFN matrix; returns (module, parameter name)
    pairs for `merge_low_rank`."""
    from torch.nn.utils import parametrize

    generator = torch.Generator().manual_seed(seed)
    attached = []
    for name in parameter_groups(model)["ffn"]:
        module_name, _, param_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        weight = getattr(module, param_name)
        if weight.ndim != 2:  # biases train whole
            continue
        update = LowRankUpdate(weight.shape, min(rank, *weight.shape), generator).to(weight.device)
        parametrize.register_parametrization(module, param_name, update)
        attached.append((module, param_name))
    return attached


def merge_low_rank(attached: list[tuple[torch.nn.Module, str]]) -> None:
    """Fold each update into its matrix and remove it: the model has its own modules and names again."""
    from torch.nn.utils import parametrize

    with torch.no_grad():
        for module, param_name in attached:
            parametrize.remove_parametrizations(module, param_name, leave_parametrized=True)


def reduced_kl(student_logits: torch.Tensor, targets: TeacherTargets) -> torch.Tensor:
    """Per position, KL over {top-k tokens, any other token} of teacher || student; (..., ) float32."""
    logits = student_logits.float()
    total = torch.logsumexp(logits, dim=-1)
    top = logits.gather(-1, targets.indices) - total[..., None]
    # The student's log-mass outside the teacher's top k, from the logits with those k masked out.
    rest = torch.logsumexp(logits.scatter(-1, targets.indices, float("-inf")), dim=-1) - total
    p_top = targets.logprobs.exp()
    p_rest = targets.rest.exp()
    return (p_top * (targets.logprobs - top)).sum(-1) + p_rest * (targets.rest - rest)


def full_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per position, KL(teacher || student) over the whole vocabulary; (..., ) float32."""
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _logits(model: torch.nn.Module, batch: torch.Tensor, precision: Precision = "float32") -> torch.Tensor:
    """Next-token logits of positions 0..L-2 of a (B, L) batch: (B, L - 1, V), float32.

    `precision` bfloat16 runs the forward under autocast: its matrix products in bfloat16 (1.5x the speed of
    a training step on a 2-core CPU with bfloat16 units), the rest and the gradients' accumulation in the
    float32 weights."""
    device = batch.device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
    return logits.float()


def has_bfloat16_units(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively (a GPU's, or a CPU's AVX-512 / AMX units)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(supported is not None and supported())
    return False


def resolved_precision(precision: Precision, device: torch.device) -> Precision:
    """The precision the forward passes run in on `device`: auto is bfloat16 where it has bfloat16 units.

    Where it has none, autocast emulates bfloat16: a forward and backward pass of the embedded model took
    5.0 + 52.3 s in bfloat16 against 0.85 + 0.85 s in float32 on a 2-core CPU with AVX2 only, while one with
    the units ran a training step in 0.59x the float32 time.
    """
    if precision == "auto":
        return "bfloat16" if has_bfloat16_units(device) else "float32"
    if precision == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"heal precision 'bfloat16' needs a GPU with bfloat16 units, and {device} has none: "
                         "use precision 'float32' (--heal-precision float32)")
    return precision


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def teacher_targets(teacher: torch.nn.Module, tokens: torch.Tensor, length: int, top_k: int,
                    batch_size: int = 4, progress: bool = False, precision: Precision = "auto") -> TeacherTargets:
    """The teacher's top-k targets for every sequence of `chunks(tokens, length)`, computed once."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive int")
    sequences = chunks(tokens, length)
    vocab = getattr(getattr(teacher, "config", None), "vocab_size", None)
    if vocab is not None and top_k >= vocab:
        raise ValueError(f"top_k={top_k!r} must be below the vocabulary size {vocab} (use top_k=0 for full logits)")
    device, was_training = _device(teacher), teacher.training
    precision = resolved_precision(precision, device)
    teacher.eval()
    indices, logprobs, rest = [], [], []
    try:
        batches = sequences.split(batch_size)
        for batch in progress_bar(batches, desc="teacher top-k", unit="batch", disable=not progress):
            log_p = torch.log_softmax(_logits(teacher, batch.to(device), precision), dim=-1)
            values, where = log_p.topk(top_k, dim=-1)
            indices.append(where.to("cpu", torch.int32))
            logprobs.append(values.cpu())
            rest.append(torch.logsumexp(log_p.scatter(-1, where, float("-inf")), dim=-1).cpu())
    finally:
        teacher.train(was_training)
    return TeacherTargets(torch.cat(indices), torch.cat(logprobs), torch.cat(rest))


@torch.no_grad()
def distill_kl(student: torch.nn.Module, teacher: torch.nn.Module, tokens: torch.Tensor, length: int | None = None,
               batch_size: int = 4) -> float:
    """Mean KL(teacher || student) per predicted position over the text (e.g. held-out teacher text)."""
    sequences = chunks(tokens, length or tokens.shape[1])
    device, modes = _device(student), (student.training, teacher.training)
    student.eval(), teacher.eval()
    total, count = 0.0, 0
    try:
        for batch in sequences.split(batch_size):
            batch = batch.to(device)
            kl = full_kl(_logits(student, batch), _logits(teacher, batch.to(_device(teacher))).to(device))
            total += kl.double().sum().item()
            count += kl.numel()
    finally:
        student.train(modes[0]), teacher.train(modes[1])
    return total / count


def _order(sequences: int, needed: int, seed: int) -> Iterator[torch.Tensor]:
    """Sequence indices, a fresh seeded permutation every pass over the text, `needed` in all."""
    generator = torch.Generator().manual_seed(seed)
    left = needed
    while left > 0:
        perm = torch.randperm(sequences, generator=generator)[:left]
        left -= len(perm)
        yield perm


def heal(student: torch.nn.Module, teacher: torch.nn.Module, tokens: torch.Tensor, config: HealConfig,
         progress: bool = False, targets: TeacherTargets | None = None) -> dict:
    """Train `student` in place towards `teacher` on `tokens` (N, T); return a report.

    AdamW in the student's own dtype, which must be float32 (bf16 weights would round most small updates
    away). The teacher runs under no_grad on the student's device. With `config.top_k` > 0 the reduced
    targets are computed once up front, or taken from `targets` (from `teacher_targets` with the same
    text, length and top_k), so several students can share one teacher pass.
    Report: precision (the one the forward passes ran in), steps, tokens (trained, repeats counted), epochs
    over the text, seconds (training),
    teacher_seconds (the up-front top-k pass), kl_first (the first batch before any update), kl_last (the
    last batch), kl_steps (every step's batch KL; reduced KL when top_k > 0), trained_parameters.
    """
    if not isinstance(config, HealConfig):
        raise TypeError(f"config must be a HealConfig, got {type(config).__name__}")
    config.validate()
    sequences = chunks(tokens, config.length)
    floating = {p.dtype for p in student.parameters() if p.is_floating_point()}
    if floating != {torch.float32}:
        raise TypeError(f"heal trains the student in float32; its parameters are {sorted(map(str, floating))} "
                        "(load it with dtype=torch.float32)")
    device = _device(student)
    precision = resolved_precision(config.precision, device)
    head = getattr(student, "get_output_embeddings", lambda: None)()
    vocab = head.weight.shape[0] if head is not None else None
    if config.top_k and vocab is not None and config.top_k >= vocab:
        raise ValueError(f"heal top_k={config.top_k!r} must be below the vocabulary size {vocab}")
    teacher_seconds = 0.0
    if config.top_k:
        if targets is None:
            start = time.perf_counter()
            targets = teacher_targets(teacher, tokens, config.length, config.top_k, config.batch_size, progress,
                                      precision)
            teacher_seconds = time.perf_counter() - start
        elif targets.indices.shape[:2] != (sequences.shape[0], config.length - 1) or targets.top_k != config.top_k:
            raise ValueError(f"targets of shape {tuple(targets.indices.shape)} do not match the text's "
                             f"({sequences.shape[0]}, {config.length - 1}, {config.top_k})")
    elif targets is not None:
        raise ValueError("targets were given but config.top_k=0 asks for the teacher's full logits")

    flags = {name: p.requires_grad for name, p in student.named_parameters()}
    modes = (student.training, teacher.training)
    needed = config.steps * config.batch_size
    order = torch.cat(list(_order(sequences.shape[0], needed, config.seed)))
    kl_steps: list[float] = []
    attached: list[tuple[torch.nn.Module, str]] = []
    params: list[torch.nn.Parameter] = []
    bar = progress_bar(total=config.steps, desc=f"heal ({config.train})", unit="step", disable=not progress)
    try:
        if config.train == "lora":
            attached = attach_low_rank(student, config.lora_rank, config.seed)
        names = set(trained_names(student, config.train))
        for name, param in student.named_parameters():  # tied weights appear once, under their first name
            param.requires_grad_(name in names)
            if name in names:
                params.append(param)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        # No dropout and a fixed teacher: the student follows one deterministic function, reproducibly.
        student.eval(), teacher.eval()
        start = time.perf_counter()
        for step in range(config.steps):
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = sequences[rows].to(device)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            logits = _logits(student, batch, precision)
            if targets is not None:  # set exactly when config.top_k > 0
                kl = reduced_kl(logits, targets.batch(rows, device))
            else:
                with torch.no_grad():
                    reference = _logits(teacher, batch.to(_device(teacher)), precision).to(device)
                kl = full_kl(logits, reference)
                del reference
            loss = kl.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            kl_steps.append(loss.item())
            recent = kl_steps[-10:]
            bar.set_postfix(kl=f"{sum(recent) / len(recent):.4f}", refresh=False)
            bar.update()
            del logits, kl, loss
    finally:
        bar.close()
        for param in params:
            param.grad = None
        merge_low_rank(attached)
        for name, param in student.named_parameters():
            param.requires_grad_(flags[name])
        student.train(modes[0]), teacher.train(modes[1])
    seconds = time.perf_counter() - start
    trained_tokens = needed * config.length
    return {
        "config": config.as_dict(),
        "precision": precision,
        "steps": config.steps,
        "tokens": trained_tokens,
        "text_sequences": sequences.shape[0],
        "epochs": round(needed / sequences.shape[0], 3),
        "seconds": round(seconds, 2),
        "teacher_seconds": round(teacher_seconds, 2),
        "tokens_per_second": round(trained_tokens / seconds, 1) if seconds > 0 else None,
        "kl_first": kl_steps[0],
        "kl_last": kl_steps[-1],
        "kl_steps": [round(v, 5) for v in kl_steps],
        "kl_kind": f"reduced (top-{config.top_k} + rest)" if config.top_k else "full",
        "trained_parameters": sum(p.numel() for p in params),
        "trained_tensors": len(params),
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def teacher_text(teacher: torch.nn.Module, tokenizer, sequences: int, length: int, seed: int,
                 progress: bool = False, batch_size: int = TEXT_BATCH) -> torch.Tensor:
    """(sequences, length) int64 tokens the teacher samples itself: temperature 1, no top-k or top-p.

    Each sequence starts from the tokenizer's BOS, so the model picks its own first word; without a BOS,
    from a random non-special token. End-of-sequence is suppressed, so every sequence is full length.
    Sequences whose distinct-token share is below probes.DEGENERATE_SHARE are sampled again, once. Seeded: the
    same seed and batch_size give the same text on the same machine. The probes' own sampler writes it.
    """
    for name, value, minimum in (("sequences", sequences, 1), ("length", length, 2), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"teacher_text {name} must be an int, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise ValueError(f"teacher_text {name}={value!r} must be at least {minimum}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"teacher_text seed must be an int, got {type(seed).__name__} {seed!r}")
    if not hasattr(teacher, "generate"):
        raise TypeError(f"teacher_text needs a generating model (a transformers model), got {type(teacher).__name__}")
    was_training = teacher.training
    try:
        return generate(teacher.eval(), tokenizer, ProbePlan(SELF, sequences * length, length, seed), progress,
                        batch=batch_size)
    finally:
        teacher.train(was_training)


__all__ = ["HealConfig", "LowRankUpdate", "TeacherTargets", "attach_low_rank", "chunks", "distill_kl", "full_kl",
           "heal", "merge_low_rank", "parameter_groups", "reduced_kl", "teacher_targets", "teacher_text",
           "trained_names"]
