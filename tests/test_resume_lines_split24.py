"""The Ray driver keeps a job's `resuming ...` lines (`harness.executors.ray_jobs._ResumesKept`) by the
wording both writers print them in: a single run's (`harness.jobs.resume_line`) and a batched ensemble
chunk's (`harness.ensemble_checkpoint.ChunkCheckpoints.resume`). The driver once matched its own copy of
the line's start, so a writer reworded alone would have left its line in a Ray worker's log with no test
failing; the wording now lives once, in `harness.resuming`, and a reword there reaches all three."""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO
from types import SimpleNamespace

import pytest

import harness.ensemble_checkpoint as ensemble_checkpoint
from harness.ensemble_checkpoint import ChunkCheckpoints, ChunkProgress
from harness.executors import ray_jobs
from harness.jobs import resume_line


@dataclass(frozen=True)
class _Spec:
    """What the chunk's resume reads of a member's RunSpec."""

    name: str

    def label(self) -> str:
        return self.name

    def digest(self) -> str:
        return f"digest-{self.name}"


class _Store:
    """A run store holding one complete round of the chunk's checkpoints, at epoch 3."""

    root = "store"

    def load_checkpoint(self, spec: _Spec, keys: list[str]) -> dict:
        return {"engine": "ensemble", "members": ["digest-a", "digest-b"], "member": "ab".index(spec.name),
                "round": "r1", "epoch": 3}


def _run_line() -> str:
    spec = SimpleNamespace(label=lambda: "digits", recipe=SimpleNamespace(epochs=9), then_on=None)
    return resume_line(spec, 7)  # type: ignore[arg-type]


def _chunk_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """What the real `ChunkCheckpoints.resume` prints on stderr for a chunk of 2 resumed at epoch 3 of 40
    (the tensors' restore stubbed: only the line is under test)."""
    monkeypatch.setattr(ensemble_checkpoint, "_restore", lambda states, stacked: ChunkProgress(3, [[], []]))
    capsys.readouterr()
    progress = ChunkCheckpoints(_Store(), [], 60.0).resume([_Spec("a"), _Spec("b")], None, 40)  # type: ignore[arg-type]
    assert progress is not None and progress.epoch == 3
    (line,) = capsys.readouterr().err.splitlines()
    return line


def _kept(text: str) -> list[str]:
    kept = ray_jobs._ResumesKept(StringIO())
    kept.write(text)
    return kept.kept


def test_the_ray_driver_keeps_exactly_the_lines_both_writers_print(monkeypatch, capsys) -> None:
    run, chunk = _run_line(), _chunk_line(monkeypatch, capsys)
    assert run == "resuming digits from its checkpoint at epoch 7 of 9"
    assert chunk == "resuming ensemble of 2 (a, ...) from its checkpoints at epoch 3 of 40"
    assert _kept(f"epoch 1 of 9\n{run}\nloss 0.5\n{chunk}\n") == [run, chunk]


def test_a_reworded_line_still_reaches_the_ray_driver(monkeypatch, capsys) -> None:
    """Reworded in `harness.resuming`, both writers' lines change and the driver keeps them, and only
    them: the old wording is no longer a resuming line."""
    import harness.resuming as resuming

    monkeypatch.setattr(resuming, "RESUMING", "picking up ")
    run, chunk = _run_line(), _chunk_line(monkeypatch, capsys)
    assert run == "picking up digits from its checkpoint at epoch 7 of 9"
    assert chunk == "picking up ensemble of 2 (a, ...) from its checkpoints at epoch 3 of 40"
    assert _kept(f"resuming digits from its checkpoint at epoch 7 of 9\n{run}\n{chunk}\n") == [run, chunk]
