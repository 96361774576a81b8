"""`prunenet farm` on a local Ray (2 CPUs, a small object store), tiny models made here.

One module-scoped Ray session serves every test that runs a farm; the tests of bad plans and of --dry-run
never start Ray. The session installs a worker set-up hook that kills a worker (SIGKILL) on the first
compress of a model whose marker file exists, so that a retry after a worker death can be observed.
Selector "magnitude" with repair "none": deterministic, no probes, so the farm's outputs can be compared
with plain `prunenet.compress`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_error, dead_pid, leftovers, read_json, snapshot
from tiny_models import FFN, VOCAB, build_model, corpus_tokenizer, save_model

import prunenet
from prunenet.cli import main
from prunenet.farm.jobs import EVAL_RECORD, JOB_RECORD, SCORES, plan_jobs
from prunenet.farm.plan import load_plan
from prunenet.farm.summary import table

ray = pytest.importorskip("ray")

RATIOS = [0.1, 0.3, 0.5]
OPTIONS = {"repair": "none"}
TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 4]])


def kill_switch(marker_dir: str):
    """A worker set-up hook: the first compress of model M in the session dies by SIGKILL if marker_dir/M exists."""
    def install():
        import os
        import signal
        from pathlib import Path

        import prunenet

        original = prunenet.compress

        def compress(model, *args, **kwargs):
            marker = Path(marker_dir) / Path(str(model)).name
            try:
                marker.rename(marker.with_suffix(".killed"))  # atomic: one task only consumes it
            except FileNotFoundError:
                return original(model, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        prunenet.compress = compress
    return install


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("farm-markers")


@pytest.fixture(scope="module")
def ray_session(markers):
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": kill_switch(str(markers))})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three tiny models of three families, the first with a tokenizer (for eval)."""
    root = tmp_path_factory.mktemp("farm-models")
    families = ["llama", "qwen2", "opt"]
    folders = [save_model(build_model(family, seed=i), root / family) for i, family in enumerate(families)]
    corpus_tokenizer().save_pretrained(folders[0])
    return folders


