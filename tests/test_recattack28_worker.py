"""A job's result or exception holding a torch tensor reaches the driver with its values (recattack28).

The worker pickled its answer with multiprocessing's ForkingPickler (74a2636; `Connection.send` before it
did the same): torch registers reductions on that pickler that move a CPU tensor's storage into shared
memory and send a descriptor shared through multiprocessing's resource sharer, whose authkey is the
worker's own. The driver, another interpreter, raised AuthenticationError in its recv. Fails at 9c7e8d3."""

from __future__ import annotations

import pytest
import torch
from test_jobsattack28_worker import _answer


def returns_tensor(job: object) -> object:
    return {"small": torch.arange(5.0), "big": torch.full((100_000,), 2.0)}


def raises_with_tensor(job: object) -> object:
    raise ValueError(torch.tensor([1.5, float("nan")]))


@pytest.mark.timeout(60)
def test_a_tensor_result_arrives_with_its_values() -> None:
    answer, code = _answer(returns_tensor)
    assert answer is not EOFError
    job_id, ok, payload = answer  # type: ignore[misc]
    assert (job_id, ok, code) == (0, True, 0), payload
    assert payload["small"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert float(payload["big"].sum()) == 200_000.0


@pytest.mark.timeout(60)
def test_an_exception_holding_a_tensor_arrives() -> None:
    answer, code = _answer(raises_with_tensor)
    job_id, ok, error = answer  # type: ignore[misc]
    assert (job_id, ok, type(error), code) == (0, False, ValueError, 0)
    assert str(error) == "tensor([1.5000,    nan])"
