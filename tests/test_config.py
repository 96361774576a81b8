"""The option configs and the method registries: options written once, refused where they do not apply.

The CLI's flags, the API's keywords, the reports' options and the farm's keys all come from `config.py`;
these tests hold each of them to the configs.
"""
from __future__ import annotations

import inspect
import json

import pytest
import torch
from tiny_models import build_model, save_model

import prunenet
from prunenet.calibration.driver import MODES
from prunenet.cli import build_parser, main
from prunenet.config import CompressConfig, Config, FitConfig, ProbeConfig
from prunenet.repairs import REPAIRS, Repair
from prunenet.selectors import SELECTORS, StatisticsSelector, WeightSelector

# One non-default value of every option of every selector, and of the shared ones.
NON_DEFAULTS = {
    "shared": {"repair": "none", "statistics": "sequential", "probe_tokens": 256, "probe_length": 32, "align": 8,
               "dtype": "float16", "seed": 3, "device": "cpu"},
    "prunenet": {"episodes": 2, "lr": 0.01, "gamma": 0.9, "reg_weight": 0.5, "engine": "topq", "selection": "topk",
                 "fit_ratio": 0.25},
}


@pytest.mark.parametrize("selector", sorted(SELECTORS))
def test_config_round_trips_through_json(selector):
    given = {"selector": selector, **NON_DEFAULTS["shared"], **NON_DEFAULTS.get(selector, {})}
    config = CompressConfig.from_options(given)
    written = json.loads(json.dumps(config.to_options()))
    assert CompressConfig.from_options(written) == config
    assert {k: written[k] for k in given} == given  # every value kept, under its keyword
    assert isinstance(config.method, SELECTORS[selector].options)


def test_defaults_are_the_documented_ones():
    config = CompressConfig.from_options({})
    assert (config.selector, config.repair, config.statistics) == ("activation", "lsq", "sequential")
    assert config.probes == ProbeConfig() and config.probes.tokens == 8192
    assert FitConfig().episodes == 20 and FitConfig().lr == 1e-3 and FitConfig().gamma == 0.99


@pytest.mark.parametrize("option, value", [("episodes", 2), ("selection", "topk"), ("policy", "p.safetensors"),
                                           ("fit_ratio", 0.2), ("engine", "topq")])
def test_an_option_of_a_selector_not_in_use_is_refused(option, value):
    with pytest.raises(ValueError, match=rf"option {option} .*applies to selector 'prunenet' only.*'activation'"):
        CompressConfig.from_options({option: value})
    with pytest.raises(ValueError, match=option):
        CompressConfig.from_options({"selector": "random", option: value})
    CompressConfig.from_options({"selector": "prunenet", option: value})


@pytest.mark.parametrize("options, error, says", [
    ({"bogus": 1}, TypeError, "bogus"),
    ({"selector": "best"}, ValueError, "unknown selector 'best'"),
    ({"repair": "magic"}, ValueError, "unknown repair 'magic'"),
    ({"statistics": "twice"}, ValueError, "unknown statistics 'twice'"),
    ({"dtype": "int8"}, ValueError, "unknown dtype 'int8'"),
    ({"seed": 1.5}, TypeError, "seed must be int"),
    ({"probe_tokens": True}, TypeError, "probe_tokens must be int"),
    ({"probe_tokens": 0}, ValueError, "budget 0"),
    ({"probe_length": 1}, ValueError, "length 1"),
    ({"probe_temperature": 0.0}, ValueError, "temperature 0.0"),
    ({"probe_temperature": float("nan")}, ValueError, "temperature nan"),
    ({"probe_dtype": "float16"}, ValueError, "'float16'"),
    ({"probes": "/no/such/file.txt"}, ValueError, "/no/such/file.txt"),
    ({"align": 0}, ValueError, "align=0"),
    ({"selector": "prunenet", "episodes": 0}, ValueError, "episodes=0"),
    ({"selector": "prunenet", "gamma": 1.5}, ValueError, "gamma=1.5"),
    ({"selector": "prunenet", "lr": float("nan")}, ValueError, "lr=nan"),
    ({"selector": "prunenet", "fit_ratio": 1.0}, ValueError, "ratio 1.0"),
    ({"selector": "prunenet", "selection": "best"}, ValueError, "unknown selection 'best'"),
    ({"selector": "prunenet", "policy": "a", "policy_out": "b"}, ValueError, "policy_out"),
])
def test_bad_options_name_the_value(options, error, says):
    with pytest.raises(error, match=says):
        CompressConfig.from_options(options)


def test_every_registered_method_is_complete():
    for name, selector in SELECTORS.items():
        assert selector.name == name and selector.help
        assert issubclass(selector, (WeightSelector, StatisticsSelector))
        assert selector.needs in ("weights", "statistics")
        assert issubclass(selector.options, Config)
    for name, repair in REPAIRS.items():
        assert isinstance(repair, Repair) and repair.name == name and repair.help
    for name, mode in MODES.items():
        assert mode.name == name and mode.help


def test_the_cli_and_the_api_take_exactly_the_config_options():
    commands = {action.dest: action for action in build_parser()._actions if action.dest == "command"}["command"]
    compress_flags = {a.dest for a in commands.choices["compress"]._actions}
    fit_flags = {a.dest for a in commands.choices["fit"]._actions}
    assert {spec.keyword for spec in CompressConfig.specs()} <= compress_flags
    assert {spec.keyword for spec in FitConfig.specs()} <= fit_flags
    keywords = {p.name for p in inspect.signature(prunenet.compress).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert {spec.keyword for spec in CompressConfig.specs()} <= keywords
    score_flags = {a.dest for a in commands.choices["score"]._actions}
    assert "repair" not in score_flags and "episodes" in score_flags  # slicing-only options stay off `score`


def test_cli_refuses_an_unused_option_in_one_line_before_any_work(tmp_path, capsys):
    code = main(["compress", "smollm2-135m", "--ratio", "0.2", "--episodes", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--episodes" in err and "'prunenet'" in err
    assert list(tmp_path.iterdir()) == []


def test_the_same_option_runs_with_its_selector_and_the_report_holds_the_config(tmp_path):
    src = save_model(build_model("llama"), tmp_path / "src")
    report = prunenet.compress(src, tmp_path / "out", ratio=0.25, selector="prunenet", repair="none", episodes=2,
                               progress=False, json_path=tmp_path / "r.json")
    assert report["fit"]["episodes"] == 2
    options = {k: v for k, v in report["options"].items() if k != "ratios"}
    assert CompressConfig.from_options(options) == CompressConfig.from_options(
        {"selector": "prunenet", "repair": "none", "episodes": 2})
    provenance = json.loads((tmp_path / "out" / "prunenet.json").read_text())
    assert provenance["selector"] == "prunenet" and provenance["episodes"] == 2 and provenance["ratio"] == 0.25
    assert torch.tensor(provenance["kept_rows"]).shape[1] == report["outputs"][0]["ffn_width_after"]
