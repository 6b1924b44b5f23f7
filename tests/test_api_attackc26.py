"""`run_experiment` put back the whole of os.environ when it returned (f75f121): a variable another
thread of the notebook, a proxy plugin or a callback set during the call, on purpose, was deleted
or set back silently. Only what runs set (Ray's, scikit-learn's KMP_*, thread sizes) is put back."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import harness.jobs
from harness.api import experiment_config, process_hooks_kept, run_experiment, torch_defaults

TINY = dict(dataset="digits", proxies="final_loss", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1,
            subset=120, device="cpu", bootstrap=0, progress=False)


def test_what_the_callers_code_sets_during_the_call_stays(monkeypatch) -> None:
    monkeypatch.setenv("NOTEBOOK_ATTACKC26_CHANGED", "before")
    monkeypatch.delenv("NOTEBOOK_ATTACKC26_NEW", raising=False)
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    monkeypatch.delenv("KMP_ATTACKC26", raising=False)
    with process_hooks_kept():
        os.environ["NOTEBOOK_ATTACKC26_CHANGED"] = "the plugin's"
        os.environ["NOTEBOOK_ATTACKC26_NEW"] = "the thread's"
        os.environ["PYTHONBREAKPOINT"] = "ray.util.rpdb._driver_set_trace"
        os.environ["KMP_ATTACKC26"] = "TRUE"
    assert os.environ["NOTEBOOK_ATTACKC26_CHANGED"] == "the plugin's"
    assert os.environ["NOTEBOOK_ATTACKC26_NEW"] == "the thread's"
    assert "PYTHONBREAKPOINT" not in os.environ and "KMP_ATTACKC26" not in os.environ


def test_a_notebook_thread_setting_a_variable_during_a_run_keeps_it(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NOTEBOOK_ATTACKC26_THREAD", raising=False)
    started = threading.Event()
    train = harness.jobs.run_job

    def job(job: harness.jobs.Job) -> harness.jobs.JobResult:
        started.set()
        setter.join()  # the other thread has set it while this run trains
        return train(job)

    setter = threading.Thread(target=lambda: (started.wait(30), os.environ.__setitem__("NOTEBOOK_ATTACKC26_THREAD",
                                                                                      "set meanwhile")))
    setter.start()
    monkeypatch.setattr(harness.jobs, "run_job", job)
    result = run_experiment(store=tmp_path / "store", executor="inprocess", **TINY)
    assert len(result.trained) == 1
    assert os.environ.get("NOTEBOOK_ATTACKC26_THREAD") == "set meanwhile"
    monkeypatch.delenv("NOTEBOOK_ATTACKC26_THREAD")


def test_a_callers_autocast_does_not_reach_the_runs(tmp_path) -> None:
    """`with torch.autocast("cpu", dtype=torch.bfloat16)` around a call trained its fp32 runs in bf16 (CSL
    off by up to 1e-3 here), and stored them as fp32 runs that later calls reuse."""
    fresh = run_experiment(store=tmp_path / "fresh", executor="inprocess", **TINY).scores["noise=0.1_seed0"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch_defaults():
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
        got = run_experiment(store=tmp_path / "notebook", executor="inprocess", **TINY).scores["noise=0.1_seed0"]
    np.testing.assert_array_equal(got["final_loss"].to_numpy(), fresh["final_loss"].to_numpy())


def test_cudnn_and_onednn_switched_off_by_the_caller_are_on_inside_and_off_after() -> None:
    """`torch.backends.mkldnn.enabled = False` (or cuDNN's, or its TF32) in a notebook sent the runs'
    convolutions to other kernels: numbers other than a worker process's, stored as the run's."""
    cudnn, mkldnn = torch.backends.cudnn, torch.backends.mkldnn
    flags = ((cudnn, "enabled"), (cudnn, "allow_tf32"), (mkldnn, "enabled"))
    try:
        for backend, flag in flags:
            setattr(backend, flag, False)
        with torch_defaults():
            assert all(getattr(backend, flag) for backend, flag in flags)
        assert not any(getattr(backend, flag) for backend, flag in flags)
    finally:
        for backend, flag in flags:
            setattr(backend, flag, True)


@pytest.mark.filterwarnings("ignore:torch.is_autocast_cpu_enabled:DeprecationWarning")  # this torch's, not 2.3's
def test_autocast_is_found_on_a_torch_without_the_device_argument(monkeypatch) -> None:
    """torch 2.3 (pyproject's floor) has `is_autocast_enabled()` without a device type: a TypeError."""
    from harness.api import _autocast_devices

    cuda_only = torch.is_autocast_enabled

    def old_torch(*args: object) -> bool:
        if args:
            raise TypeError("is_autocast_enabled() takes no arguments (1 given)")
        return cuda_only("cuda")

    with torch.autocast("cpu", dtype=torch.bfloat16):
        monkeypatch.setattr(torch, "is_autocast_enabled", old_torch)
        assert _autocast_devices() == ["cpu"]


def test_a_bad_mplbackend_refuses_no_call_that_draws_nothing(tmp_path, monkeypatch) -> None:
    """e8344bb refused MPLBACKEND=qt4agg whenever suspects, theory or privacy was selected; without an
    output folder (`run_experiment`'s default) nothing is drawn and matplotlib is never imported: the
    call ran, and was refused."""
    monkeypatch.setenv("MPLBACKEND", "qt4agg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now would raise ImportError
    cfg = experiment_config(dataset="digits", tasks="suspects,theory", proxies="csl", seeds=1, epochs=1, subset=120)
    assert cfg.out is None and cfg.tasks == ("suspects", "theory")


@pytest.fixture(autouse=True)
def _environment_back() -> Iterator[None]:  # these tests set variables outside monkeypatch's record on purpose
    yield
    for name in ("NOTEBOOK_ATTACKC26_NEW", "NOTEBOOK_ATTACKC26_THREAD"):
        os.environ.pop(name, None)
