"""The own-loop tracker's resume under REAL DDP processes (ddp31): torch.distributed with gloo on the CPU, world size 2,
N = 37 (odd: the `DistributedSampler` pads each epoch with 1 repeat), batch 4 per rank, 2 epochs, the page's loop
(docs/own-training-loop.md: DDP model, `update(..., gather=True)`, `end_epoch()`, an eval pass after each epoch).
Epoch 2 passes label-smoothed `losses=` in its steps 0 and 3 (the other-loss warning, counted over the open epoch).

1. An uninterrupted run against runs whose processes save model, optimizer and `tracker.state_dict()` (per rank,
   `torch.save`) at a point and stop; new processes load (`weights_only=True`) and finish. Points: "mid0" / "mid1"
   (after an epoch's 2nd step), "last0" / "last1" (after an epoch's last step, before `end_epoch()`), "between"
   (after epoch 1's `end_epoch()` and eval pass). Per rank, exactly equal: every warning (category, text, order),
   `scores()` and `scores("all")`, `suspects(k=N)`, `epochs_presented()`; and `csl` equals the float64 sum of the
   float32 losses each sample's first gathered presentation of each epoch had (rank 0's rows first).
2. Saved at 2 ranks, resumed in 1 process (world size 1): the open epoch's remaining steps present what the two
   ranks would have (rank 0's batch then rank 1's, padding included), later epochs the 1-process sampler's order.
3. Mode "repeat": a sampler whose rank 0 presents its second sample of epoch 2 twice (a real repeat).

Processes are this file run as a script (`_worker`), several runs one after another per process. The default run is
one launch pair (mode "repeat", point "mid1"); the rest is slow. Skipped when gloo cannot start."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

N, C, D, BATCH, EPOCHS = 37, 4, 6, 4, 2
STEPS = 5  # ceil(19 / 4): each rank's shard is 19 samples (20 with the repeat)
SMOOTH = {(1, 0), (1, 3)}  # (epoch, step) whose losses= are label-smoothed
POINTS = {"mid0": (0, 1), "last0": (0, STEPS - 1), "between": (0, "end"), "mid1": (1, 1), "last1": (1, STEPS - 1)}
SKIP_CODE = 77  # the worker could not start gloo
HERE = Path(__file__).resolve()


class RepeatSampler(DistributedSampler):  # type: ignore[type-arg]
    """A `DistributedSampler` whose rank 0 presents its second sample of epoch 2 again at the end (a real repeat)."""

    def __iter__(self) -> Any:
        order = list(super().__iter__())
        if self.epoch == 1 and self.rank == 0:
            order.append(order[1])  # not order[0]: that one is the padding's repeat (rank 1's last)
        return iter(order)

    def __len__(self) -> int:
        return super().__len__() + (self.epoch == 1 and self.rank == 0)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, D, generator=g), torch.randint(0, C, (N,), generator=g)


def _loader(mode: str, world: int, rank: int, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    from harness.integrations import WithIndex

    x, y = _data()
    kind = RepeatSampler if mode == "repeat" else DistributedSampler
    sampler = kind(WithIndex(TensorDataset(x, y)), num_replicas=world, rank=rank, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    return list(DataLoader(WithIndex(TensorDataset(x, y)), batch_size=BATCH, sampler=sampler))


def _one_run(job: dict[str, Any], rank: int, world: int) -> None:
    """One training of the page's loop: from scratch or from `job["resume"]`, to the end or to `job["stop"]`."""
    from harness import SampleTracker

    mode = job["mode"]
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    tracker = SampleTracker(N)
    said: list[tuple[str, str]] = []
    log: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []
    start, saved_world = (0, 0), world
    if job.get("resume"):
        saved = torch.load(job["resume"], weights_only=True)
        module.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        tracker.load_state_dict(saved["tracker"])
        said, log = json.loads(saved["said"]), pickle.loads(saved["log"].numpy().tobytes())
        epoch, step = saved["epoch"], saved["step"]
        start, saved_world = ((epoch + 1, 0) if step < 0 else (epoch, step + 1)), int(saved["world"])
    model = nn.parallel.DistributedDataParallel(module)
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(start[0], EPOCHS):
            # the open epoch of a state saved in another world size: what its ranks would have presented, in rank order
            shards = saved_world if epoch == start[0] and start[1] > 0 else world
            parts = [_loader(mode, shards, r, epoch) for r in ([rank] if shards == world else range(shards))]
            for step in range(start[1] if epoch == start[0] else 0, max(map(len, parts))):
                xb, yb, idx = (torch.cat([p[step][i] for p in parts if step < len(p)]) for i in range(3))
                logits = model(xb)
                smooth = 0.1 if (epoch, step) in SMOOTH else 0.0
                loss = nn.functional.cross_entropy(logits, yb, reduction="none", label_smoothing=smooth)
                opt.zero_grad()
                loss.mean().backward()
                opt.step()
                tracker.update(idx, losses=loss, logits=logits, labels=yb, gather=True)
                log.append((epoch, step, rank, idx.numpy().copy(), loss.detach().numpy().copy()))
                if job.get("stop") == [epoch, step]:
                    return _save(job, module, opt, tracker, said + _said(caught), log, epoch, step, world)
            tracker.end_epoch()
            tracker.eval_epoch(model, (x, y))
            if job.get("stop") == [epoch, "end"]:
                return _save(job, module, opt, tracker, said + _said(caught), log, epoch, -1, world)
        allowed = tracker.allowed_repeats
        out = {"scores": tracker.copy().scores(), "all": tracker.copy().scores("all"),
               "suspects": tracker.copy().suspects(k=N), "presented": tracker.epochs_presented()}
    out.update(said=said + _said(caught), log=log, allowed=allowed)
    Path(job["out"]).write_bytes(pickle.dumps(out))


