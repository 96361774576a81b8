"""Does the model still answer? Short questions through the chat template, greedy decoding, checked by rule.

Facts and sums are right when the answer holds an expected word or number; code tasks are right when the
function in the answer passes a test, run in a separate Python process with a time limit (the model's code
is run on this machine: that is the check). Perplexity can look tolerable while simple facts go wrong;
this says which.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

CODE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Prompt:
    kind: str  # "fact", "sum", "code" or "summary"
    text: str
    expect: tuple[str, ...] = ()  # right if any of these is a word of the answer (case ignored): "4", not "14"
    test: str = ""  # code: a Python assertion on `{f}`, the first function the answer defines


PROMPTS: tuple[Prompt, ...] = (
    Prompt("fact", "What is the capital of France?", ("paris",)),
    Prompt("fact", "What is the capital of Japan?", ("tokyo",)),
    Prompt("fact", "What is the capital of Italy?", ("rome",)),
    Prompt("fact", "Which planet is the largest in our solar system?", ("jupiter",)),
    Prompt("fact", "What is the chemical formula of water?", ("h2o", "h₂o")),
    Prompt("fact", "How many days are there in a week?", ("7", "seven")),
    Prompt("fact", "Who wrote Romeo and Juliet?", ("shakespeare",)),
    Prompt("fact", "What colour is the sky on a clear day?", ("blue",)),
    Prompt("fact", "What is the opposite of hot?", ("cold",)),
    Prompt("fact", "At what temperature in degrees Celsius does water freeze?", ("0", "zero")),
    Prompt("fact", "What is the capital of Germany?", ("berlin",)),
    Prompt("fact", "What is the capital of Spain?", ("madrid",)),
    Prompt("fact", "What is the largest ocean on Earth?", ("pacific",)),
    Prompt("fact", "How many legs does a spider have?", ("8", "eight")),
    Prompt("fact", "Which gas do plants take in from the air to make food?", ("carbon dioxide", "co2")),
    Prompt("fact", "Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    Prompt("fact", "How many continents are there on Earth?", ("7", "seven")),
    Prompt("fact", "At what temperature in degrees Celsius does water boil at sea level?", ("100",)),
    Prompt("fact", "Which animal is known as the king of the jungle?", ("lion",)),
    Prompt("fact", "Which language is spoken in Brazil?", ("portuguese",)),
    Prompt("sum", "What is 2 + 2?", ("4", "four")),
    Prompt("sum", "What is 7 times 8?", ("56",)),
    Prompt("sum", "What is 15 minus 6?", ("9", "nine")),
    Prompt("sum", "What is 100 divided by 4?", ("25",)),
    Prompt("sum", "What is 12 plus 30?", ("42",)),
    Prompt("sum", "What is 3 + 5?", ("8", "eight")),
    Prompt("sum", "What is 9 minus 4?", ("5", "five")),
    Prompt("sum", "What is 6 times 7?", ("42",)),
    Prompt("sum", "What is 10 plus 10?", ("20", "twenty")),
    Prompt("sum", "What is half of 50?", ("25",)),
    Prompt("code", "Write a Python function that reverses a string.", test="assert {f}('abc') == 'cba'"),
    Prompt("code", "Write a Python function that returns the sum of a list of numbers.",
           test="assert {f}([1, 2, 3.5]) == 6.5"),
    Prompt("code", "Write a Python function that returns the larger of two numbers.",
           test="assert {f}(3, 9) == 9 and {f}(9, 3) == 9"),
    Prompt("code", "Write a Python function that checks whether a number is even.",
           test="assert {f}(4) and not {f}(7)"),
    Prompt("code", "Write a Python function that computes the factorial of n.", test="assert {f}(5) == 120"),
    Prompt("code", "Write a Python function that returns the length of a string.", test="assert {f}('abcd') == 4"),
    Prompt("code", "Write a Python function that returns the largest number in a list.",
           test="assert {f}([3, 9, 2]) == 9"),
    Prompt("code", "Write a Python function that returns the square of a number.", test="assert {f}(7) == 49"),
    Prompt("code", "Write a Python function that counts the vowels in a string.",
           test="assert {f}('banana') == 3"),
    Prompt("code", "Write a Python function that converts a string to upper case.",
           test="assert {f}('abc') == 'ABC'"),
    Prompt("summary", "Summarise in one sentence: The cat slept on the warm mat all afternoon while the rain "
                      "fell outside.", ("cat",)),
    Prompt("summary", "Summarise in one sentence: The train left the station at noon and reached the city two "
                      "hours later, full of tired travellers.", ("train",)),
)


def code_of(answer: str) -> str:
    """The answer's Python: its first fenced block, else everything from its first `def`."""
    fenced = re.search(r"```(?:python|py)?\s*\n(.*?)```", answer, re.DOTALL)
    if fenced:
        return fenced.group(1)
    start = answer.find("def ")
    return answer[start:] if start >= 0 else ""


