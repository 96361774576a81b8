"""Probe tokens: text the model writes itself (no user data), or a user's own text file.

Self-written probes: N sequences of T tokens sampled (at temperature 1 unless asked) with the KV
cache, batched and seeded. Each sequence starts from the tokenizer's BOS token where it has one, so the
model picks its own first word (from random first tokens a large-vocabulary model may repeat one rare
token forever); without a BOS, from a random non-special token. End-of-sequence is suppressed, so every
sequence has its full length. Sequences whose share of distinct tokens is below `DEGENERATE_SHARE` are
sampled again (once). The tokens are cached under the prunenet cache, keyed by the checkpoint's
fingerprint and the options, so later runs skip generation.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..config import DEFAULT_PROBE_LENGTH, SELF, ProbeConfig
from ..model import resolve_model
from ..model.checkpoint import CONFIG, Checkpoint
from ..progress import progress_bar

DEGENERATE_SHARE = 0.1  # distinct tokens / length below which a sampled sequence is thrown away
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
# Sequences per `generate` call: as many as this many bytes of KV cache hold (all 64 of the default budget
# on the embedded model). One call of 64 with transformers' static cache writes 1.6-1.9x the tokens/s of
# the 16 per call with a dynamic cache that probes were written with until now (bench/test_bench_probes.py).
KV_CACHE_BUDGET = 2 * 2**30
# In the cache key and the probes' info: probes written 16 per call (the sampler before) are other text for
# the same seed, so an output made from them is not what the same options give now.
SAMPLER = "kv-budget-static"
PASS_BATCH = 8  # sequences per micro-batch of the statistics pass
QUESTION_TOKENS = 32  # at most, of the user turn a chat-start probe writes before its answer
_KEYED_AWAY_FROM_DEFAULT = {"temperature": 1.0, "start": "bos"}  # in a cache key only when not at these


@dataclass(frozen=True)
class ProbePlan:
    """The probes one run takes: its options with the sequence length resolved against the model."""

    source: str
    tokens: int  # the budget
    length: int  # tokens per sequence
    seed: int
    temperature: float = 1.0
    start: str = "bos"
    dtype: str = "auto"

    @property
    def sequences(self) -> int:
        return self.tokens // self.length


def plan_probes(config: ProbeConfig, seed: int, model_config: dict) -> ProbePlan:
    """Tokens per sequence as asked, else DEFAULT_PROBE_LENGTH, never past the model's context."""
    context = next((int(model_config[key]) for key in _CONTEXT_KEYS if model_config.get(key)), None)
    if context is not None and config.source == SELF and config.start == "chat":
        # A batch's rows are left-padded to its longest prompt, and the questions differ by up to their bound.
        context -= QUESTION_TOKENS
    length = config.length
    if length is None:
        length = DEFAULT_PROBE_LENGTH if context is None else min(DEFAULT_PROBE_LENGTH, context)
    elif context is not None and length > context:
        room = "" if config.start != "chat" else f" (less {QUESTION_TOKENS} for chat-start questions)"
        raise ValueError(f"probe length {length} exceeds the model's context of {context} tokens{room}")
    replace(config, length=length).validate()
    return ProbePlan(config.source, config.tokens, length, seed, config.temperature, config.start, config.dtype)


@dataclass
class Probes:
    tokens: torch.Tensor  # (N, T) int64
    info: dict  # source, shape, distinct-token share, seconds, cached


