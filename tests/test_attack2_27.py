"""attack2_27: the gather of `SampleTracker.update(..., gather=True)`, the code digest of a user's
model or recorder, and the worker's recorder-key check, attacked where a rank could be left waiting
or a number silently wrong. Fast: two ranks as threads (`test_gather27.FakeRanks`)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_gather27 import FakeRanks, ranks  # noqa: F401  (the fixture)

from harness import SampleTracker
from harness.errors import HarnessError
from harness.tracker.gather import gather_batch


def test_a_dtype_torch_cannot_promote_raises_on_every_rank(ranks: FakeRanks) -> None:  # noqa: F811
    """uint16 labels on rank 0, int64 on rank 1: rank 0 raised in the promotion while rank 1 (whose
    short dtype list left uint16 out) went on into the labels' all_gather and waited there."""

    def step(rank: int) -> Any:
        labels = torch.tensor([0, 1], dtype=torch.uint16 if rank == 0 else torch.int64)
        return gather_batch(torch.tensor([2 * rank, 2 * rank + 1]), losses=torch.ones(2), labels=labels)

    for e in ranks.run(step):
        assert isinstance(e, HarnessError), e
        assert "labels of dtypes ['torch.int64', 'torch.uint16']" in str(e)


def test_a_tensor_given_as_a_list_on_one_rank_raises_on_every_rank(ranks: FakeRanks) -> None:  # noqa: F811
    """labels=[0, 1] on rank 0: its header's dtype code read `.dtype` of the list (AttributeError on
    that rank alone, before the header's collective), and rank 1 waited for ever."""

    def step(rank: int) -> Any:
        labels: Any = [0, 1] if rank == 0 else torch.tensor([0, 1])
        return gather_batch(torch.tensor([2 * rank, 2 * rank + 1]), logits=torch.randn(2, 3), labels=labels)

    got = ranks.run(step)
    assert isinstance(got[0], HarnessError) and "labels must be a torch tensor, got list" in str(got[0]), got[0]
    assert isinstance(got[1], HarnessError) and "rank(s) [0] cannot be gathered" in str(got[1]), got[1]


def test_an_empty_ranks_dtype_does_not_decide_the_gathered_one(ranks: FakeRanks) -> None:  # noqa: F811
    """A rank without samples passing `torch.empty(0)` (float32) as labels made every rank's labels
    float32, and the tracker refused them on every rank as not integer: the rank with samples decides."""

    def step(rank: int) -> tuple[list[int], torch.dtype]:
        tracker = SampleTracker(4)
        if rank == 0:
            idx, logits, labels = torch.tensor([3, 1]), torch.randn(2, 3), torch.tensor([2, 0])
        else:
            idx, logits, labels = torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3), torch.empty(0)
        tracker.update(idx, logits=logits, labels=labels, gather=True)
        g = gather_batch(idx, logits=logits, labels=labels)
        assert g.labels is not None
        return g.labels.tolist(), g.labels.dtype

    for got in ranks.run(step):
        assert got == ([2, 0], torch.int64), got


def test_changing_tensors_raise_on_every_rank_and_the_ranks_stay_in_step(ranks: FakeRanks) -> None:  # noqa: F811
    """A step where rank 1 drops labels=, then float64 losses that require grad: every rank raises at
    the bad step, and the next step's collectives still pair up (scores equal on both ranks)."""

    def step(rank: int) -> list[float]:
        tracker = SampleTracker(4, proxies=["csl"])
        idx = torch.tensor([2 * rank, 2 * rank + 1])
        z = torch.randn(2, 3, generator=torch.Generator().manual_seed(rank))
        with pytest.raises(HarnessError, match=r"only rank\(s\) \[0\] passed labels="):
            tracker.update(idx, logits=z, labels=torch.tensor([0, 1]) if rank == 0 else None, gather=True)
        losses = (torch.arange(2, dtype=torch.float64) + 2 * rank + 1).requires_grad_()
        tracker.update(idx, losses=losses * 1, gather=True)
        tracker.end_epoch()
        return tracker.scores()["csl"].tolist()

    got = ranks.run(step)
    assert got[0] == got[1] == [1.0, 2.0, 3.0, 4.0], got


def _load(tmp_path: Any, name: str, source: str) -> Any:
    """`source` as module `name`, imported from its own file (so that inspect finds its source)."""
    import importlib.util
    import sys

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


FACTORIES = '''
import functools
from torch import nn
HIDDEN = {hidden}

def logged(f):
    @functools.wraps(f)
    def inner(*a, **k):
        return f(*a, **k)
    return inner

class Net(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.fc = nn.Linear(4, w)

    @classmethod
    def build(cls, shape, k):
        return cls({build})

def with_default(shape, k, width=HIDDEN):
    return Net(width)

@logged
def decorated(shape, k):
    return Net(HIDDEN)

def make(width):
    def factory(shape, k):
        return Net(width)
    return factory

closure = make({closure})
'''


