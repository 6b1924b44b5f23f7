"""Session 29's attack on the store's place and cleanup rules (storeattack29)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.store import RunStore, default_store


def _refusal(root: Path) -> str:
    with pytest.raises(HarnessError) as refused:
        RunStore(root, create=False).check_writable()
    return str(refused.value)


def test_a_store_path_through_a_file_names_the_file_not_permissions(tmp_path, monkeypatch) -> None:
    """`--store FILE/x` said `.../runs is not writable (Not a directory); fix its permissions or pass another --store`:
    no permission is wrong; the path runs through a file."""
    monkeypatch.delenv("MEMPROX_CACHE", raising=False)
    (tmp_path / "notes.txt").write_text("mine")
    root = tmp_path / "notes.txt" / "x"
    said = _refusal(root)
    assert said == (f"run store {root} cannot be made: its path runs through {tmp_path / 'notes.txt'}, which is a "
                    "file, not a folder; pass a --store whose path is folders only")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_store_from_memprox_cache_names_the_variable(tmp_path, monkeypatch) -> None:
    """MEMPROX_CACHE=FILE (no --store given) was told to 'pass another --store', naming neither the variable nor the
    file."""
    (tmp_path / "cache").write_text("mine")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    root = default_store()
    said = _refusal(root)
    assert said == (f"run store {root} cannot be made: its path runs through {tmp_path / 'cache'}, which is a file, "
                    f"not a folder; set MEMPROX_CACHE to a folder (it is {tmp_path / 'cache'}) or pass --store")


def test_a_store_from_memprox_cache_refused_by_its_place_names_the_variable(tmp_path, monkeypatch) -> None:
    """`$MEMPROX_CACHE/store` being a file said `--store ... is a file`, a flag the user never gave."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "store").write_text("mine")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    said = _refusal(default_store())
    assert said.startswith(f"the run store {tmp_path / 'cache' / 'store'} (from MEMPROX_CACHE={tmp_path / 'cache'}) "
                           "is a file, not a folder")
    assert "--store" not in said.split(";")[0]
