"""`run_experiment` called again and again in one process, as a notebook does: what a run leaves in
the caller's process. `ray.init` (executor="ray") left PYTHONBREAKPOINT set to Ray's debugger after
`ray.shutdown` (the notebook's own `breakpoint()` went to Ray), its `sys.excepthook` and faulthandler
on; `host_state_kept` puts back the environment, the excepthook and faulthandler's state."""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import harness.jobs
from harness.api import process_hooks_kept, run_experiment

TINY: dict[str, Any] = dict(dataset="digits", proxies="final_loss", tasks="mislabeled", seeds=1, noise_rates=[0.1],
                            epochs=1, subset=120, device="cpu", bootstrap=0, progress=False)


@pytest.fixture
def faulthandler_off() -> Iterator[None]:
    """pytest turns faulthandler on for its own reports: off for the test, back on after."""
    was = faulthandler.is_enabled()
    faulthandler.disable()
    try:
        yield
    finally:
        if was:
            faulthandler.enable(file=sys.__stderr__)


def _like_ray_init() -> None:
    """What `ray.init` does to its driver and `ray.shutdown` leaves (ray/_private/worker.py)."""
    os.environ["PYTHONBREAKPOINT"] = "ray.util.rpdb._driver_set_trace"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_API26_GONE", None)
    os.environ["RAY_API26_CHANGED"] = "ray's"
    sys.excepthook = lambda *args: None
    faulthandler.enable(file=sys.__stderr__)


def test_the_environment_excepthook_and_faulthandler_are_put_back(monkeypatch, faulthandler_off) -> None:
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    monkeypatch.setenv("RAY_API26_GONE", "mine")
    monkeypatch.setenv("RAY_API26_CHANGED", "mine")
    hook = sys.excepthook
    with pytest.raises(RuntimeError, match="boom"), process_hooks_kept():
        _like_ray_init()
        raise RuntimeError("boom")
    assert "PYTHONBREAKPOINT" not in os.environ and "RAY_USAGE_STATS_ENABLED" not in os.environ
    assert (os.environ["RAY_API26_GONE"], os.environ["RAY_API26_CHANGED"]) == ("mine", "mine")
    assert sys.excepthook is hook and not faulthandler.is_enabled()


def test_faulthandler_the_caller_enabled_stays_enabled(faulthandler_off) -> None:
    faulthandler.enable(file=sys.__stderr__)
    with process_hooks_kept():
        faulthandler.disable()
        faulthandler.enable(file=sys.__stderr__)
    assert faulthandler.is_enabled()


def test_a_run_that_sets_them_leaves_the_notebook_as_it_was(tmp_path, monkeypatch, faulthandler_off) -> None:
    """Through `run_experiment`: a job that does what `ray.init` does, in this process (inprocess)."""
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    monkeypatch.setenv("RAY_API26_CHANGED", "mine")
    train = harness.jobs.run_job

    def job(job: harness.jobs.Job) -> harness.jobs.JobResult:
        _like_ray_init()
        return train(job)

    monkeypatch.setattr(harness.jobs, "run_job", job)
    hook, environ = sys.excepthook, dict(os.environ)
    result = run_experiment(store=tmp_path / "store", executor="inprocess", **TINY)
    assert len(result.trained) == 1 and np.isfinite(result.scores["noise=0.1_seed0"]["final_loss"]).all()
    assert os.environ.get("PYTHONBREAKPOINT") is None and os.environ["RAY_API26_CHANGED"] == "mine"
    assert dict(os.environ) == environ
    assert sys.excepthook is hook and not faulthandler.is_enabled()


