"""The "it still answers" check: rules that can fail, code that is really run, and `eval --answers` end to end."""
from __future__ import annotations

import functools

import pytest
from helpers import read_json
from tiny_models import build_model, save_model, tiny_tokenizer

from prunenet.cli import main
from prunenet.eval import evaluation
from prunenet.eval.answers import PROMPTS, Prompt, answer_all, code_of, follows, is_right, kept_share, passes

FRANCE = next(p for p in PROMPTS if "France" in p.text)
REVERSE = next(p for p in PROMPTS if "reverses a string" in p.text)


def test_the_prompt_set_covers_what_a_user_asks_first():
    kinds = {p.kind for p in PROMPTS}
    assert len(PROMPTS) >= 20 and kinds == {"fact", "sum", "code", "summary"}
    assert all((p.kind == "code") == bool(p.test) and (p.kind == "code" or p.expect) for p in PROMPTS)


@pytest.mark.parametrize("prompt, answer, right", [
    (FRANCE, "The capital of France is Paris.", True),
    (FRANCE, "Paris is the largest city in the south of France", True),
    (FRANCE, "It is the largest city in the world, in the south of France.", False),
    (Prompt("sum", "What is 2 + 2?", ("4",)), "2 + 2 = 4", True),
    (Prompt("sum", "What is 2 + 2?", ("4",)), "The answer is 14.", False),
    (Prompt("sum", "What is 2 + 2?", ("4",)), "It is 4.5", False),
    (REVERSE, "```python\ndef reverse_string(s):\n    return s[::-1]\n```\nIt slices backwards.", True),
    (REVERSE, "def reverse_string(string, str): str[::-1]\nWhat is the function?", False),
    (REVERSE, "Use slicing.", False),
])
def test_answers_are_checked_by_rule(prompt, answer, right):
    assert is_right(prompt, answer) is right


# A right answer to every code task, as a model would write it: each task's test must accept it.
REFERENCE_CODE = {
    "reverses a string": "def rev(s):\n    return s[::-1]",
    "sum of a list": "def total(xs):\n    return sum(xs)",
    "larger of two": "def larger(a, b):\n    return a if a > b else b",
    "is even": "def is_even(n):\n    return n % 2 == 0",
    "factorial": "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)",
    "length of a string": "def length(s):\n    return len(s)",
    "largest number": "def largest(xs):\n    return max(xs)",
    "square": "def square(x):\n    return x * x",
    "vowels": "def vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())",
    "upper case": "def up(s):\n    return s.upper()",
}


@pytest.mark.parametrize("prompt", [p for p in PROMPTS if p.kind == "code"], ids=lambda p: p.text[28:60])
def test_every_code_task_accepts_a_right_answer_and_refuses_a_wrong_one(prompt):
    code = next(code for key, code in REFERENCE_CODE.items() if key in prompt.text)
    assert is_right(prompt, f"Here it is:\n```python\n{code}\n```")
    assert not is_right(prompt, "```python\ndef f(*args):\n    return None\n```")


def test_code_is_run_in_its_own_process_with_a_time_limit(monkeypatch):
    assert code_of("Here:\n```py\ndef f(x):\n    return x\n```") == "def f(x):\n    return x\n"
    assert passes("def f(x):\n    return x + 1", "assert {f}(1) == 2")
    assert not passes("def f(x):\n    raise SystemExit(3)", "assert {f}(1) == 2")
    monkeypatch.setattr("prunenet.eval.answers.CODE_TIMEOUT_S", 0.5)
    assert not passes("def f(x):\n    while True:\n        pass", "assert {f}(1)")


def test_kept_share_counts_only_what_the_original_got_right():
    original = [{"right": True}, {"right": True}, {"right": False}]
    assert kept_share(original, [{"right": True}, {"right": False}, {"right": True}]) == 0.5
    assert kept_share([{"right": False}], [{"right": True}]) is None


def test_eval_answers_end_to_end(tmp_path, capsys, monkeypatch):
    # Short answers: a random tiny model never stops by itself, and the plumbing is what is tested here.
    monkeypatch.setattr(evaluation, "answer_all", functools.partial(answer_all, max_new_tokens=8))
    src = save_model(build_model("llama"), tmp_path / "src")
    assert main(["compress", str(src), "--ratio", "0.3", "--selector", "random", "--repair", "none",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(src), str(tmp_path / "c"), "--tokens", "64", "--window", "32", "--no-throughput",
                 "--answers", "--json", str(tmp_path / "eval.json")]) == 0
    captured = capsys.readouterr()
    assert "What is the capital of France?" in captured.out and f"of {len(PROMPTS)}" in captured.out
    steps = 2 * (2 + len(PROMPTS))  # two models: two windows of 32 tokens and every question each
    assert f"{steps}/{steps}" in captured.err  # the questions count in the progress bar
    original, compressed = read_json(tmp_path / "eval.json")["models"]
    assert len(original["answers"]) == len(PROMPTS) and all(isinstance(a["right"], bool) for a in original["answers"])
    assert compressed["answers_right"] == sum(a["right"] for a in compressed["answers"])
    assert "ids" not in original["answers"][0] and "answers_agreement" not in original
    assert 0 <= compressed["answers_agreement"] <= 1 and compressed["answers_nll"] > 0
    assert compressed["answers_tokens"] == len(PROMPTS) * 8  # a random tiny model never ends its turn
    assert "same greedy token as the original" in captured.out


def test_a_model_follows_its_own_answers_and_a_pruned_one_less():
    tokenizer, model = tiny_tokenizer(), build_model("llama").eval()
    prompts = PROMPTS[:4]
    own = answer_all(model, tokenizer, prompts, max_new_tokens=12)
    own_ids = [answer["ids"] for answer in own]
    itself = follows(model, tokenizer, own_ids, prompts)
    assert itself["answers_tokens"] == 4 * 12
    assert itself["answers_agreement"] > 0.95  # greedy decoding picked these: only float ties may differ
    other = follows(build_model("llama", seed=1).eval(), tokenizer, own_ids, prompts)
    assert other["answers_agreement"] < 0.5 and other["answers_nll"] > itself["answers_nll"]