@pytest.mark.parametrize("kind", ["classmethod", "with_default", "decorated", "closure"])
def test_a_factory_that_builds_another_model_gets_another_digest(tmp_path: Any, kind: str) -> None:
    """Each of these kept one digest across the edit, so the old model's runs (AUROC, FLOPs) were
    served as the new one's: a classmethod (any bound method: all had the digest of the `method`
    type), a default value read from the module, a decorated factory (its wrapper's code was hashed,
    not the HIDDEN its function reads), a closure's value (`make(64)` vs `make(128)`)."""
    from harness.code_digest import code_digest

    before = {"hidden": 32, "build": 8, "closure": 64}
    changed = {"classmethod": "build", "with_default": "hidden", "decorated": "hidden", "closure": "closure"}[kind]
    old = _load(tmp_path, f"attack2_27_old_{kind}", FACTORIES.format(**before))
    new = _load(tmp_path, f"attack2_27_new_{kind}", FACTORIES.format(**{**before, changed: before[changed] * 2}))
    what = {"classmethod": lambda m: m.Net.build}.get(kind, lambda m: getattr(m, kind))
    assert code_digest(what(old)) != code_digest(what(new))


NOTEBOOK = '''
import sys, types
from harness.code_digest import code_digest
cell = """
def factory(shape, k):
    return 1 if k in {"alpha", "beta", "gamma", "delta", "epsilon"} else 2
"""
module = types.ModuleType("attack2_27_cell")
exec(compile(cell, "<cell>", "exec"), module.__dict__)
print(code_digest(module.factory))
'''


def test_a_notebook_function_with_a_set_literal_has_one_digest_in_every_process() -> None:
    """A function without source (a notebook cell) is hashed by its compiled code, whose constants
    held a frozenset in the order of the process's string hash seed: another digest in every kernel,
    so its runs were never reused."""
    import os
    import subprocess
    import sys

    digests = {subprocess.run([sys.executable, "-c", NOTEBOOK], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(digests) == 1, digests


def test_a_worker_whose_recorder_keys_differ_fails_its_runs_with_one_line_each() -> None:
    """The refusal raised out of the job, and the local pool's worker (and Ray's) printed its traceback
    for every job, around the line that says it: now each run's failure line, nothing trained. A job
    without imports (memprox's own recorders) carries no keys and is not checked."""
    from harness.jobs import DataSource, Job, run_job
    from harness.recipe import Recipe
    from harness.recorders import RecorderRequest
    from harness.runspec import DataSpec, RunSpec

    spec = RunSpec(DataSpec(), "mlp", Recipe(epochs=1), 0)
    job = Job(specs=(spec,), requests=(RecorderRequest.of("train_loss"),), engine="single",
              source=DataSource("digits"), imports=("json",), keys=("train_loss@code-0123",))
    result = run_job(job)
    assert not result.outputs
    assert result.failures == {spec: f"job {spec.label()}: recorder keys differ on this worker (train_loss here, "
                                     "train_loss@code-0123 where it was planned): the recorder's code, or a module "
                                     "value it reads, is not the same here as where the experiment was planned; "
                                     "install the same code on every machine and make such a value a constant of "
                                     "its module (docs/extending.md)"}


def test_the_callbacks_recorder_keeps_a_larger_allowed_repeats_the_user_set(ranks: FakeRanks) -> None:  # noqa: F811
    """`update(gather=True)` keeps a larger `allowed_repeats` (the page says so); the Lightning/HF
    recorder overwrote it with world x padding_batch - 1 at every batch (1 for two ranks), so a user's
    10 (a sampler of their own that repeats) warned all the same."""
    from harness.integrations._common import DistributedRecorder

    def step(rank: int) -> int:
        tracker = SampleTracker(4, proxies=["csl"])
        tracker.allowed_repeats = 10
        DistributedRecorder(tracker).update(torch.tensor([rank]), losses=torch.ones(1))
        return tracker.allowed_repeats

    assert ranks.run(step) == [10, 10]


def test_a_factory_naming_a_long_chain_of_its_modules_functions_is_digested(tmp_path: Any) -> None:
    """The walk recursed twice per function named (its code, then the globals it reads): a factory
    whose module chains 600 functions (f0 calls f1, ... f599) raised RecursionError (a recorder's at
    its module's import). Now a stack of its own: the edit at the chain's end changes the digest."""
    from harness.code_digest import code_digest

    def chain(end: str) -> str:
        return "\n".join(f"def f{i}(x):\n    return f{i + 1}(x)\n" for i in range(599)) + f"\ndef f599(x):\n    {end}\n"

    old = _load(tmp_path, "attack2_27_chain_old", chain("return x"))
    new = _load(tmp_path, "attack2_27_chain_new", chain("return -x"))
    assert code_digest(old.f0) != code_digest(new.f0)
