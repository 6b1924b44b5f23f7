"""attdig30: `import __main__` inside a function read the file of the script this process runs, which a fresh
process (the executors' check, a worker) runs another of or none: two digests of one code, refused. Pinned: the
other modules a function imports that are no user module's file (a missing one, a namespace package's
`__init__`-less folder, one that does not parse) keep one digest, and the digest imports none of them."""

from __future__ import annotations

import sys
import types

from test_digest_attack27 import _module

from harness.code_digest import code_digest

SOURCE = """
def build(s, n):
    try:
        import does_not_exist_attdig30
    except ImportError:
        pass
    import __main__
    return __main__
"""


def test_importing_main_inside_a_function_has_one_digest_whatever_main_is(tmp_path, monkeypatch) -> None:
    module = _module(tmp_path, monkeypatch, "attdig30_main", SOURCE)
    script = tmp_path / "attdig30_script.py"
    script.write_text("X = 1\n", encoding="utf-8")
    digests = []
    for file in (None, str(script)):
        main = types.ModuleType("__main__")
        if file is not None:
            main.__file__ = file
        monkeypatch.setitem(sys.modules, "__main__", main)
        digests.append(code_digest(module.build))
    assert digests[0] == digests[1]  # 4048737: two
    assert "does_not_exist_attdig30" not in sys.modules


def test_a_module_that_does_not_parse_is_read_by_its_text_and_never_imported(tmp_path, monkeypatch) -> None:
    (tmp_path / "attdig30_bad.py").write_text("def broken(:\n", encoding="utf-8")
    module = _module(tmp_path, monkeypatch, "attdig30_badimp",
                     "def build(s, n):\n    try:\n        import attdig30_bad\n    except SyntaxError:\n"
                     "        pass\n")
    before = code_digest(module.build)
    assert "attdig30_bad" not in sys.modules
    (tmp_path / "attdig30_bad.py").write_text("def broken(:\n    x\n", encoding="utf-8")
    assert code_digest(module.build) != before
