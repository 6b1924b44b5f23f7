"""A user's own loop in new shapes (tracker27), each scored against a float64 recomputation of what the
loop handed to `update()` under the tracker's rule (a sample's first presentation of an epoch counts):
several processes (plain DDP with a padding `DistributedSampler`; an `accelerate.Accelerator` loop with
bf16, gradient accumulation and `even_batches`), `torch.compile`, and eval batches that are dicts.
docs/own-training-loop.md#several-processes-ddp-and-accelerate is the page these hold to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from harness import SampleTracker
from harness.errors import HarnessError
from harness.integrations import WithIndex

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-training-loop.md"
N, C, EPOCHS, BATCH = 37, 4, 3, 4  # 37 samples: 2 ranks of batch 4 pad the epoch


class Reference:
    """csl, aum and forgetting in float64 from the batches a loop passed, first presentation per epoch."""

    def __init__(self) -> None:
        self.loss = np.full((EPOCHS, N), np.nan)
        self.margin = np.full((EPOCHS, N), np.nan)
        self.count = np.zeros((EPOCHS, N), dtype=int)

    def add(self, epoch: int, idx: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        z, y = logits.detach().double(), labels.long()
        ce = nn.functional.cross_entropy(z, y, reduction="none").numpy()
        margin = (z.gather(1, y[:, None])[:, 0] - z.scatter(1, y[:, None], float("-inf")).max(1).values).numpy()
        for j, i in enumerate(idx.long().tolist()):
            self.count[epoch, i] += 1
            if self.count[epoch, i] == 1:
                self.loss[epoch, i], self.margin[epoch, i] = ce[j], margin[j]

    def check(self, scores: dict[str, np.ndarray]) -> None:
        assert (self.count >= 1).all()  # every sample every epoch: the gathered loop saw them all
        np.testing.assert_allclose(scores["csl"], self.loss.sum(0), rtol=1e-6, atol=0)
        np.testing.assert_allclose(scores["aum"], -self.margin.mean(0), rtol=0, atol=1e-6)
        correct = self.margin > 0
        forgetting = (correct[:-1] & ~correct[1:]).sum(0).astype(np.float64)
        forgetting[~correct.any(0)] = EPOCHS
        assert np.array_equal(scores["forgetting"], forgetting)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 6, generator=g), torch.randint(0, C, (N,), generator=g)


def _scores(tracker: SampleTracker) -> dict[str, np.ndarray]:
    table = tracker.scores(["csl", "aum", "forgetting"])
    return {k: table[k].to_numpy() for k in ("csl", "aum", "forgetting")}


def test_the_page_tells_a_ddp_and_an_accelerate_loop_what_to_gather() -> None:
    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    assert "## Several processes: DDP and Accelerate" in text
    assert "accelerator.gather_for_metrics((idx, loss.detach(), logits.detach(), yb))" in text
    assert "tracker.allowed_repeats = dist.get_world_size() - 1" in text


@pytest.mark.parametrize("allowed", [0, 1])
def test_gathered_distributed_sampler_batches_count_each_sample_once(allowed: int) -> None:
    """Two ranks' `DistributedSampler` shards (37 samples: rank 1 repeats one), concatenated in rank
    order as `all_gather` gives them: each sample scores its first presentation once per epoch, and
    `allowed_repeats = world - 1` takes the padding's warning away."""
    x, y = _data()
    torch.manual_seed(0)
    data = WithIndex(TensorDataset(x, y))
    samplers = [DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=0) for r in (0, 1)]
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, C))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker, ref = SampleTracker(N), Reference()
    tracker.allowed_repeats = allowed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(EPOCHS):
            for s in samplers:
                s.set_epoch(epoch)
            shards = [DataLoader(data, batch_size=BATCH, sampler=s) for s in samplers]
            for (x0, y0, i0), (x1, y1, i1) in zip(*shards, strict=True):
                xb, yb, idx = torch.cat([x0, x1]), torch.cat([y0, y1]), torch.cat([i0, i1])
                logits = model(xb)
                loss = nn.functional.cross_entropy(logits, yb, reduction="none")
                opt.zero_grad()
                loss.mean().backward()
                opt.step()
                tracker.update(idx, losses=loss, logits=logits, labels=yb)
                ref.add(epoch, idx, logits, yb)
            tracker.end_epoch()
    assert ref.count.sum(1).tolist() == [38] * EPOCHS and ref.count.max() == 2  # one padded repeat an epoch
    assert tracker.epochs_presented().tolist() == [EPOCHS] * N
    ref.check(_scores(tracker))
    repeats = [w for w in caught if "presented more than once" in str(w.message)]
    assert len(repeats) == (1 if allowed == 0 else 0)


