"""`SampleTracker.update(..., gather=True)` (gather27): a DDP or Accelerate loop of one's own gathers
each batch from every rank with memprox's gather (`harness.tracker.gather`, the one the Lightning and
Hugging Face callbacks use) instead of a hand-written `all_gather` that fails on batches of unequal
size. Fast: two ranks as two threads of this process sharing a fake `all_gather` that, like the real
one, needs one shape and dtype on every rank. Slow: two real processes (gloo) running the page's loop
and a loop of unequal batches. Scores are held to a float64 recomputation of the gathered batches."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError
from harness.integrations._common import DistributedRecorder
from harness.tracker.gather import gather_batch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-training-loop.md"
N, C = 11, 3


class FakeRanks:
    """`world` ranks as threads; `all_gather` exchanges their tensors through a barrier and refuses
    what the real collective cannot do (another shape, dtype or device on some rank)."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world, timeout=5)  # a rank left waiting: BrokenBarrierError
        self.slots: list[Any] = [None] * world
        self.local = threading.local()
        self.calls = 0

    def all_gather(self, parts: list[torch.Tensor], t: torch.Tensor) -> None:
        self.slots[self.local.rank] = t.clone()
        self.barrier.wait()
        shapes = {(s.shape, s.dtype, s.device) for s in self.slots}
        self.barrier.wait()
        if len(shapes) > 1:
            raise RuntimeError(f"all_gather of unequal tensors {shapes}")
        for p, s in zip(parts, self.slots, strict=True):
            p.copy_(s)
        self.barrier.wait()
        if self.local.rank == 0:
            self.calls += 1

    def run(self, step: Callable[[int], Any]) -> list[Any]:
        """step(rank) on every rank at once: what each returned, or the exception it raised."""
        out: list[Any] = [None] * self.world

        def one(rank: int) -> None:
            self.local.rank = rank
            try:
                out[rank] = step(rank)
            except Exception as e:  # noqa: BLE001 - returned for the test to read
                out[rank] = e  # no barrier.abort(): it could break a rank still leaving the last collective

        threads = [threading.Thread(target=one, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


def fake_ranks(monkeypatch: pytest.MonkeyPatch, world: int = 2) -> FakeRanks:
    """torch.distributed as `world` ranks of threads see it (each thread its own rank): other test files'
    `ranks` fixtures return this (a fixture imported across test files trips ruff's F811)."""
    fake = FakeRanks(world)
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: fake.world)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: fake.local.rank)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "gloo")
    monkeypatch.setattr(dist, "all_gather", fake.all_gather)
    return fake


@pytest.fixture
def ranks(monkeypatch: pytest.MonkeyPatch) -> FakeRanks:
    return fake_ranks(monkeypatch)


def _batches(seed: int) -> dict[int, list[tuple[Any, torch.Tensor, torch.Tensor]]]:
    """Per rank, 3 batches of unequal size covering each of the N samples once: rank 1's last has no rows.
    Indices in the shapes a loop may have: int32 tensor, list, numpy array."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(N, generator=g)
    logits = torch.randn(N, C, generator=g)
    labels = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(0))  # a sample keeps its label
    cuts = {0: [order[0:3], order[3:5], order[5:9]], 1: [order[9:10], order[10:11], order[11:11]]}
    kinds = [lambda i: i.to(torch.int32), lambda i: i.tolist(), lambda i: i.numpy()]
    return {r: [(kinds[k](i), logits[i], labels[i]) for k, i in enumerate(cut)] for r, cut in cuts.items()}


def _reference(epochs: list[dict[int, list[tuple[Any, torch.Tensor, torch.Tensor]]]]) -> dict[str, np.ndarray]:
    """csl and aum in float64 from every rank's batches, each sample's first presentation of an epoch."""
    loss, margin = np.full((len(epochs), N), np.nan), np.full((len(epochs), N), np.nan)
    for e, shards in enumerate(epochs):
        for step in range(3):
            for r in (0, 1):
                idx, z, y = shards[r][step]
                z64, y64 = z.double(), y.long()
                ce = nn.functional.cross_entropy(z64, y64, reduction="none").numpy()
                other = z64.scatter(1, y64[:, None], float("-inf")).max(1).values
                m = (z64.gather(1, y64[:, None])[:, 0] - other).numpy()
                for j, i in enumerate(np.asarray(idx, dtype=np.int64).tolist()):
                    if np.isnan(loss[e, i]):
                        loss[e, i], margin[e, i] = ce[j], m[j]
    assert not np.isnan(loss).any()
    return {"csl": loss.sum(0), "aum": -margin.mean(0)}


@pytest.mark.parametrize("what", ["logits+labels", "logits, constructor labels", "losses"])
def test_unequal_batches_gathered_score_as_the_float64_recomputation(ranks: FakeRanks, what: str) -> None:
    """Batches of 3/1, 2/1 and 4/0 rows on the two ranks, indices as int32, list and numpy: both ranks
    hold the same record, csl and aum equal to a float64 recomputation of all ranks' rows."""
    epochs = [_batches(seed) for seed in (1, 2)]
    y_all = torch.zeros(N, dtype=torch.int64)
    for shards in epochs:
        for r in (0, 1):
            for idx, _, y in shards[r]:
                y_all[torch.as_tensor(np.asarray(idx, dtype=np.int64))] = y
    fixed = y_all if what == "logits, constructor labels" else None

    def loop(rank: int) -> dict[str, np.ndarray]:
        tracker = SampleTracker(N, labels=fixed)
        for shards in epochs:
            for idx, z, y in shards[rank]:
                if what == "losses":
                    tracker.update(idx, losses=nn.functional.cross_entropy(z, y, reduction="none"), gather=True)
                else:
                    tracker.update(idx, logits=z, labels=None if fixed is not None else y, gather=True)
            tracker.end_epoch()
        assert tracker.allowed_repeats == 1  # world size - 1
        assert tracker.epochs_presented().tolist() == [2] * N
        keys = ["csl"] if what == "losses" else ["csl", "aum"]
        table = tracker.scores(keys)
        return {k: table[k].to_numpy() for k in keys}

    got = ranks.run(loop)
    assert all(isinstance(g, dict) for g in got), got
    want = _reference(epochs)
    for k in got[0]:
        assert np.array_equal(got[0][k], got[1][k])
        np.testing.assert_allclose(got[0][k], want[k], rtol=1e-6, atol=1e-6)
    assert ranks.calls == 2 * 3 * (4 if what == "logits+labels" else 3)  # a header, the indices, each tensor


