"""The option table (issue 18): each experiment option is declared once in `harness.options.OPTIONS`,
and the config's fields, `run_experiment`'s keywords, the CLI's flags, validation and the experiment
identity come from it. Adding an option is one entry: a test adds one and finds it everywhere. The
table changed nothing that was computed before it: experiment ids, full configs and run addresses
are pinned below to their values from before the table."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness import options
from harness.api import experiment_config, keywords
from harness.cli import build_parser, main, run_options
from harness.config import ExperimentConfig, config_class, experiment_id
from harness.errors import HarnessError
from harness.options import OPTIONS, Option

ROOT = Path(__file__).resolve().parents[1]


def _unit_interval(value, option: Option) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise HarnessError(f"label smoothing must be in [0, 1) (got {value!r}); fix {option.flag}")


@pytest.fixture(params=[False, True], ids=["result-option", "runtime-option"])
def new_option(request, monkeypatch) -> Option:
    """One new entry in the table, and nothing else: removed again after the test."""
    option = Option("label_smoothing", 0.0, "label smoothing of the training loss", annotation="float",
                    cli_type=float, check=_unit_interval, runtime=request.param)
    monkeypatch.setattr(options, "OPTIONS", (*OPTIONS, option))
    return option


def test_a_new_option_reaches_the_cli(new_option, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--label-smoothing LABEL_SMOOTHING label smoothing of the training loss (default: 0.0)" in help_text
    args = build_parser().parse_args(["run", "--label-smoothing", "0.1"])
    assert experiment_config(**run_options(args)).label_smoothing == 0.1


def test_a_new_option_reaches_the_api_and_the_config(new_option) -> None:
    assert "label_smoothing" in keywords()
    assert experiment_config().label_smoothing == 0.0
    assert experiment_config(label_smoothing=0.2).label_smoothing == 0.2
    assert config_class()().label_smoothing == 0.0  # a hand-built config has the field and its default
    with pytest.raises(HarnessError, match=r"label_smothing \(did you mean label_smoothing\?\)"):
        experiment_config(label_smothing=0.2)


def test_a_new_option_is_validated_with_its_message(new_option, capsys, tmp_path) -> None:
    with pytest.raises(HarnessError, match=r"label smoothing must be in \[0, 1\) \(got 1.5\); fix label_smoothing"):
        experiment_config(label_smoothing=1.5)
    cfg = config_class()(label_smoothing=-1)
    with pytest.raises(HarnessError, match="label smoothing must be in"):
        cfg.validate()
    assert main(["run", "--label-smoothing", "2", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: label smoothing must be in [0, 1) (got 2.0)")


def test_a_new_option_enters_the_identity_unless_it_is_runtime(new_option) -> None:
    same = experiment_id(experiment_config(label_smoothing=0.1)) == experiment_id(experiment_config())
    assert same == new_option.runtime


def test_every_config_field_has_exactly_one_entry() -> None:
    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    names = [o.name for o in OPTIONS if o.field]
    assert sorted(fields) == sorted(names) and not [n for n, k in Counter(names).items() if k > 1]
    for what in ([o.name for o in OPTIONS], [o.keyword for o in OPTIONS if o.keyword],
                 [o.flag for o in OPTIONS if o.help]):
        assert not [n for n, k in Counter(what).items() if k > 1], what


def test_help_lists_every_option_that_is_not_hidden(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    shown = [o for o in OPTIONS if o.help]
    assert all(o.flag in text for o in shown)
    assert [o.name for o in OPTIONS if not o.help] == ["recipe"]  # built from the preset and recipe options
    dests = {a.dest for a in next(a for a in build_parser()._actions if a.dest == "command").choices["run"]._actions}
    assert dests - {"help"} == set(keywords())


def test_noise_rates_are_checked_as_one_open_interval() -> None:
    """(0, 1): a rate of 0 flips no label, so there is nothing to detect; 1 is not a rate."""
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(HarnessError, match=r"outside \(0, 1\)"):
            experiment_config(noise_rates=[rate])
    assert experiment_config(noise_rates=[0.5]).noise_rates == (0.5,)


def test_validation_runs_once_per_config(monkeypatch) -> None:
    import harness.executors

    calls = []
    real = harness.executors.validate_executor
    monkeypatch.setattr(harness.executors, "validate_executor", lambda cfg: calls.append(1) or real(cfg))
    cfg = experiment_config()  # validates
    cfg.validate()  # as Experiment.__init__ does again: unchanged, so nothing runs
    assert len(calls) == 1
    cfg.seeds = (0, 0)  # a changed config is checked again
    with pytest.raises(HarnessError, match="--seeds repeats seed"):
        cfg.validate()
    assert len(calls) == 1  # (the seeds entry refused it before the executor's check)


# identity: the values below were computed before the option table (commit 1045ac4) ----------------
IDENTITY_CASES = {
    "default": ({}, "054ea2abc95a6134", "dbaf63f17820d8fc"),
    "default-cli-out": ({"out": "results/latest"}, "054ea2abc95a6134", "a81726e38886b253"),
    "cifar-imagefolder": ({"dataset": "imagefolder:/data/cifar10-folder", "preset": "gpu", "seeds": "0,5",
                           "precision": "fp32", "noise_rates": "0.05,0.1", "tasks": "mislabeled,duplicates",
                           "duplicate_pairs": 25, "executor": "ray", "gpus_per_run": 0.25, "workers": 4},
                          "e9388193370f6a82", "071e85ddd79e74f3"),
    "proxy-args": ({"proxies": "csl,curvature(n=2),el2n", "proxy_args": ["el2n.window=0.2", "curvature.h=0.01"],
                    "task_args": {"memorization": {"k": 64}}, "tasks": "memorization,mislabeled",
                    "reference": "stability", "epochs": 7, "lr": 0.05, "batch_size": 32, "augment": "on",
                    "subset": 500, "threads": 2, "bootstrap": 0, "checkpoint_every": 30, "compile": True},
                   "3b38cacc7fd1492c", "7d73f38418e6ff94"),
    "noisy-labels": ({"noisy_labels": "labels.npz:human", "tasks": "mislabeled", "seeds": 1, "device": "cpu"},
                     # 970845f77635cff7 until 5 Dec 2026, when --device began to count by its kind (the CPU is
                     # hashed as `auto`): that id is among its former_ids, whose --out stays its own
                     "25b3dc9275839448", "712d6ad26fe54223"),
}


#: Runtime fields added after the values above were computed, at their defaults (none of them
#: changes what an experiment computes; a value other than the default is hashed).
LATER_RUNTIME_DEFAULTS = {"job_timeout": None}


def _whole(cfg) -> str:
    """A hash of every field, runtime ones included (recipe fields added since, at their old-
    behaviour defaults, left out as experiment ids leave them out; so are runtime fields added
    since, at their defaults: LATER_RUNTIME_DEFAULTS)."""
    from harness.recipe import LATER_RECIPE_DEFAULTS, without_defaults

    whole = dataclasses.asdict(cfg)
    for name, default in LATER_RUNTIME_DEFAULTS.items():
        if whole[name] == default:
            del whole[name]
    whole["recipe"] = without_defaults(whole["recipe"], LATER_RECIPE_DEFAULTS)
    return hashlib.sha256(json.dumps(whole, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("options, identity, whole", IDENTITY_CASES.values(), ids=IDENTITY_CASES.keys())
def test_experiment_ids_and_configs_are_unchanged(options, identity, whole, monkeypatch) -> None:
    import torch

    from harness import experiment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ids pinned on a machine without CUDA

    cfg = experiment_config(**options)
    assert experiment_id(cfg) == identity and experiment.experiment_id(cfg) == identity
    assert _whole(cfg) == whole


def test_a_hand_built_config_is_unchanged(monkeypatch) -> None:
    """Its defaults, and its fields in their old order (summary.json lists them in this order)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ids pinned on a machine without CUDA
    cfg = ExperimentConfig()
    assert (experiment_id(cfg), _whole(cfg)) == ("0938f621bdc8e982", "0719517dfc38e941")
    assert list(vars(cfg)) == [
        "dataset", "model", "recipe", "preset", "subset", "data_root", "download", "seeds", "tasks", "proxies",
        "proxy_args", "noise_rates", "duplicate_pairs", "noisy_labels", "reference", "task_args", "device", "out",
        "store", "progress", "threads", "checkpoint_every_s", "executor", "workers", "ray_address", "gpus_per_run",
        "bootstrap", "overwrite", "precision", "compile", "job_timeout"]  # a field added since goes at the end


