"""Worker and thread counts of an executor built in code (issue 20): the CLI and `run_experiment`
check them, but `LocalExecutor(workers=-1)` started no worker and its run waited for ever, and
`threads=0` divided by zero. Both are refused when the executor is made, naming the argument."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.executors.local import LocalExecutor


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"workers": -1}, r"worker count must be an integer >= 1 \(got -1\); fix LocalExecutor\(workers=...\)"),
    ({"workers": 0}, r"worker count must be an integer >= 1 \(got 0\)"),
    ({"workers": 2.5}, r"worker count must be an integer >= 1 \(got 2.5\)"),
    ({"workers": True}, r"worker count must be an integer >= 1 \(got True\)"),
    ({"threads": 0}, r"thread count must be an integer >= 1 \(got 0\); fix LocalExecutor\(threads=...\)"),
    ({"threads": 10**6}, r"thread count must be at most 1024"),
])
def test_a_local_executor_of_impossible_size_is_refused(kwargs, message) -> None:
    with pytest.raises(HarnessError, match=message):
        LocalExecutor(progress=False, **kwargs)


def test_sizes_that_make_sense_are_kept() -> None:
    executor = LocalExecutor(workers=3, threads=2, progress=False)
    assert (executor.workers, executor.threads) == (3, 2)
    assert LocalExecutor(progress=False).workers is None  # the default: the usable CPUs
