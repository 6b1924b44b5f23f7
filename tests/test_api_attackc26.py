"""`run_experiment` put back the whole of os.environ when it returned (f75f121): a variable another
thread of the notebook, a proxy plugin or a callback set during the call, on purpose, was deleted
or set back silently. Only what runs set (Ray's, scikit-learn's KMP_*, thread sizes) is put back."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

import harness.jobs
from harness.api import process_hooks_kept, run_experiment

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


@pytest.fixture(autouse=True)
def _environment_back() -> Iterator[None]:  # these tests set variables outside monkeypatch's record on purpose
    yield
    for name in ("NOTEBOOK_ATTACKC26_NEW", "NOTEBOOK_ATTACKC26_THREAD"):
        os.environ.pop(name, None)
