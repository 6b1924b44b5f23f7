"""Review30: `code_source._which` (digest30) picks which of two same-name classes a digest reads. A method
wrapped with `functools.wraps` around a builtin (no `__code__`) made it raise AttributeError, so the digest
of such a class (and every run of a model or recorder built on it) ended in a traceback."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from harness import code_source
from harness.code_digest import code_digest

MODULE = textwrap.dedent('''
    import functools


    class A:
        x = 1


    class A:  # noqa: F811
        x = 2

        @functools.wraps(len)
        def size(self):
            return 3
''')


@pytest.fixture
def twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "review30_twin.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("review30_twin", None)
    module = importlib.import_module("review30_twin")
    yield module
    sys.modules.pop("review30_twin", None)


def test_second_class_with_a_method_wrapping_a_builtin_is_found(twin) -> None:
    text = code_source.source(twin.A)
    assert text.splitlines()[0] == "class A:  # noqa: F811"
    assert "x = 2" in text and "def size" in text


def test_its_digest_is_that_of_the_class_alone(twin, tmp_path: Path) -> None:
    # the second class alone in a file of that name (no twin before it): the same text, the same digest
    folder = tmp_path / "alone"
    folder.mkdir()
    (folder / "review30_twin.py").write_text(MODULE.replace("class A:\n    x = 1\n", ""))
    twin_digest = code_digest(twin.A)
    sys.modules.pop("review30_twin", None)
    sys.path.insert(0, str(folder))
    try:
        importlib.invalidate_caches()
        alone = importlib.import_module("review30_twin")
        assert alone.__file__ != twin.__file__
        assert code_digest(alone.A) == twin_digest
    finally:
        sys.path.remove(str(folder))


def test_an_import_whose_level_is_a_small_int_load_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.14 loads an import's level with LOAD_SMALL_INT, not LOAD_CONST (3.10 to 3.13 here use
    LOAD_CONST); `imported` took only LOAD_CONST, so there a function's `from mod import x` was silently unread
    and an edit of `mod` kept the digest. The 3.14 instruction stream is made from this one's."""
    import dis

    from harness import code_digest_imports

    (tmp_path / "review30_widths.py").write_text("W = 8\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))

    def build() -> object:
        from review30_widths import W  # type: ignore[import-not-found]
        return W

    real = dis.get_instructions

    def as_314(code, **kwargs):
        return [i._replace(opname="LOAD_SMALL_INT") if i.opname == "LOAD_CONST" and type(i.argval) is int else i
                for i in real(code, **kwargs)]

    monkeypatch.setattr(code_digest_imports.dis, "get_instructions", as_314)
    text = code_digest_imports.imported([build.__code__], "", build.__module__, {})
    assert text.startswith("\nimports review30_widths ") and len(text.split()) == 3