def test_eval_epoch_names_a_dict_batch_and_how_to_pass_it() -> None:
    """`WithIndex` over a dataset of dicts yields dict batches; eval_epoch's advice used to be that
    very wrapper (so the user went round in a circle): it now names the keys and the tuple to pass."""
    x, y = _data()
    model = nn.Linear(6, C)
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    dicts = [{"pixels": x[i], "target": y[i]} for i in range(N)]
    loader = DataLoader(WithIndex(dicts), batch_size=8)
    with pytest.raises(HarnessError, match=r"got a dict with keys 'pixels', 'target', 'sample_index'; pass a "
                                           r"generator that picks them"):
        tracker.eval_epoch(model, loader)
    tracker.eval_epoch(model, ((b["pixels"], b["target"], b["sample_index"]) for b in loader))  # the advice works
    direct = SampleTracker(N)
    direct.update(torch.arange(N), logits=model(x), labels=y)
    direct.end_epoch()
    direct.eval_epoch(model, (x, y))
    assert np.array_equal(tracker.scores(["final_loss"])["final_loss"].to_numpy(),
                          direct.scores(["final_loss"])["final_loss"].to_numpy())


def test_eval_epoch_says_an_index_first_batch_came_in_another_order() -> None:
    """A dataset yielding (index, x, y) put the features where eval_epoch reads the labels: it said
    'labels must be integer class ids, got torch.float32', which names no cause; now it names the order."""
    x, y = _data()
    model = nn.Linear(6, C)
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    loader = DataLoader([(i, x[i], y[i]) for i in range(N)], batch_size=8)
    with pytest.raises(HarnessError, match=r"batches are \(x, y, index\) in that order: a dataset yielding "
                                           r"\(index, x, y\) needs"):
        tracker.eval_epoch(model, loader)
    tracker.eval_epoch(model, ((xb, yb, i) for i, xb, yb in loader))  # the advice works
    assert np.isfinite(tracker.scores(["final_loss"])["final_loss"].to_numpy()).all()