def _said(caught: list[warnings.WarningMessage]) -> list[tuple[str, str]]:
    return [(w.category.__name__, str(w.message)) for w in caught if "SampleTracker" in str(w.message)]


def _save(job: dict[str, Any], module: nn.Module, opt: torch.optim.Optimizer, tracker: Any,
          said: list[tuple[str, str]], log: list[Any], epoch: int, step: int, world: int) -> None:
    torch.save({"model": module.state_dict(), "opt": opt.state_dict(), "tracker": tracker.state_dict(),
                "said": json.dumps(said), "log": torch.frombuffer(bytearray(pickle.dumps(log)), dtype=torch.uint8),
                "epoch": epoch, "step": step, "world": world}, job["save"])


def _worker(jobs_file: str) -> int:
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", timeout=__import__("datetime").timedelta(seconds=60))
    except Exception as err:  # noqa: BLE001 -- any failure to start gloo skips the test
        print(f"gloo did not start: {err}", file=sys.stderr)
        return SKIP_CODE
    rank, world = dist.get_rank(), dist.get_world_size()
    for job in json.loads(Path(jobs_file).read_text()):
        job = {k: (v.format(rank=rank) if isinstance(v, str) else v) for k, v in job.items()}
        _one_run(job, rank, world)
        dist.barrier()
    dist.destroy_process_group()
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(tmp: Path, world: int, jobs: list[dict[str, Any]], name: str) -> None:
    """`world` processes of this file, one job list; skips the test when gloo cannot start."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    jobs_file = tmp / f"{name}.json"
    jobs_file.write_text(json.dumps(jobs))
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, str(HERE), str(jobs_file)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            done.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(code == SKIP_CODE for code, _ in done):
        pytest.skip("gloo could not start: " + " | ".join(err[-300:] for _, err in done))
    for code, err in done:
        assert code == 0, err[-4000:]


def _load(path: Path) -> dict[str, Any]:
    return pickle.loads(path.read_bytes())  # written by this test's own worker


def _csl_from_log(log: list[tuple[int, int, int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each sample's float32 losses of its first gathered presentation of each epoch, summed in float64."""
    csl = np.zeros(N)
    for epoch in range(EPOCHS):
        seen: set[int] = set()
        for _, _, _, idx, loss in sorted((r for r in log if r[0] == epoch), key=lambda r: (r[1], r[2])):
            for i, value in zip(idx.tolist(), loss.tolist()):
                if i not in seen:
                    seen.add(i)
                    csl[i] += np.float64(np.float32(value))
    return csl


