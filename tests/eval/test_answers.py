"""The "it still answers" check: rules that can fail, code that is really run, and `eval --answers` end to end."""
from __future__ import annotations

import pytest
from tiny_models import build_model, save_model

from prunenet.cli import main
from prunenet.eval import evaluate
from prunenet.eval.answers import PROMPTS, Prompt, code_of, is_right, kept_share, passes

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


def test_eval_answers_end_to_end(tmp_path, capsys):
    src = save_model(build_model("llama"), tmp_path / "src")
    assert main(["compress", str(src), "--ratio", "0.3", "--selector", "random", "--repair", "none",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 0
    report = evaluate(src, [tmp_path / "c"], tokens=64, window=32, throughput=False, answers=True)
    original, compressed = report["models"]
    assert len(original["answers"]) == len(PROMPTS) and all(isinstance(a["right"], bool) for a in original["answers"])
    assert compressed["answers_right"] == sum(a["right"] for a in compressed["answers"])
    assert main(["eval", str(src), str(tmp_path / "c"), "--tokens", "64", "--window", "32", "--no-throughput",
                 "--answers"]) == 0
    printed = capsys.readouterr().out
    assert "What is the capital of France?" in printed and f"of {len(PROMPTS)}" in printed