def write_plan(path: Path, out: Path, models, ratios=RATIOS, extra: str = "", **options) -> Path:
    lines = [f"out = {json.dumps(str(out))}", f"models = {json.dumps([str(m) for m in models])}",
             f"ratios = {json.dumps(ratios)}", 'selector = "magnitude"', extra, "[options]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in {**OPTIONS, **options}.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.ray
def test_three_models_land_reload_and_rerun_skips(ray_session, models, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out, summary = tmp_path / "runs", tmp_path / "summary.json"
    plan = write_plan(tmp_path / "plan.toml", out, models)
    assert main(["farm", str(plan), "--json", str(summary)]) == 0
    printed = capsys.readouterr().out
    report = read_json(summary)
    assert report["counts"] == {"done": 9}
    assert printed.count("done    ") == 9 and "9 jobs: 9 done" in printed
    csv_lines = summary.with_suffix(".csv").read_text().splitlines()
    assert len(csv_lines) == 10 and csv_lines[0].startswith("model,ratio,max_kl,status,output")
    for model in models:
        assert (out / model.name / SCORES).is_file()  # one scoring per model
        for ratio in RATIOS:
            folder = out / model.name / f"ratio-{ratio:g}"
            row = next(r for r in report["jobs"] if r["model"] == model.name and r["ratio"] == ratio)
            assert row["output"] == str(folder) and row["ffn_width_after"] == int((1 - ratio) * FFN)
            assert row["parameters_after"] < row["parameters_before"]
            loaded = AutoModelForCausalLM.from_pretrained(folder)
            assert loaded(TOKENS).logits.shape == (1, TOKENS.shape[1], VOCAB)
            assert read_json(folder / JOB_RECORD)["key"]["ratio"] == ratio
    # The farm's rows are the ones plain compress keeps with the same options.
    direct = tmp_path / "direct"
    prunenet.compress(models[2], direct, ratio=0.3, selector="magnitude", progress=False, **OPTIONS)
    farmed = read_json(out / models[2].name / "ratio-0.3" / "prunenet.json")
    assert farmed["kept_rows"] == read_json(direct / "prunenet.json")["kept_rows"]

    # A second run skips everything and rewrites nothing.
    before = snapshot(out)
    again = prunenet.farm(plan, progress=False)
    assert again["counts"] == {"skipped": 9}
    assert snapshot(out) == before
    assert main(["farm", str(plan), "--dry-run"]) == 0
    assert "dry run: 9 jobs: 9 skipped" in capsys.readouterr().out

    # A changed model (its weights rewritten) is redone alone; a new ratio runs alone.
    weights = models[1] / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    plan = write_plan(tmp_path / "plan.toml", out, models, ratios=RATIOS + [0.2])
    states = {(j.model.name, j.target["ratio"]): j.state for j in plan_jobs(load_plan(plan))}
    assert [k for k, s in states.items() if s != "done"] == [
        ("llama", 0.2), ("qwen2", 0.1), ("qwen2", 0.3), ("qwen2", 0.5), ("qwen2", 0.2), ("opt", 0.2)]
    third = prunenet.farm(plan, progress=False)
    assert third["counts"] == {"skipped": 6, "done": 6}


@pytest.mark.ray
def test_broken_model_fails_alone(ray_session, models, tmp_path, capsys):
    broken = tmp_path / "broken"
    save_model(build_model("llama", seed=5), broken)
    config = read_json(broken / "config.json")
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    out = tmp_path / "runs"
    plan = write_plan(tmp_path / "plan.toml", out, [models[0], broken, models[2]], ratios=[0.2, 0.4])
    with pytest.raises(SystemExit) as exited:
        main(["farm", str(plan), "--json", str(tmp_path / "s.json")])
    assert exited.value.code == 1
    report = read_json(tmp_path / "s.json")
    assert report["counts"] == {"done": 4, "failed": 2}
    for row in report["jobs"]:
        if row["model"] == "broken":
            assert row["status"] == "failed" and "bert" in row["error"] and "\n" not in row["error"]
            assert not Path(row["output"]).exists()
        else:
            assert row["status"] == "done" and (Path(row["output"]) / "prunenet.json").is_file()
    assert report["models"]["broken"]["scoring"]["status"] == "failed"
    printed = capsys.readouterr().out
    assert "FAILED  broken ratio 0.2: unsupported model_type 'bert'" in printed and "2 failed" in printed


@pytest.mark.ray
def test_killed_worker_is_retried(ray_session, markers, tmp_path):
    victim = save_model(build_model("qwen2", seed=7), tmp_path / "victim")
    (markers / "victim").touch()
    plan = write_plan(tmp_path / "plan.toml", tmp_path / "runs", [victim], ratios=[0.25], extra="retries = 2")
    report = prunenet.farm(plan, progress=False)
    assert (markers / "victim.killed").exists() and not (markers / "victim").exists()  # a worker did die
    assert report["counts"] == {"done": 1} and report["jobs"][0]["retries"] == 1
    folder = Path(report["jobs"][0]["output"])
    assert read_json(folder / "config.json")["intermediate_size"] == int(0.75 * FFN)
    assert leftovers(folder.parent) == []


@pytest.mark.ray
def test_outputs_and_scores_of_an_earlier_probe_sampler_are_redone(ray_session, models, tmp_path):
    """Self-written probes of an earlier sampler are other text for the same options: what was made from them
    is not done, as its probe info (in prunenet.json, in the scores file's header) says."""
    from prunenet.calibration.probes import SAMPLER, Probes
    from prunenet.farm.jobs import scores_ready
    from prunenet.scores import load_scores

    out = tmp_path / "runs"
    plan_path = write_plan(tmp_path / "plan.toml", out, models[:1], ratios=[0.25])
    assert prunenet.farm(plan_path, progress=False)["counts"] == {"done": 1}
    plan = load_plan(plan_path)
    [model] = plan.models
    provenance = out / model.name / "ratio-0.25" / "prunenet.json"
    made = read_json(provenance)
    for sampler, state in (("16-per-call", "changed"), (None, "changed"), (SAMPLER, "done")):
        probes = {"source": "self", "tokens": 8, **({"sampler": sampler} if sampler else {})}
        provenance.write_text(json.dumps({**made, "probes": probes}))
        assert [job.state for job in plan_jobs(plan)] == [state]
    provenance.write_text(json.dumps({**made, "probes": {"source": "probes.txt", "tokens": 8}}))  # a file's text
    assert [job.state for job in plan_jobs(plan)] == ["done"]

    scores = out / model.name / SCORES
    assert scores_ready(plan, model)
    stored = load_scores(scores, "magnitude")
    for sampler, ready in (("16-per-call", False), (SAMPLER, True)):
        stored.probes = Probes(TOKENS, {"source": "self", "sampler": sampler})
        stored.save(scores)
        assert scores_ready(plan, model) is ready


@pytest.mark.ray
def test_the_end_of_a_run_removes_what_killed_attempts_left(ray_session, models, tmp_path, capsys):
    """A dead process of this host left a half-written output in a model folder: the farm's end removes it,
    even in a run that had nothing to do; another host's is left and reported."""
    out = tmp_path / "runs"
    plan = write_plan(tmp_path / "plan.toml", out, models[:1], ratios=[0.25])
    assert prunenet.farm(plan, progress=False)["temporaries"] == {"removed": [], "left": []}
    folder = out / models[0].name
    dead = folder / f".ratio-0.25.partial-{socket.gethostname()}-{dead_pid()}"
    elsewhere = folder / ".ratio-0.25.partial-another-host-1"
    for planted in (dead, elsewhere):
        planted.mkdir()
        (planted / "model.safetensors").write_bytes(b"half")
    assert main(["farm", str(plan), "--json", str(tmp_path / "s.json")]) == 0
    report = read_json(tmp_path / "s.json")
    assert report["counts"] == {"skipped": 1}
    assert report["temporaries"] == {"removed": [str(dead)], "left": [str(elsewhere)]}
    assert not dead.exists() and elsewhere.is_dir()
    printed = capsys.readouterr().out
    assert "removed 1 temporary output of killed attempts" in printed and str(elsewhere) in printed


@pytest.mark.ray
def test_eval_table_and_plot(ray_session, models, tmp_path, capsys):
    """The first model has a tokenizer and is evaluated; the second has none: its evaluation fails alone."""
    out = tmp_path / "runs"
    plan = write_plan(tmp_path / "plan.toml", out, models[:2], ratios=[0.2, 0.5],
                      extra="[eval]\ntokens = 64\nwindow = 32")
    assert main(["farm", str(plan), "--quiet", "--json", str(tmp_path / "s.json"),
                 "--plot", str(tmp_path / "q.png")]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    report = read_json(tmp_path / "s.json")
    assert report["counts"] == {"done": 4}
    rows = [r for r in report["jobs"] if r["model"] == "llama"]
    assert all(r["perplexity"] > 1 and r["kl"] >= 0 and 0 <= r["agreement"] <= 1 for r in rows)
    assert rows[0]["kl"] < rows[1]["kl"]  # half the rows gone moves the model further than a fifth
    assert all(r["perplexity"] is None for r in report["jobs"] if r["model"] == "qwen2")
    assert report["models"]["qwen2"]["eval"]["status"] == "failed"
    error = report["models"]["qwen2"]["eval"]["error"]  # evaluate's own one-line message
    assert error and "\n" not in error
    assert (tmp_path / "q.png").stat().st_size > 0
    assert (out / "llama" / EVAL_RECORD).is_file()
    printed = table(report)
    assert "llama: original PPL" in printed and "| PPL " in printed and "qwen2: evaluation failed" in printed
    again = prunenet.farm(plan, progress=False)
    assert again["models"]["llama"]["eval"]["status"] == "skipped"
    assert [r["perplexity"] for r in again["jobs"]] == [r["perplexity"] for r in report["jobs"]]


@pytest.mark.ray
def test_ctrl_c_cancels_and_a_rerun_finishes(ray_session, models, tmp_path, monkeypatch, capsys):
    from prunenet.farm import runner

    ended = runner._Farm._slice_ended

    def interrupted_after_first_job(self, *args):
        ended(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner._Farm, "_slice_ended", interrupted_after_first_job)
    out = tmp_path / "runs"
    plan = write_plan(tmp_path / "plan.toml", out, models, ratios=[0.2, 0.4])
    assert main(["farm", str(plan)]) == 130
    assert "interrupted" in capsys.readouterr().err
    landed = sorted(out.glob("*/ratio-*"))
    assert 1 <= len(landed) < 6
    for folder in landed:  # whatever exists is whole: renamed into place only when complete
        assert (folder / "config.json").is_file() and (folder / "prunenet.json").is_file()
    assert [p for p in out.rglob("*") if ".partial-" in p.name] == []
    monkeypatch.undo()
    report = prunenet.farm(plan, progress=False)
    assert report["counts"].get("failed") is None and sum(report["counts"].values()) == 6
    assert report["counts"]["skipped"] >= 1


BAD_PLANS = {
    "unknown option": ('[options]\nrepiar = "none"', TypeError, "repiar"),
    "option set by the farm": ('[options]\nout = "x"', ValueError, "'out'"),
    "option of the wrong type": ("[options]\nseed = 1.5", TypeError, "seed"),
    "unknown plan key": ("ratio = 0.3", ValueError, "'ratio'"),
    "ratio out of range": ("ratios = [0.2, 1.2]", ValueError, "1.2"),
    "repeated ratio": ("ratios = [0.2, 0.2]", ValueError, "repeat"),
    "missing model folder": ('models = ["./nowhere"]', ValueError, "nowhere"),
    "two models of one name": ("models = [\"{m}\", \"{m}\"]", ValueError, "two models"),
    "unknown eval option": ("[eval]\ntoken = 64", ValueError, "token"),
    "bad retries": ("retries = -1", ValueError, "retries"),
    "KL bound not positive": ("max_kl = [0.5, 0]", ValueError, "max_kl 0"),
    "KL bound repeated": ("max_kl = [0.5, 0.5]", ValueError, "repeat"),
    "KL bounds not a list": ('max_kl = "0.5"', TypeError, "max_kl"),
    "max_kl in [options]": ("[options]\nmax_kl = 0.5", ValueError, "'max_kl'"),
}


@pytest.mark.parametrize("case", list(BAD_PLANS))
def test_bad_plan_refused_before_any_work(case, models, tmp_path, capsys):
    entry, error, named = BAD_PLANS[case]
    entry = entry.replace("{m}", str(models[0]))
    keys = {line.split("=")[0].strip() for line in entry.splitlines() if "=" in line}
    base = {"out": json.dumps(str(tmp_path / "runs")), "models": json.dumps([str(models[0])]), "ratios": "[0.2]"}
    lines = [f"{k} = {v}" for k, v in base.items() if k not in keys] + [entry]
    plan = tmp_path / "plan.toml"
    plan.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(error, match=named.replace(".", r"\.")):
        prunenet.farm(plan, progress=False)
    line = cli_error(capsys, ["farm", str(plan), "--json", str(tmp_path / "s.json")])
    assert line.startswith("prunenet: error: plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]  # no output root, no summary


def test_a_plan_without_ratios_or_bounds_is_refused(models, tmp_path):
    with pytest.raises(ValueError, match="'ratios' is missing"):
        load_plan({"out": str(tmp_path / "runs"), "models": [str(models[0])]})


def test_keys_leave_out_the_options_that_change_nothing(models, tmp_path):
    """Healing's options count only when it heals, refine's only with that repair; a key stored with them
    all (or with another default of one) still matches, so a new default of an unused option redoes nothing."""
    from prunenet.farm.jobs import essential

    def key(**options):
        plan = load_plan({"out": str(tmp_path / "runs"), "models": [str(models[0])], "ratios": [0.2],
                          "options": options})
        return plan_jobs(plan)[0].key

    plain = key()
    assert "heal_tokens" in plain["options"] and "heal_precision" not in plain["options"]
    assert not any(name.startswith("refine_") for name in plain["options"])
    assert key(heal_tokens=4096)["options"]["heal_precision"] == "auto"
    assert key(repair="refine")["options"]["refine_lr"] == 3e-4
    stored = {**plain, "options": {**plain["options"], "heal_precision": "bfloat16", "heal_lr": 1.0,
                                   "refine_epochs": 9}}
    assert essential(stored) == plain
    assert essential({**plain, "options": {**plain["options"], "seed": 5}}) != plain
    healed = key(heal_tokens=4096)
    assert essential({**healed, "options": {**healed["options"], "heal_precision": "bfloat16"}}) != healed


def test_kl_bounds_are_jobs_of_their_own(models, tmp_path):
    plan = load_plan({"out": str(tmp_path / "runs"), "models": [str(m) for m in models[:2]], "ratios": [0.2],
                      "max_kl": [0.05, 0.5]})
    jobs = plan_jobs(plan)
    assert [job.label for job in jobs] == ["ratio 0.2", "max_kl 0.05", "max_kl 0.5"] * 2
    assert jobs[1].out.name == "max-kl-0.05" and jobs[1].key["max_kl"] == 0.05 and "ratio" not in jobs[1].key
    assert load_plan({"out": str(tmp_path / "r"), "models": [str(models[0])], "max_kl": [0.1]}).ratios == ()


@pytest.mark.ray
def test_a_kl_bound_lands_with_the_ratio_it_chose_and_reruns_skip(ray_session, models, tmp_path):
    out = tmp_path / "runs"
    plan = {"out": str(out), "models": [str(models[0])], "max_kl": [0.05], "selector": "magnitude",
            "options": OPTIONS}
    report = prunenet.farm(plan, progress=False)
    [row] = report["jobs"]
    assert row["status"] == "done" and row["max_kl"] == 0.05 and 0 <= row["ratio"] < 1
    folder = Path(row["output"])
    assert folder.name == "max-kl-0.05"
    provenance = read_json(folder / "prunenet.json")
    assert provenance["max_kl"]["max_kl"] == 0.05 and provenance["ratio"] == row["ratio"]
    assert read_json(folder / "config.json")["intermediate_size"] == provenance["max_kl"]["ffn_width"]
    assert "max_kl 0.05 -> " in table(report)
    again = prunenet.farm(plan, progress=False)
    assert again["jobs"][0]["status"] == "skipped" and again["jobs"][0]["ratio"] == row["ratio"]


def test_dry_run_runs_nothing(models, tmp_path, capsys):
    plan = write_plan(tmp_path / "plan.toml", tmp_path / "runs", models[:2], ratios=[0.2, 0.4])
    assert main(["farm", str(plan), "--dry-run", "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("to run (new)") == 4 and "dry run: 4 jobs: 4 to run" in printed
    assert not (tmp_path / "runs").exists()
    assert read_json(tmp_path / "s.json")["dry_run"] is True


def test_cli_refuses_local_sizes_with_an_address(models, tmp_path, capsys):
    plan = write_plan(tmp_path / "plan.toml", tmp_path / "runs", models[:1])
    assert main(["farm", str(plan), "--address", "auto", "--cpus", "2"]) == 2
    assert "--cpus" in capsys.readouterr().err


def _checkout_or_skip() -> Path:
    """The checkout prunenet is installed from; the test is skipped where it is installed otherwise."""
    checkout = Path(prunenet.__file__).resolve().parents[1]
    if not (checkout / "kernels" / "ops").is_dir():
        pytest.skip("prunenet is not installed from a checkout here")
    return checkout


def test_a_worker_takes_the_checkout_off_its_path(monkeypatch):
    # Ray puts the driver's working directory on a worker's sys.path; inside a checkout, its kernels/ folder
    # would shadow the Hugging Face package transformers imports.
    from prunenet.farm.tasks import _prepare_worker

    checkout = _checkout_or_skip()
    monkeypatch.setattr(sys, "path", [str(checkout), "", *sys.path])
    monkeypatch.chdir(checkout)
    threads = torch.get_num_threads()
    try:
        _prepare_worker(1)
        assert all(Path(entry or ".").resolve() != checkout for entry in sys.path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_python_m_prunenet_runs_inside_the_checkout(models, tmp_path):
    # `python -m prunenet` puts the working directory first on sys.path: the checkout, when run from it.
    checkout = _checkout_or_skip()
    argv = ["compress", str(models[0]), "--ratio", "0.3", "--out", str(tmp_path / "out"), "--probe-tokens", "256",
            "--probe-length", "32", "--probe-dtype", "float32", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "prunenet", *argv], cwd=checkout, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "prunenet.json").is_file()
