"""The bad-input suite (issue 9): every bad option exits 2 with one `error:` line naming the problem,
no traceback, nothing trained, nothing written to --out or the store.

Each case runs `harness.cli.main(argv)` in-process on a tiny digits experiment whose output and store
live under tmp_path; a case replaces or drops flags of that experiment (flags may not repeat).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from harness.cli import main

#: flag -> value of the tiny experiment every case starts from (None: a switch without a value)
BASE: dict[str, str | None] = {
    "--seeds": "1", "--noise-rates": "0.1", "--tasks": "mislabeled", "--proxies": "csl", "--epochs": "1",
    "--device": "cpu", "--no-progress": None,
}
DROP = object()  # a case's value that removes the flag from BASE


def argv(tmp_path: Path, flags: dict[str, object], extra: tuple[str, ...] = ()) -> list[str]:
    merged = {**BASE, "--out": str(tmp_path / "out"), "--store": str(tmp_path / "store"), **flags}
    args = ["run"]
    for flag, value in merged.items():
        if value is DROP:
            continue
        args += [flag] if value is None else [flag, str(value)]
    return args + list(extra)


def case(id: str, flags: dict[str, object], needle: str, *extra: str, xfail: str = "") -> object:
    marks = [pytest.mark.xfail(reason=xfail, strict=False)] if xfail else []
    return pytest.param(flags, extra, needle, id=id, marks=marks)


CASES = [
    # --- issue 9, "Wrong or ignored, with exit 0" -------------------------------------------
    case("seeds-repeated", {"--seeds": "0,0"}, "--seeds repeats seed(s) 0"),
    case("noise-rates-repeated", {"--noise-rates": "0.1,0.1"}, "--noise-rates repeats noise rate(s) 0.1"),
    case("tasks-repeated", {"--tasks": "mislabeled,mislabeled"}, "--tasks repeats task(s) mislabeled"),
    case("task-arg-misspelt-task", {}, "memorisation", "--task-arg", "memorisation.fraction=0.5"),
    case("task-arg-unknown-task", {}, "nosuch", "--task-arg", "nosuch.k=1"),
    case("task-arg-unselected-task", {}, "memorization", "--task-arg", "memorization.k=4"),
    case("duplicate-pairs-0", {"--tasks": "duplicates"}, "--duplicate-pairs", "--duplicate-pairs", "0"),
    case("noise-rates-empty", {"--noise-rates": ""}, "needs noise rates"),
    case("noise-rate-0", {"--noise-rates": "0"}, "outside (0, 1)"),
    case("noise-rate-flips-nothing", {"--noise-rates": "0.0001"}, "flips no label"),
    case("subset-5", {}, "--subset", "--subset", "5"),  # 10 % of 5 samples flips none
    case("subset-5-half-noise", {"--noise-rates": "0.5"}, "--subset", "--subset", "5"),
    case("subset-0", {}, "--subset", "--subset", "0"),
    case("subset-negative", {}, "--subset", "--subset=-3"),
    case("curvature-h-inf", {"--proxies": "curvature(h=1e999)"}, "curvature.h"),
    case("threads-0", {}, "--threads", "--threads", "0"),
    case("threads-negative", {}, "--threads", "--threads=-1"),
    case("checkpoint-every-negative", {}, "--checkpoint-every", "--checkpoint-every=-5"),
    case("checkpoint-every-nan", {}, "--checkpoint-every", "--checkpoint-every", "nan"),
    case("el2n-window-0", {"--proxies": "el2n"}, "el2n.window", "--proxy-arg", "el2n.window=0"),
    case("in-confidence-variant", {"--proxies": "in_confidence"}, "in_confidence.variant",
         "--proxy-arg", "in_confidence.variant=label"),
    case("curvature-n-0", {"--proxies": "curvature(n=0)"}, "curvature.n"),
    case("loss-sensitivity-norm-bool", {"--proxies": "loss_sensitivity(norm=True)"}, "loss_sensitivity.norm"),
    case("confident-learning-1-fold", {"--proxies": "confident_learning(folds=1)"}, "confident_learning.folds"),
    # --- repeated and contradictory flags ----------------------------------------------------
    case("flag-repeated", {}, "--epochs given more than once", "--epochs", "2"),
    case("switch-repeated", {}, "--no-progress given more than once", "--no-progress"),
    case("noisy-labels-with-noise-rates", {}, "--noisy-labels replaces --noise-rates", "--noisy-labels", "x.npy"),
    case("proxy-arg-set-twice", {"--proxies": "el2n"}, "el2n.window twice",
         "--proxy-arg", "el2n.window=0.2", "--proxy-arg", "el2n.window=0.3"),
    case("ray-address-without-ray", {}, "--executor ray", "--ray-address", "127.0.0.1:6379"),
    case("workers-without-ray", {}, "--workers needs --executor ray", "--workers", "2"),
    case("workers-with-ray-address", {}, "pass one of them", "--executor", "ray", "--workers", "2",
         "--ray-address", "127.0.0.1:6379"),
    case("unknown-flag", {}, "unrecognized arguments: --sedes", "--sedes", "2"),
    # --- config values -----------------------------------------------------------------------
    case("seeds-count-0", {"--seeds": "0"}, "--seeds"),
    case("seeds-negative", {"--seeds": "0,-1"}, "seed must be an integer >= 0"),
    case("seeds-not-a-number", {"--seeds": "three"}, "--seeds"),
    case("epochs-0", {"--epochs": "0"}, "epochs"),
    case("batch-size-0", {}, "batch size", "--batch-size", "0"),
    case("lr-negative", {}, "learning rate", "--lr=-1"),
    case("lr-inf", {}, "learning rate", "--lr", "inf"),
    case("lr-nan", {}, "learning rate", "--lr", "nan"),
    case("executor-unknown", {}, "--executor", "--executor", "slurm"),
    case("workers-0", {}, "--workers", "--workers", "0", "--executor", "ray"),
    case("gpus-per-run-0", {}, "GPUs per run", "--gpus-per-run", "0"),
    case("gpus-per-run-2", {}, "GPUs per run", "--gpus-per-run", "2"),
    case("bootstrap-negative", {}, "--bootstrap", "--bootstrap=-1"),
    case("precision-unknown", {}, "--precision", "--precision", "fp16"),
    case("preset-unknown", {}, "preset", "--preset", "huge"),
    case("augment-unknown", {}, "--augment", "--augment", "maybe"),
    case("noise-rate-above-1", {"--noise-rates": "1.5"}, "outside (0, 1)"),
    case("noise-rate-not-a-number", {"--noise-rates": "0.1,lots"}, "numbers"),
    case("proxies-empty", {"--proxies": ""}, "no proxies"),
    case("tasks-empty", {"--tasks": ""}, "no tasks"),
]


@pytest.fixture
def no_training(monkeypatch) -> None:
    """Any gradient computation means something trained: fail loudly instead."""
    importlib.import_module("torch._dynamo")  # it indexes torch's functions on import: let it see the real ones

    def trained(*args, **kwargs):
        raise AssertionError("a bad input reached training")

    monkeypatch.setattr(torch.autograd, "backward", trained)
    monkeypatch.setattr(torch.autograd, "grad", trained)


@pytest.mark.parametrize("flags, extra, needle", CASES)
def test_bad_input_exits_2_with_one_line_and_no_side_effects(tmp_path, capsys, no_training, flags, extra,
                                                             needle) -> None:
    code = main(argv(tmp_path, flags, extra))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not written, f"bad input wrote {written}"


def test_the_base_experiment_itself_is_good(tmp_path, capsys) -> None:
    """The suite's starting point must pass, or every case above would pass for the wrong reason."""
    code = main(argv(tmp_path, {"--bootstrap": "0"}))
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "leaderboard.csv").exists()