def fingerprint(checkpoint: Checkpoint) -> str:
    """A content key of a checkpoint that reads no weights: config, shard headers and sizes.

    Unlike the farm's job key (`farm.plan.fingerprint`, which adds modification times so that a touched
    model is redone), it ignores mtimes: a copied checkpoint shares its probe cache."""
    digest = hashlib.sha256((checkpoint.path / CONFIG).read_bytes())
    for shard in checkpoint.shards:
        path = checkpoint.path / shard
        digest.update(shard.encode())
        digest.update(str(path.stat().st_size).encode())
        digest.update(json.dumps(checkpoint.headers[shard], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def load_tokenizer(checkpoint: Checkpoint):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(checkpoint.path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"probes need the model's tokenizer, and {str(checkpoint.path)!r} has none usable "
                         f"({type(exc).__name__}); add its tokenizer files") from None


def probe_writer(config: ProbeConfig, tokenizer, progress: bool) -> Checkpoint:
    """The checkpoint of `config.model`, the model asked to write the probes; it must share the tokenizer, so
    that its probes are in the token ids of the model they calibrate."""
    assert config.model is not None
    writer = Checkpoint(resolve_model(config.model, progress))
    if tokenizer.get_vocab() != load_tokenizer(writer).get_vocab():
        raise ValueError(f"probe model {config.model!r} has another tokenizer than the model it writes probes for; "
                         "it must share the vocabulary (e.g. a smaller model of the same family)")
    return writer


def probe_batches(tokens: torch.Tensor, size: int = PASS_BATCH) -> list[torch.Tensor]:
    """Micro-batches of probe sequences for the statistics pass."""
    return list(tokens.split(size))


def distinct_share(tokens: torch.Tensor) -> torch.Tensor:
    """Per sequence: distinct tokens / length."""
    return torch.tensor([row.unique().numel() / row.numel() for row in tokens])


def get_probes(
    checkpoint: Checkpoint,
    config: ProbeConfig,
    seed: int,
    cache: Path,
    device: torch.device,
    progress: bool = False,
) -> Probes:
    """The probe tokens of `config` for `checkpoint`: from the cache, a file, or generated now."""
    options = plan_probes(config, seed, checkpoint.config)
    tokenizer = load_tokenizer(checkpoint)
    if options.source != SELF:
        tokens = tokens_from_file(Path(options.source), tokenizer, options)
        return Probes(tokens, _info(options, tokens, cached=False, seconds=0.0))
    writer = checkpoint if config.model is None else probe_writer(config, tokenizer, progress)
    key = {**asdict(options), "model": fingerprint(checkpoint), "degenerate_share": DEGENERATE_SHARE,
           "sampler": SAMPLER, "dtype": _name(writer_dtype(options.dtype))}
    for name, default in _KEYED_AWAY_FROM_DEFAULT.items():  # so probes cached before these options stay valid
        if key[name] == default:
            del key[name]
    if config.model is not None:
        key["writer"] = fingerprint(writer)
    if options.start == "chat":  # the fingerprint reads no tokenizer files, and the template shapes these probes
        key["chat_turn"] = chat_turn(tokenizer)
    path = cache / "probes" / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)  # the key names the sampler, so its info may too
        return Probes(saved["tokens"].long(), {**json.loads(saved["info"]), "sampler": SAMPLER, "cached": True})
    generator = load_generator(writer, device, writer_dtype(options.dtype))
    probes = _written(generator, tokenizer, options, progress, config.model)
    tokens = probes.tokens
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, True, lambda tmp: torch.save(
        {"tokens": tokens.to(torch.int32), "info": json.dumps(probes.info)}, tmp))
    return probes


def probes_of_model(model: torch.nn.Module, tokenizer, config: ProbeConfig, seed: int,
                    progress: bool = False) -> Probes:
    """The probe tokens of `config` for a loaded model: a file's text, or written by the model now (not cached:
    a loaded model has no checkpoint to key them by)."""
    if tokenizer is None:
        raise ValueError("probes need the model's tokenizer: pass tokenizer=... (or probes from a file need it too)")
    options = plan_probes(config, seed, model.config.to_dict())
    if options.source != SELF:
        tokens = tokens_from_file(Path(options.source), tokenizer, options)
        return Probes(tokens, _info(options, tokens, cached=False, seconds=0.0))
    if config.model is not None:
        generator = load_generator(probe_writer(config, tokenizer, progress), next(model.parameters()).device,
                                   writer_dtype(options.dtype))
        return _written(generator, tokenizer, options, progress, config.model)
    if options.dtype in ("auto", _name(next(model.parameters()).dtype)):
        return _written(model, tokenizer, options, progress)
    # Asked for another dtype than the model's: sample from a converted copy, the model itself left untouched.
    return _written(copy.deepcopy(model).to(writer_dtype(options.dtype)), tokenizer, options, progress)