def test_runtime_fields_are_the_ones_the_experiment_leaves_out() -> None:
    from harness import config, experiment

    assert set(config.RUNTIME_FIELDS) == set(experiment.RUNTIME_FIELDS)


@pytest.mark.parametrize("options, count, digest", [
    ({"seeds": 1}, 164, "e7cd7a1fe63b159b"),
    ({"proxies": "csl,aum,curvature(n=2),confident_learning", "seeds": 1, "tasks": "mislabeled,duplicates",
      "noise_rates": [0.1], "epochs": 3}, 8, "3672fcbd3f9a20ff"),
], ids=["all-proxies-and-tasks", "some-proxies"])
def test_run_addresses_are_unchanged(tmp_path, options, count, digest) -> None:
    """The planned runs' store addresses (RunSpec digests): stored runs are reused, not retrained."""
    from harness.experiment import Experiment

    cfg = experiment_config(store=tmp_path / "store", device="cpu", executor="inprocess", **options)
    specs = sorted(spec.digest() for spec in Experiment(cfg).plan.runs)
    assert (len(specs), hashlib.sha256(",".join(specs).encode()).hexdigest()[:16]) == (count, digest)


def test_the_table_imports_below_the_config() -> None:
    """harness.values and harness.options import nothing that imports them back (no cycle)."""
    code = ("import sys, harness.options; "
            "print(sorted(m for m in sys.modules if m in ('harness.config', 'harness.api', 'harness.cli')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_option_modules_stay_small() -> None:
    """Issue 18: no module over 400 lines, no class over 150."""
    import ast

    for name in ("values", "options", "config", "api", "cli"):
        text = (ROOT / "harness" / f"{name}.py").read_text()
        assert len(text.splitlines()) <= 400, name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 <= 150, f"{name}.{node.name}"