@pytest.mark.slow
@pytest.mark.parametrize("compile_step", [False, True])
def test_a_compiled_model_scores_as_its_own_logits_give(compile_step: bool) -> None:
    """`torch.compile(model)` on the CPU (inductor), and a compiled step that calls `update()`."""
    x, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, C))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker, ref = SampleTracker(N), Reference()
    compiled = model if compile_step else torch.compile(model)

    def step(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits = compiled(xb)
        loss = nn.functional.cross_entropy(logits, yb, reduction="none")
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        tracker.update(idx, losses=loss, logits=logits, labels=yb)
        return logits.detach()

    run = torch.compile(step) if compile_step else step
    try:
        for epoch in range(EPOCHS):
            for idx in torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(BATCH):
                ref.add(epoch, idx, run(x[idx], y[idx], idx), y[idx])
            tracker.end_epoch()
    finally:
        torch._dynamo.reset()
    ref.check(_scores(tracker))


WORKER = r'''
import sys
import numpy as np, torch, torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from harness import SampleTracker
from harness.integrations import WithIndex

mode, out = sys.argv[1], sys.argv[2]
N, C, EPOCHS, BATCH = 37, 4, 3, 4
g = torch.Generator().manual_seed(1)
x, y = torch.randn(N, 6, generator=g), torch.randint(0, C, (N,), generator=g)
data = WithIndex(TensorDataset(x, y))
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, C))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
if mode == "ddp":
    dist.init_process_group("gloo")
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
    model = nn.parallel.DistributedDataParallel(model)

    def gather(t):
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
else:
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=True, mixed_precision="bf16", gradient_accumulation_steps=2)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True)
    model, opt, loader = accelerator.prepare(model, opt, loader)
tracker = SampleTracker(N)
seen = []
for epoch in range(EPOCHS):
    if mode == "ddp":
        sampler.set_epoch(epoch)
    for xb, yb, idx in loader:
        if mode == "ddp":
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb, reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            batch = tuple(gather(t) for t in (idx, loss.detach(), logits.detach(), yb))
        else:
            with accelerator.accumulate(model):
                logits = model(xb)
                loss = nn.functional.cross_entropy(logits, yb, reduction="none")
                accelerator.backward(loss.mean())
                opt.step()
                opt.zero_grad()
            both = (idx, loss.detach(), logits.detach(), yb)
            batch = accelerator.gather_for_metrics(both) if mode == "metrics" else accelerator.gather(both)
        tracker.update(batch[0], losses=batch[1], logits=batch[2], labels=batch[3])
        seen.append([epoch, batch[0].numpy(), batch[2].float().numpy(), batch[3].numpy()])
    tracker.end_epoch()
tracker.eval_epoch(model, (x, y))  # every rank, all samples, through the wrapped model
s = tracker.scores(["csl", "aum", "forgetting", "final_loss"])
with torch.no_grad():
    own = nn.functional.cross_entropy(model(x).double(), y, reduction="none").numpy()
np.savez(f"{out}/{dist.get_rank()}.npz", csl=s["csl"], aum=s["aum"], forgetting=s["forgetting"],
         final_loss=s["final_loss"], own_final_loss=own, training=model.training,
         epoch=np.concatenate([np.full(len(b[1]), b[0]) for b in seen]), idx=np.concatenate([b[1] for b in seen]),
         logits=np.concatenate([b[2] for b in seen]), labels=np.concatenate([b[3] for b in seen]),
         dtypes=str(logits.dtype))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "per_epoch"), [("ddp", 38), ("metrics", 37), ("gather", 40)])
def test_two_processes_gathered_score_as_the_float64_recomputation(tmp_path: Path, mode: str,
                                                                   per_epoch: int) -> None:
    """2 CPU processes (gloo): plain DDP with all_gather (its sampler repeats 1 sample an epoch),
    Accelerate (bf16, accumulation 2) with gather_for_metrics (no repeat) and with gather (3 repeats
    of even_batches): both ranks hold the same scores, those of each sample's first presentation, and
    an eval_epoch over all samples through the wrapped model gives final_loss as the model computes it."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), mode, str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [np.load(tmp_path / f"{r}.npz") for r in (0, 1)]
    for key in ("csl", "aum", "forgetting"):
        assert np.array_equal(ranks[0][key], ranks[1][key])
    got, ref = ranks[0], Reference()
    assert str(got["dtypes"]) == "torch.float32"  # accelerate's bf16 forward returns float32 logits
    for epoch in range(EPOCHS):
        at = got["epoch"] == epoch
        ref.add(epoch, torch.from_numpy(got["idx"][at]), torch.from_numpy(got["logits"][at]),
                torch.from_numpy(got["labels"][at]))
    assert ref.count.sum(1).tolist() == [per_epoch] * EPOCHS
    ref.check({k: got[k] for k in ("csl", "aum", "forgetting")})
    assert bool(got["training"])  # eval_epoch gave the wrapped model back in train mode
    np.testing.assert_allclose(got["final_loss"], got["own_final_loss"], rtol=1e-6, atol=0)