def _written(model: torch.nn.Module, tokenizer, options: ProbePlan, progress: bool,
             writer: str | None = None) -> Probes:
    """Probes `model` writes now; `writer` names it in their info when it is not the model they calibrate."""
    start = time.perf_counter()
    tokens = generate(model, tokenizer, options, progress)
    info = {**_info(options, tokens, cached=False, seconds=time.perf_counter() - start),
            "dtype": _name(next(model.parameters()).dtype)}
    return Probes(tokens, info if writer is None else {**info, "writer": str(writer)})


def from_current_sampler(info: dict | None) -> bool:
    """False for the info of self-written probes of an earlier sampler (other text for the same options)."""
    return info is None or info.get("source") != SELF or info.get("sampler") == SAMPLER


def writer_dtype(name: str) -> torch.dtype:
    """The dtype probes are sampled in: `name`, or for auto bfloat16.

    Sampling is the one phase that reads the model in bfloat16 on a CPU as well: a 2-core CPU writes with it
    2.4x the tokens/s of float32 16 per call, and 1.4x that of float32 at the same batch and cache
    (bench/test_bench_probes.py), and on three seeds the models compressed from its probes were as good
    (pydoc PPL and KL against the original at 0.2 and 0.3 within the seed spread, medians a little lower).
    The checkpoints it reads are mostly bfloat16 already (the embedded model's cache is)."""
    return torch.bfloat16 if name == "auto" else getattr(torch, name)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_generator(checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The whole model, to write probes with; refused in one line where it does not fit."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=dtype).to(device).eval()
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        raise ValueError(f"probe generation needs the whole model on {device} and it does not fit ({exc}); "
                         "pass a text file with --probes FILE") from None


def sequences_per_call(model: torch.nn.Module, length: int, budget: int = KV_CACHE_BUDGET) -> int:
    """How many sequences of `length` tokens fit `budget` bytes of KV cache (at least 1): keys and values of
    every layer in the model's dtype, with grouped-query heads where the config names them."""
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    kv_heads = next((getattr(config, key) for key in ("num_key_value_heads", "num_kv_heads")
                     if getattr(config, key, None)), heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    per_sequence = 2 * config.num_hidden_layers * kv_heads * head_dim * length * next(model.parameters()).element_size()
    return max(1, budget // per_sequence)


def _info(options: ProbePlan, tokens: torch.Tensor, cached: bool, seconds: float) -> dict:
    share = distinct_share(tokens)
    return {
        "source": options.source, "sequences": tokens.shape[0], "length": tokens.shape[1],
        "tokens": tokens.numel(), "seed": options.seed,
        **({"temperature": options.temperature, "start": options.start, "sampler": SAMPLER}
           if options.source == SELF else {}),
        "distinct_share_mean": round(share.mean().item(), 4), "distinct_share_min": round(share.min().item(), 4),
        "seconds": round(seconds, 2), "cached": cached,
    }


def generate(model: torch.nn.Module, tokenizer, options: ProbePlan, progress: bool = False,
             batch: int | None = None, cache: str | None = "static") -> torch.Tensor:
    """Sample `options.sequences` sequences of `options.length` tokens from the model itself, `batch` per call
    (None: as many as KV_CACHE_BUDGET holds); `cache` is transformers' `cache_implementation` (None: its
    dynamic KV cache)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    device = next(model.parameters()).device
    if options.start == "chat":
        before, between = chat_turn(tokenizer)
    else:
        bos = tokenizer.bos_token_id
        if bos is None:
            special = set(tokenizer.all_special_ids)
            ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    prompt = QUESTION_TOKENS + len(before) if options.start == "chat" else 0
    batch = batch or sequences_per_call(model, prompt + options.length)
    bar = progress_bar(total=options.sequences * options.length, desc="probes: the model writes its own text",
                       unit="tok", disable=not progress)

    class _Progress(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            bar.update(input_ids.shape[0])
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    generator = torch.Generator().manual_seed(options.seed)
    sampling = dict(do_sample=True, temperature=options.temperature, top_k=0, top_p=1.0,
                    pad_token_id=tokenizer.pad_token_id or 0, **({"cache_implementation": cache} if cache else {}))

    def first_tokens(size: int) -> list[list[int]]:
        if bos is not None:
            return [[bos]] * size
        return ordinary[torch.randint(len(ordinary), (size,), generator=generator)][:, None].tolist()

    def questions(size: int) -> list[list[int]]:
        """User turns the model wrote (stopping at its end of turn), each followed by the answer's opening."""
        asked = model.generate(torch.tensor([before] * size, device=device),
                               attention_mask=torch.ones(size, len(before), dtype=torch.long, device=device),
                               max_new_tokens=QUESTION_TOKENS, **sampling)[:, len(before):].tolist()
        ends = set(_end_of_turn_ids(model, tokenizer))
        return [before + _until(question, ends) + between for question in asked]

    def sample(count: int) -> torch.Tensor:
        rows = []
        for start in range(0, count, batch):
            size = min(batch, count - start)
            prompts = None if options.start == "chat" else first_tokens(size)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                prompts = prompts or questions(size)
                shortest = min(len(p) for p in prompts)
                bar.update(size * min(shortest, options.length))
                if shortest >= options.length:
                    rows.append(torch.tensor([p[: options.length] for p in prompts]))
                    continue
                # Left-padded to one length: each row then reads as its prompt and what follows it.
                width = max(len(p) for p in prompts)
                ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
                new = options.length - shortest
                out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                     stopping_criteria=StoppingCriteriaList([_Progress()]), **sampling).cpu()
            rows.append(torch.stack([row[width - len(p):][: options.length] for row, p in zip(out, prompts)]))
        return torch.cat(rows)

    tokens = sample(options.sequences)
    bad = (distinct_share(tokens) < DEGENERATE_SHARE).nonzero().flatten()
    if len(bad):
        bar.total += len(bad) * options.length
        tokens[bad] = sample(len(bad))
    bar.close()
    return tokens


def chat_turn(tokenizer) -> tuple[list[int], list[int]]:
    """The chat template around one user message: the ids before it, and the ids between it and the answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("probe start 'chat' needs a chat template, and the model's tokenizer has none; "
                         "use probe start 'bos'")
    marker = "\uE000"  # a private-use character, never in a template
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                         add_generation_prompt=True)
    before, _, after = text.partition(marker)
    return (tokenizer(before, add_special_tokens=False)["input_ids"],
            tokenizer(after, add_special_tokens=False)["input_ids"])


def _end_of_turn_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    ends = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = [ends] if isinstance(ends, int) else list(ends or [])
    return ends + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def _until(ids: list[int], ends: set[int]) -> list[int]:
    """`ids` up to (not including) the first of `ends`."""
    for position, token in enumerate(ids):
        if token in ends:
            return ids[:position]
    return ids


def tokens_from_file(path: Path, tokenizer, options: ProbePlan) -> torch.Tensor:
    """Plain text, or JSONL with a "text" field per line, cut into sequences of `options.length` tokens."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"probe file {str(path)!r} is not UTF-8 text") from None
    if "\x00" in raw:
        raise ValueError(f"probe file {str(path)!r} is binary, not text")
    texts = _jsonl_texts(path, raw) if path.suffix == ".jsonl" else [raw]
    ids: list[int] = []
    for text in texts:
        if text.strip():
            ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None and len(texts) > 1:
                ids.append(tokenizer.eos_token_id)
        if len(ids) >= options.tokens:
            break
    usable = min(len(ids), options.tokens) // options.length * options.length
    if usable == 0:
        raise ValueError(f"probe file {str(path)!r} holds {len(ids)} tokens, fewer than one sequence of "
                         f"{options.length}")
    return torch.tensor(ids[:usable], dtype=torch.long).reshape(-1, options.length)


def _jsonl_texts(path: Path, raw: str) -> list[str]:
    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"probe file {str(path)!r} line {number} is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"probe file {str(path)!r} line {number} has no string field \"text\"")
        texts.append(record["text"])
    return texts