def passes(code: str, test: str) -> bool:
    """Whether the first function `code` defines passes `test`, in a fresh interpreter within the time limit."""
    name = re.search(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, re.MULTILINE)
    if name is None:
        return False
    program = f"{code}\n\n{test.format(f=name.group(1))}\n"
    try:
        done = subprocess.run([sys.executable, "-I", "-c", program], capture_output=True, timeout=CODE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def is_right(prompt: Prompt, answer: str) -> bool:
    if prompt.kind == "code":
        return passes(code_of(answer), prompt.test)
    text = answer.lower()
    return any(re.search(rf"(?<![\w.]){re.escape(word)}(?!\w|\.\d)", text) for word in prompt.expect)


def _input_ids(tokenizer, question: str) -> torch.Tensor:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(question, return_tensors="pt")["input_ids"]
    return ids


@torch.inference_mode()
def answer_all(model: torch.nn.Module, tokenizer, prompts: tuple[Prompt, ...] = PROMPTS,
               max_new_tokens: int = 96, advance: Callable[[int], object] | None = None) -> list[dict]:
    """Each prompt's greedy answer, whether it is right, and its token ids (`ids`, the end of turn included
    when it came); `advance(1)` after each (a progress bar's)."""
    device = next(model.parameters()).device
    results = []
    for prompt in prompts:
        ids = _input_ids(tokenizer, prompt.text).to(device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        answer_ids = out[0, ids.shape[1]:]
        answer = tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
        results.append({"kind": prompt.kind, "prompt": prompt.text, "answer": answer,
                        "right": is_right(prompt, answer), "ids": answer_ids.tolist()})
        if advance is not None:
            advance(1)
    return results


@torch.inference_mode()
def follows(model: torch.nn.Module, tokenizer, reference_ids: list[list[int]],
            prompts: tuple[Prompt, ...] = PROMPTS) -> dict:
    """How closely `model` follows another model's answers (`reference_ids`: their token ids, from
    `answer_all`), fed those tokens: the share of them that are its own greedy choice too, and their mean
    negative log-likelihood. Unlike right-or-wrong, every token counts, so one changed word is not a lost
    question."""
    device = next(model.parameters()).device
    same, nll, tokens = 0, 0.0, 0
    for prompt, ids in zip(prompts, reference_ids, strict=True):
        question = _input_ids(tokenizer, prompt.text)[0]
        answer = torch.tensor(ids, dtype=question.dtype)
        logits = model(torch.cat([question, answer])[None].to(device)).logits[0, question.numel() - 1: -1].float()
        answer = answer.to(device)
        same += int((logits.argmax(-1) == answer).sum())
        nll += float(torch.nn.functional.cross_entropy(logits, answer, reduction="sum"))
        tokens += answer.numel()
    return {"answers_agreement": same / tokens, "answers_nll": nll / tokens, "answers_tokens": tokens}


def kept_share(original: list[dict], compressed: list[dict]) -> float | None:
    """Of the prompts the original answers right, the share the compressed model still answers right."""
    right = [i for i, entry in enumerate(original) if entry["right"]]
    if not right:
        return None
    return sum(compressed[i]["right"] for i in right) / len(right)