def _equal(a: Any, b: Any) -> bool:
    """Two saved states hold the same values: tensors bitwise (NaN where NaN), the rest by ==."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.isnan() if a.is_floating_point() else a, b.isnan() if b.is_floating_point() else b)
                and torch.equal(a.nan_to_num() if a.is_floating_point() else a,
                                b.nan_to_num() if b.is_floating_point() else b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, type(a)) and len(a) == len(b) and all(map(_equal, a, b))
    return bool(a == b)


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["said"] == b["said"]
    for key in ("scores", "all", "suspects"):
        pd.testing.assert_frame_equal(a[key], b[key], check_exact=True)
    assert np.array_equal(a["presented"], b["presented"])


def _expected_warnings(mode: str) -> list[str]:
    """What the uninterrupted run says: the other-loss warning at epoch 2 (2 smoothed steps); with a real repeat,
    the repeat warning at epoch 2 (the padding's 1 allowed, the real one on top)."""
    return ["losses= of"] + (["presented more than once"] if mode == "repeat" else [])


def _pair(tmp: Path, modes: list[str], points: list[str]) -> dict[tuple[str, str], Any]:
    """Launch 1: the uninterrupted runs and the runs stopped at each point; launch 2: new processes resume them."""
    first: list[dict[str, Any]] = []
    for mode in modes:
        first.append({"mode": mode, "out": str(tmp / f"full_{mode}_{{rank}}.pkl")})
        first += [{"mode": mode, "stop": list(POINTS[p]), "save": str(tmp / f"ckpt_{mode}_{p}_{{rank}}.pt")}
                  for p in points]
    _launch(tmp, 2, first, "first")
    for mode in modes:  # every rank saves the same tracker state: saving rank 0's alone would do
        for p in points:
            saved = [torch.load(tmp / f"ckpt_{mode}_{p}_{r}.pt", weights_only=True)["tracker"] for r in (0, 1)]
            assert _equal(saved[0], saved[1]), (mode, p)
    second = [{"mode": m, "resume": str(tmp / f"ckpt_{m}_{p}_{{rank}}.pt"),
               "out": str(tmp / f"res_{m}_{p}_{{rank}}.pkl")} for m in modes for p in points]
    _launch(tmp, 2, second, "second")
    return {(m, p): [(_load(tmp / f"full_{m}_{r}.pkl"), _load(tmp / f"res_{m}_{p}_{r}.pkl")) for r in (0, 1)]
            for m in modes for p in points}


def _check_pairs(results: dict[tuple[str, str], Any]) -> None:
    for (mode, _point), ranks in results.items():
        for full, resumed in ranks:
            kinds = [msg for _, msg in full["said"]]
            assert len(kinds) == len(_expected_warnings(mode)), (mode, kinds)
            ordered = sorted(kinds, key=lambda s: "losses=" not in s)
            assert all(w in k for w, k in zip(_expected_warnings(mode), ordered))
            assert all(" in epoch 2 " in k for k in kinds)
            if mode == "repeat":  # the padding's repeat (1 allowed) and the real one
                assert kinds[0].startswith("SampleTracker: 2 sample(s) were presented more than once in epoch 2")
            _same(full, resumed)
            assert full["allowed"] == resumed["allowed"] == 1
            for run in ("full", "resumed"):  # both ranks' rows: rank 0's first within a step
                log = [row for pair in ranks for row in pair[run == "resumed"]["log"]]
                np.testing.assert_array_equal((full if run == "full" else resumed)["scores"]["csl"].to_numpy(),
                                              _csl_from_log(log))
        assert ranks[0][1]["said"] == ranks[1][1]["said"]
        pd.testing.assert_frame_equal(ranks[0][1]["all"], ranks[1][1]["all"], check_exact=True)


def test_resumed_mid_epoch_in_two_processes_scores_and_warns_as_the_uninterrupted_run(tmp_path: Path) -> None:
    _check_pairs(_pair(tmp_path, ["repeat"], ["mid1"]))


@pytest.mark.slow
def test_resumed_at_every_point_in_two_processes_scores_and_warns_as_the_uninterrupted_run(tmp_path: Path) -> None:
    _check_pairs(_pair(tmp_path, ["plain", "repeat"], list(POINTS)))


@pytest.mark.slow
def test_saved_at_two_ranks_resumed_in_one_process_warns_as_the_docs_say(tmp_path: Path) -> None:
    """The open epoch keeps the saved run's allowance (1: its padding repeat is no warning, its real repeat is);
    from the next epoch on the 1-process run's own (0): its sampler's real repeat is warned, 1 sample."""
    points = ["mid0", "last0", "between", "mid1", "last1"]
    modes = ["plain", "repeat"]
    _launch(tmp_path, 2, [{"mode": m, "stop": list(POINTS[p]), "save": str(tmp_path / f"ckpt_{m}_{p}_{{rank}}.pt")}
                          for m in modes for p in points], "first")
    _launch(tmp_path, 1, [{"mode": m, "resume": str(tmp_path / f"ckpt_{m}_{p}_0.pt"),
                           "out": str(tmp_path / f"one_{m}_{p}.pkl")} for m in modes for p in points], "second")
    for mode in modes:
        for point in points:
            got = _load(tmp_path / f"one_{mode}_{point}.pkl")
            repeats = [msg for _, msg in got["said"] if "presented more than once" in msg]
            if mode == "plain":
                assert repeats == [], (point, repeats)
            elif point in ("mid1", "last1"):  # epoch 2 presented by the two ranks' sampler: padding + real repeat
                assert len(repeats) == 1 and repeats[0].startswith("SampleTracker: 2 sample(s) were presented more "
                                                                   "than once in epoch 2"), (point, repeats)
            else:  # epoch 2 presented by the 1-process sampler: its real repeat, no allowance
                assert len(repeats) == 1 and repeats[0].startswith("SampleTracker: 1 sample(s) were presented more "
                                                                   "than once in epoch 2"), (point, repeats)
            assert [m for _, m in got["said"] if "losses= of" in m and " in epoch 2 " in m]  # said once, epoch 2
            # this run's own (world size 1) from its first update() of an epoch on; resumed in its last epoch, the
            # saved run's allowance still reads after the last end_epoch() (no update() came to drop it)
            assert got["allowed"] == (1 if point in ("mid1", "last1") else 0)
            assert np.array_equal(got["presented"], np.full(N, 2))
            saved1 = torch.load(tmp_path / f"ckpt_{mode}_{point}_1.pt", weights_only=True)
            log = got["log"] + pickle.loads(saved1["log"].numpy().tobytes())  # rank 1's rows of the first part
            np.testing.assert_array_equal(got["scores"]["csl"].to_numpy(), _csl_from_log(log))


@pytest.mark.slow
def test_saved_in_one_process_resumed_on_two_ranks_between_epochs_warns_as_a_two_rank_run(tmp_path: Path) -> None:
    """Growing the world between epochs: the 2 ranks' own allowance (1, from update(gather=True)) covers their
    sampler's padding in epoch 2, and only a real repeat is warned (2 samples: the padding's and the real one)."""
    modes = ["plain", "repeat"]
    _launch(tmp_path, 1, [{"mode": m, "stop": [0, "end"], "save": str(tmp_path / f"ckpt_{m}.pt")} for m in modes],
            "first")
    _launch(tmp_path, 2, [{"mode": m, "resume": str(tmp_path / f"ckpt_{m}.pt"),
                           "out": str(tmp_path / f"two_{m}_{{rank}}.pkl")} for m in modes], "second")
    for mode in modes:
        got = [_load(tmp_path / f"two_{mode}_{r}.pkl") for r in (0, 1)]
        assert got[0]["said"] == got[1]["said"]
        pd.testing.assert_frame_equal(got[0]["all"], got[1]["all"], check_exact=True)
        repeats = [msg for _, msg in got[0]["said"] if "presented more than once" in msg]
        if mode == "plain":
            assert repeats == []
        else:
            assert len(repeats) == 1 and repeats[0].startswith("SampleTracker: 2 sample(s) were presented more than "
                                                               "once in epoch 2")
        assert got[0]["allowed"] == 1 and np.array_equal(got[0]["presented"], np.full(N, 2))
        log = got[0]["log"] + [row for row in got[1]["log"] if row[0] == 1]  # epoch 1: one process; epoch 2: both
        np.testing.assert_array_equal(got[0]["scores"]["csl"].to_numpy(), _csl_from_log(log))


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