def test_a_rank_whose_tensors_disagree_in_length_raises_on_every_rank(ranks: FakeRanks) -> None:
    """Rank 0 passes 4 indices and 5 losses, rank 1 4 indices and 3 losses: 8 and 8 once gathered, so
    the tracker's length check passed and sample 4 got rank 0's 5th loss, samples 5..7 rank 1's three
    (csl [0, 1, 2, 3, 4, 10, 11, 12]), silently (the recorder's own gather, at 5d5080f). Now every rank
    raises, naming the shapes."""

    def loop(rank: int) -> np.ndarray:
        tracker = SampleTracker(8, proxies=["csl"])
        rec = DistributedRecorder(tracker)
        idx = torch.arange(4) + 4 * rank
        losses = torch.arange(5.0) + 10 * rank if rank == 0 else torch.arange(3.0) + 10
        rec.update(idx, losses=losses)
        rec.end_epoch()
        return tracker.scores()["csl"].to_numpy()

    got = ranks.run(loop)
    assert isinstance(got[0], HarnessError), got[0]
    assert "losses has shape (5,) but must be (4,) for 4 indices" in str(got[0])
    assert isinstance(got[1], HarnessError), got[1]
    assert "losses has shape (3,) but must be (4,) for 4 indices" in str(got[1])


def test_ranks_that_pass_different_tensors_raise_on_every_rank(ranks: FakeRanks) -> None:
    """Rank 1 passes no logits (a branch only rank 0 took): the ranks' collectives no longer pair up,
    which left the others waiting for ever; now both raise, naming the ranks that passed logits."""

    def step(rank: int) -> None:
        tracker = SampleTracker(4)
        rec = DistributedRecorder(tracker)
        idx, y = torch.tensor([2 * rank, 2 * rank + 1]), torch.tensor([0, 1])
        z = torch.randn(2, C)
        loss = nn.functional.cross_entropy(z, y, reduction="none")
        rec.update(idx, losses=loss, logits=z if rank == 0 else None, labels=y)

    got = ranks.run(step)
    for e in got:
        assert isinstance(e, HarnessError) and "only rank(s) [0] passed logits=" in str(e), e


