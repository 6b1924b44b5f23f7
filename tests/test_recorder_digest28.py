"""A recorder's key is its code's digest taken at the key's first use, not as `@register_recorder` runs: then
the rest of its module did not exist yet, so a helper or a value defined below the class was not in the key
and an edit of it served the old code's arrays (digest2_28; the key test is in tests/test_digest2_28.py).
Taken later, the key may read a file edited since the import: `--executor inprocess`, which records with the
code imported, refuses that recorder as it refuses such a model; a worker, which imports the edited file,
records with the code the key reads, so the other executors' fresh-process check finds nothing to refuse."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_digest_attack27 import RECORDER, _module

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.worker_imports import check_workers_know

NAME = "tagged_attack27_late28"




def _edit(tmp_path) -> None:
    (tmp_path / "attack27_late28.py").write_text(
        RECORDER.replace("VALUE", "'a'").replace("NAME", "late28").replace("return RUN_ID", "return RUN_ID * 2"),
        encoding="utf-8")


def _pending() -> list:
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="mlp")
    return [(spec, {RecorderRequest.of(NAME)})]


def test_inprocess_refuses_a_recorder_edited_before_its_key_was_first_taken(tmp_path, monkeypatch, forget) -> None:
    forget.append(NAME)
    _module(tmp_path, monkeypatch, "attack27_late28", RECORDER.replace("VALUE", "'a'").replace("NAME", "late28"))
    _edit(tmp_path)
    with pytest.raises(HarnessError, match=r"recorder 'tagged_attack27_late28' is addressed in the run store by a "
                                           r"digest of its code.*attack27_late28 was edited since this process "
                                           r"imported it.*record with the code imported before.*importlib.reload"):
        check_workers_know(_pending(), SimpleNamespace(runs_jobs_here=True, name="inprocess"))  # type: ignore[arg-type]


def test_workers_that_import_the_edited_file_are_not_refused(tmp_path, monkeypatch, forget) -> None:
    forget.append(NAME)
    _module(tmp_path, monkeypatch, "attack27_late28", RECORDER.replace("VALUE", "'a'").replace("NAME", "late28"))
    _edit(tmp_path)
    check_workers_know(_pending(), SimpleNamespace(runs_jobs_here=False, name="local"))  # type: ignore[arg-type]
    assert RecorderRequest.of(NAME).key.startswith(f"{NAME}@code-")


def test_an_unedited_recorder_passes_inprocess(tmp_path, monkeypatch, forget) -> None:
    forget.append(NAME)
    _module(tmp_path, monkeypatch, "attack27_late28", RECORDER.replace("VALUE", "'a'").replace("NAME", "late28"))
    check_workers_know(_pending(), SimpleNamespace(runs_jobs_here=True, name="inprocess"))  # type: ignore[arg-type]