@pytest.mark.slow
def test_a_ray_run_leaves_no_ray_debugger_behind(tmp_path, monkeypatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    hook, environ = sys.excepthook, dict(os.environ)
    result = run_experiment(store=tmp_path / "store", executor="ray", workers=1, **TINY)
    assert len(result.trained) == 1
    assert os.environ.get("PYTHONBREAKPOINT") is None and dict(os.environ) == environ
    assert sys.excepthook is hook


@pytest.mark.parametrize("message, expected", [
    ("no proxies selected; pass --proxies all or a comma-separated list",
     "no proxies selected; pass proxies='all' or a comma-separated list"),
    ("no tasks selected; pass e.g. --tasks mislabeled,duplicates",
     "no tasks selected; pass e.g. tasks='mislabeled,duplicates'"),
    ("CUDA is not available; use --device cpu", "CUDA is not available; use device='cpu'"),
    ("pass rates like --noise-rates 0.01,0.1 (a clean run", "pass rates like noise_rates='0.01,0.1' (a clean run"),
    ("(or --preset cpu-full) for all", "(or preset='cpu-full') for all"),
    ("select it with --proxies csl.", "select it with proxies='csl'."),
    # the sentence going on stays a sentence
    ("pass --tasks with some of: a, b", "pass tasks with some of: a, b"),
    ("--seeds given, the rest", "seeds given, the rest"),
    ("fix --epochs, then --lr", "fix epochs, then lr"),
])
def test_a_name_or_a_list_after_a_flag_is_its_value_in_python(message: str, expected: str) -> None:
    """"use device cpu" and "pass tasks mislabeled,duplicates" are no Python a notebook can type."""
    from harness.api_wording import as_keywords

    assert as_keywords(message) == expected


def test_api_errors_say_the_python_to_type() -> None:
    from harness.api import experiment_config
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"pass proxies='all' or a comma-separated list$"):
        experiment_config(proxies="")
    with pytest.raises(HarnessError, match=r"pass e\.g\. tasks='mislabeled,duplicates'$"):
        experiment_config(tasks="")


@pytest.fixture
def torch_settings() -> Iterator[None]:
    """The test's torch settings undone, whatever it changes."""
    import torch

    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    anomaly, matmul = torch.is_anomaly_enabled(), torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_default_device(None if device.type == "cpu" else device)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.set_anomaly_enabled(anomaly)
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


def test_the_notebooks_torch_settings_do_not_reach_the_runs(tmp_path, torch_settings) -> None:
    """Under the notebook's `no_grad()` an inprocess run raised "element 0 of tensors does not require
    grad"; with float64 the default, the model check refused mlp for digits ("cannot take the 1x8x8
    samples"). Both now train as a fresh process does, the same numbers, and the settings come back."""
    import torch

    fresh = run_experiment(store=tmp_path / "fresh", executor="inprocess", **TINY).scores["noise=0.1_seed0"]
    torch.set_default_dtype(torch.float64)
    with torch.no_grad():
        result = run_experiment(store=tmp_path / "notebook", executor="inprocess", **TINY)
        assert not torch.is_grad_enabled()
    assert torch.get_default_dtype() == torch.float64
    assert len(result.trained) == 1
    assert np.array_equal(result.scores["noise=0.1_seed0"]["final_loss"].to_numpy(), fresh["final_loss"].to_numpy())


def test_torch_defaults_inside_and_the_callers_settings_after(torch_settings) -> None:
    import torch

    from harness.api import torch_defaults

    torch.set_default_device("meta")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_anomaly_enabled(True)
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.benchmark = True
    with torch.inference_mode(), torch_defaults():
        assert torch.empty(1).device.type == "cpu" and torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert not torch.are_deterministic_algorithms_enabled() and not torch.is_anomaly_enabled()
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.benchmark
    assert torch.empty(1).device.type == "meta" and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.is_anomaly_enabled() and torch.get_float32_matmul_precision() == "high"
    assert torch.backends.cudnn.benchmark


def test_torch_defaults_touch_nothing_already_at_its_default() -> None:
    """`torch.use_deterministic_algorithms(False)` imports torch's inductor (about 900 modules, seconds on
    a loaded machine) and sets its config: called on every run_experiment, even with determinism off."""
    import subprocess

    code = ("import sys, torch\nfrom harness.api import torch_defaults\nwith torch_defaults(): pass\n"
            "print('torch._inductor.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_device_context_around_the_call_does_not_reach_the_runs(torch_settings) -> None:
    """`set_default_device(None)` clears only the global default: under a notebook's `with
    torch.device(...)` every tensor a run made stayed on that device."""
    import torch

    from harness.api import torch_defaults

    with torch.device("meta"):
        with torch_defaults():
            assert torch.empty(1).device.type == "cpu" and torch.nn.Linear(2, 2).weight.device.type == "cpu"
        assert torch.empty(1).device.type == "meta"
    assert torch.empty(1).device.type == "cpu"
