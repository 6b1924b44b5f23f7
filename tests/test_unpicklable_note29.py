"""A recorder whose exception class cannot be pickled (an `__init__(self, a, b)`): the local worker sent a
RuntimeError in its place without the recorder's note ("job ...: Unpicklable: boom", no recorder, no way out),
and a Ray job's reached the driver as Ray's UnserializableException, read as a dead worker (mine29)."""

from __future__ import annotations

import pickle
import threading
from types import SimpleNamespace

import pytest

from harness.executors import ray_jobs
from harness.executors.worker import portable
from harness.recorders.bank import RECORDER_NOTE, name_recorder
from harness.runner import failure_line


class Unpicklable(Exception):
    """Unpicklable by what it holds (a lock), whatever reducer the process has: tblib's, which dask installs
    when imported by another test, pickles an `__init__(self, a, b)` exception that plain pickle cannot."""

    def __init__(self, a, b) -> None:
        super().__init__(f"boom {a}")
        self.b = b
        self.lock = threading.Lock()


def _raised_in_recorder() -> Exception:
    return name_recorder(Unpicklable("unpicklable", 2), "boom_rec@code-0a2d1b8e2a82", lambda: None)


def test_the_worker_keeps_the_recorders_note_on_the_error_it_sends() -> None:
    sent = pickle.loads(pickle.dumps(portable(_raised_in_recorder())))
    assert type(sent) is RuntimeError and str(sent) == "Unpicklable: boom unpicklable"
    job = SimpleNamespace(label=lambda: "digits noise=0.1 mlp seed0")
    assert failure_line(job, sent) == (  # type: ignore[arg-type]
        f"job digits noise=0.1 mlp seed0: Unpicklable: boom unpicklable ({RECORDER_NOTE}boom_rec (<lambda>): a proxy "
        "that needs it fails on every run that records it; drop that proxy from --proxies to score the others)")


def test_a_ray_job_raises_what_ray_can_send() -> None:
    def job_fn(job):
        raise _raised_in_recorder()

    job = SimpleNamespace(label=lambda: "digits noise=0.1 mlp seed0", checkpoint_root=None)
    with pytest.raises(RuntimeError) as caught:
        ray_jobs._call(job_fn, job)  # type: ignore[arg-type]
    sent = caught.value  # Ray pickles it for the driver, without the chain (tblib's reducer, if installed, adds it)
    assert type(sent) is RuntimeError and sent.__cause__ is None
    assert str(sent) == "Unpicklable: boom unpicklable" and sent.__notes__ == [f"{RECORDER_NOTE}boom_rec (<lambda>)"]
    assert pickle.loads(pickle.dumps(RuntimeError(*sent.args))).args == sent.args


def test_a_picklable_error_is_sent_as_it_is() -> None:
    error = name_recorder(ValueError("boom"), "train_loss", lambda: None)
    assert portable(error) is error

    def job_fn(job):
        raise error

    with pytest.raises(ValueError) as caught:
        ray_jobs._call(job_fn, SimpleNamespace(label=lambda: "x", checkpoint_root=None))  # type: ignore[arg-type]
    assert caught.value is error