def test_dtypes_that_differ_between_ranks_are_gathered_in_their_promotion(ranks: FakeRanks) -> None:
    """bf16 logits on one rank, float32 on the other; int32 labels beside int64: gathered as float32
    and int64 (all_gather needs one dtype on every rank), values exact."""
    z = torch.randn(4, C).bfloat16()
    y = torch.tensor([0, 1, 2, 0])

    def step(rank: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        tracker = SampleTracker(4)
        part = slice(0, 1) if rank == 0 else slice(1, 4)
        logits = z[part] if rank == 0 else z[part].float()
        labels = y[part].int() if rank == 0 else y[part]
        tracker.update(torch.arange(4)[part], logits=logits, labels=labels, gather=True)
        g = gather_batch(torch.arange(4)[part], logits=logits, labels=labels)
        return g.indices, g.logits, g.labels

    for idx, logits, labels in ranks.run(step):
        assert idx.tolist() == [0, 1, 2, 3] and idx.dtype == torch.int64
        assert logits is not None and logits.dtype == torch.float32 and torch.equal(logits, z.float())
        assert labels is not None and torch.equal(labels, y)


def test_a_step_where_no_rank_has_rows_and_bad_indices_are_refused(ranks: FakeRanks) -> None:
    def step(rank: int) -> Any:
        tracker = SampleTracker(4, proxies=["csl"])
        tracker.update([], losses=torch.zeros(0), gather=True)  # a list [] is float64 in numpy: empty passes
        tracker.update(torch.tensor([rank]), losses=torch.tensor([1.0 + rank]), gather=True)
        tracker.update(torch.tensor([2.5]) if rank else torch.tensor([2]), losses=torch.ones(1), gather=True)

    got = ranks.run(step)
    assert isinstance(got[1], HarnessError) and "indices must be a 1-D integer tensor" in str(got[1])
    assert isinstance(got[0], HarnessError) and "rank(s) [1] cannot be gathered" in str(got[0])


def test_nccl_gathers_cpu_tensors_through_the_current_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DataLoader's CPU indices and labels: NCCL takes CUDA tensors only (no GPU here: the choice)."""
    from harness.tracker import gather

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    for backend, want in (("nccl", torch.device("cuda", 3)), ("gloo", torch.device("cpu"))):
        monkeypatch.setattr(torch.distributed, "get_backend", lambda *a, b=backend, **k: b)
        assert gather._collective_device(torch.device("cpu")) == want
    assert gather._collective_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


def test_logits_of_other_classes_or_transposed_are_handled_on_every_rank(ranks: FakeRanks) -> None:
    def step(rank: int) -> Any:
        z = torch.randn(C, 2).T  # (2, C), transposed strides
        tracker = SampleTracker(4)
        tracker.update(torch.tensor([2 * rank, 2 * rank + 1]), logits=z, labels=torch.tensor([0, 1]), gather=True)
        tracker.update(torch.tensor([rank]), logits=torch.randn(1, C + rank), labels=torch.tensor([0]), gather=True)

    for e in ranks.run(step):
        assert isinstance(e, HarnessError) and "different numbers of classes [3, 4]" in str(e), e


def test_one_process_records_the_batch_as_given() -> None:
    """No process group: gather=True changes nothing, bitwise, and leaves allowed_repeats alone."""
    z, y = torch.randn(6, C), torch.tensor([0, 1, 2, 0, 1, 2])
    a, b = SampleTracker(6), SampleTracker(6)
    a.update(np.arange(6, dtype=np.int32), logits=z, labels=y)
    b.update(np.arange(6, dtype=np.int32), logits=z, labels=y, gather=True)
    for t in (a, b):
        t.end_epoch()
    assert b.allowed_repeats == 0
    assert a.scores().equals(b.scores())


def _snippet() -> str:
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("## Several processes: DDP and Accelerate"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_page_gathers_with_update_gather_true() -> None:
    code = _snippet()
    assert "gather=True" in code and "all_gather" not in code
    compile(code, "snippet", "exec")


WORKER = r'''
import sys, warnings
import numpy as np, torch, torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from harness import SampleTracker
from harness.integrations import WithIndex

mode, out, snippet = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
N, C, epochs, BATCH = 37, 4, 3, 4
dist.init_process_group("gloo")
rank = dist.get_rank()
g = torch.Generator().manual_seed(1)
x, y = torch.randn(N, 6, generator=g), torch.randint(0, C, (N,), generator=g)
data = WithIndex(TensorDataset(x, y))
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, C))
local, seen = [], []
if mode == "page":  # the page's loop as written: DDP, a padding DistributedSampler
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
    model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = SampleTracker(N)
    update = tracker.update

    def spy(idx, **kw):  # what each rank passed, and what the tracker got
        local.append(np.asarray(idx))
        update(idx, **kw)
    tracker.update = spy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(snippet, {"torch": torch, "nn": nn, "tracker": tracker, "epochs": epochs, "sampler": sampler,
                       "loader": loader, "model": model, "opt": opt})
else:  # unequal shards: rank 0 21 samples (last batch 1 row), rank 1 16 (last batch 0 rows); labels at construction
    tracker = SampleTracker(N, labels=y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(epochs):
            order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
            mine = order[:21] if rank == 0 else order[21:]
            for k, idx in enumerate([mine[i:i + BATCH] for i in range(0, 24, BATCH)]):
                logits = model(x[idx])
                loss = nn.functional.cross_entropy(logits, y[idx], reduction="sum")
                opt.zero_grad()
                loss.backward()
                opt.step()
                given = idx.to(torch.int32) if k % 3 == 0 else idx.tolist() if k % 3 == 1 else idx.numpy()
                local.append(idx.numpy())
                tracker.update(given, logits=logits, gather=True)
                g_idx = [torch.zeros(BATCH, dtype=torch.int64) for _ in range(2)]
                padded = torch.cat([idx, torch.full((BATCH - len(idx),), -1)])
                dist.all_gather(g_idx, padded)
                whole = torch.cat([t[t >= 0] for t in g_idx])
                z = [torch.zeros(BATCH, C) for _ in range(2)]
                dist.all_gather(z, torch.cat([logits.detach(), torch.zeros(BATCH - len(idx), C)]))
                seen.append((epoch, whole.numpy(), torch.cat([t[:len(w)] for t, w in zip(z, [
                    v[v >= 0] for v in g_idx])]).numpy()))
            tracker.end_epoch()
s = tracker.scores(["csl", "aum", "forgetting"])
np.savez(f"{out}/{rank}.npz", csl=s["csl"], aum=s["aum"], forgetting=s["forgetting"],
         repeats=sum("presented more than once" in str(w.message) for w in caught),
         allowed=tracker.allowed_repeats, sizes=np.array([len(v) for v in local]),
         epoch=np.concatenate([np.full(len(b[1]), b[0]) for b in seen]) if seen else np.zeros(0),
         idx=np.concatenate([b[1] for b in seen]) if seen else np.zeros(0),
         logits=np.concatenate([b[2] for b in seen]) if seen else np.zeros((0, C)))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["page", "unequal"])
def test_two_processes_gather_with_update_gather_true(tmp_path: Path, mode: str) -> None:
    """2 CPU processes (gloo). "page": the page's DDP loop as written (its sampler repeats 1 sample an
    epoch, which gather=True's allowed_repeats covers: no warning); both ranks hold the same scores.
    "unequal": shards of 21 and 16 samples in batches of 4 (last ones of 1 and 0 rows), indices as
    int32, list and numpy, labels from the constructor: csl, aum and forgetting equal a float64
    recomputation of the rows every rank trained on (gathered apart, by a plain all_gather)."""
    script, snippet = tmp_path / "worker.py", tmp_path / "snippet.py"
    script.write_text(WORKER)
    snippet.write_text(_snippet())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), mode, str(tmp_path), str(snippet)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = [np.load(tmp_path / f"{r}.npz") for r in (0, 1)]
    for key in ("csl", "aum", "forgetting"):
        assert np.array_equal(got[0][key], got[1][key])
    assert int(got[0]["repeats"]) == 0 and int(got[0]["allowed"]) == 1
    if mode == "page":
        assert got[0]["sizes"].tolist() == got[1]["sizes"].tolist()  # the sampler evens the shards
        assert np.isfinite(got[0]["csl"]).all()
        return
    assert got[0]["sizes"].tolist() == [4, 4, 4, 4, 4, 1] * 3 and got[1]["sizes"].tolist() == [4, 4, 4, 4, 0, 0] * 3
    y = torch.randint(0, 4, (37,), generator=_seeded()).numpy()
    loss, margin = np.zeros((3, 37)), np.zeros((3, 37))
    for e in range(3):
        at = got[0]["epoch"] == e
        idx, z = got[0]["idx"][at].astype(np.int64), torch.from_numpy(got[0]["logits"][at]).double()
        assert sorted(idx.tolist()) == list(range(37))  # every sample once an epoch
        yy = torch.from_numpy(y[idx])
        loss[e, idx] = nn.functional.cross_entropy(z, yy, reduction="none").numpy()
        other = z.scatter(1, yy[:, None], float("-inf")).max(1).values
        margin[e, idx] = (z.gather(1, yy[:, None])[:, 0] - other).numpy()
    np.testing.assert_allclose(got[0]["csl"], loss.sum(0), rtol=1e-6, atol=0)
    np.testing.assert_allclose(got[0]["aum"], -margin.mean(0), rtol=0, atol=1e-6)
    correct = margin > 0
    forgetting = (correct[:-1] & ~correct[1:]).sum(0).astype(np.float64)
    forgetting[~correct.any(0)] = 3
    assert np.array_equal(got[0]["forgetting"], forgetting)


def _seeded() -> torch.Generator:
    """The worker's generator after x: y is drawn second."""
    g = torch.Generator().manual_seed(1)
    torch.randn(37, 6, generator=g)
    return g
