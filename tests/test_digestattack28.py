"""`--executor inprocess` refuses a model whose code changed since import (digestattack28). Its check
compared every function of the factory's module and nothing else, so at 5688e08:

- an edit of a function the model never reads (a plotting helper in the same file) refused the
  model, though its digest and its code were unchanged (a user blocked for nothing);
- an edit of a decorated factory's body passed: the module's `make` is the decorator's wrapper,
  whose code is unchanged, and the function it wraps was never compared; the digest (read from the
  file) became the edited model's while the imported one trained: a fresh process building the
  edited model was served those runs;
- an edit of a class body's value the digest does not see (`act = nn.ReLU()` -> `nn.GELU()`) passed
  the same way: only functions were compared.

Now the functions and classes the digest reads are compared, each with the file it reads them from."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import pytest

from harness.errors import HarnessError
from harness.model_registry import MODELS, model_fingerprint
from harness.worker_imports import check_workers_know

MODEL = '''
import functools
from torch import nn
from harness.model_registry import register_model


def plot_helper():
    return 1


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


class Head(nn.Module):
    act = nn.ReLU()

    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, 2)


@register_model("attacked_digest28", "a decorated factory whose file is edited after its import")
@deco
def edited(input_shape, num_classes):
    return Head(16)
'''


@pytest.fixture
def write(tmp_path, monkeypatch):
    """The module, imported; yields a function writing its file anew."""
    path = tmp_path / "attacked28.py"
    path.write_text(MODEL, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "attacked28", raising=False)
    importlib.invalidate_caches()
    importlib.import_module("attacked28")
    yield lambda text: path.write_text(text, encoding="utf-8")
    MODELS.remove("attacked_digest28")


def _check() -> None:
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="attacked_digest28")
    check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=True, name="inprocess"))  # type: ignore[arg-type]


def test_an_edit_of_a_function_the_model_does_not_read_is_not_refused(write) -> None:
    before = model_fingerprint("attacked_digest28")
    write(MODEL.replace("return 1", "return 2"))
    assert model_fingerprint("attacked_digest28") == before  # nothing the model is changed
    _check()


def test_an_edit_of_a_decorated_factory_is_refused(write) -> None:
    before = model_fingerprint("attacked_digest28")
    write(MODEL.replace("Head(16)", "Head(32)"))
    assert model_fingerprint("attacked_digest28") != before  # the digest is the edited model's ...
    assert MODELS.get("attacked_digest28").factory((1, 1, 16), 2).fc.in_features == 16  # ... the code is not
    with pytest.raises(HarnessError, match=r"attacked28 was edited since this process imported it "
                                           r"\(changed: edited\)"):
        _check()


def test_an_edit_of_a_class_body_value_is_refused_once_the_model_was_digested(write) -> None:
    before = model_fingerprint("attacked_digest28")  # a first run digests the model as imported
    _check()
    write(MODEL.replace("nn.ReLU()", "nn.Sigmoid()"))
    assert model_fingerprint("attacked_digest28") != before
    assert type(sys.modules["attacked28"].Head.act).__name__ == "ReLU"
    with pytest.raises(HarnessError, match=r"\(changed: Head\)"):
        _check()
    importlib.reload(sys.modules["attacked28"])
    _check()


def test_comments_and_a_touch_are_not_refused(write) -> None:
    model_fingerprint("attacked_digest28")
    write(MODEL)
    _check()
    write(MODEL.replace("    act = nn.ReLU()\n", "    # the activation\n\n    act = nn.ReLU()  # kept\n"))
    _check()


ODD = '''
class Meta(type):
    def __eq__(cls, other):
        return cls is other
    __hash__ = None
class Odd(metaclass=Meta):
    def f(self):
        return 1
def outer():
    x = 1
    class Inner:
        nonlocal x
        x = 2
        def g(self):
            return 3
    return Inner
Inner = outer()
'''


def test_an_unhashable_class_and_a_body_that_compiles_only_in_place_keep_their_source(tmp_path, monkeypatch) -> None:
    """7811059 kept each class's first body in a weak dict: a class whose metaclass makes it unhashable
    raised TypeError in `source` (its digest fell back to bytecode), and a nested class with `nonlocal`
    (whose source does not compile alone) raised SyntaxError. Digests pinned at f410fdc."""
    import inspect

    from harness.code_digest import code_digest
    from harness.code_source import source

    (tmp_path / "odd28.py").write_text(ODD, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "odd28", raising=False)
    importlib.invalidate_caches()
    module = importlib.import_module("odd28")
    for cls in (module.Odd, module.Inner):
        assert source(cls) == inspect.getsource(cls)
    assert (code_digest(module.Odd), code_digest(module.Inner)) == ("2967336e6bd34c25", "c1073867184f6dbb")


USER_TEST = '''
from types import SimpleNamespace
from torch import nn
from harness.model_registry import register_model, model_fingerprint
from harness.worker_imports import check_workers_know


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        assert width > 0, "a width"
        self.fc = nn.Linear(width, 2)


@register_model("pytest_digest28", "a model defined in a test file pytest imports")
def make(input_shape, num_classes):
    assert len(input_shape) == 3
    return Net(input_shape[-1])


def test_inprocess_takes_it():
    model_fingerprint("pytest_digest28")
    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="pytest_digest28")
    check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=True, name="inprocess"))
'''


def test_a_model_in_a_test_file_pytest_rewrote_is_not_refused(tmp_path) -> None:
    """pytest rewrites the asserts of a test file it imports: its functions' code is not what the file
    compiles to, and a model there with an `assert` was refused as edited since import (7811059 and
    5688e08), unchanged. The rewrite is repeated on the file's text now."""
    import os
    import subprocess
    from pathlib import Path

    import harness

    (tmp_path / "test_user_model28.py").write_text(USER_TEST, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(harness.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user_model28.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert "1 passed" in done.stdout, done.stdout[-2000:]


def test_a_wrapped_loop_is_digested_and_read() -> None:
    """Two functions whose `__wrapped__` point at each other made `inspect.getsource` raise ValueError
    out of the digest (f410fdc too) and out of the inprocess check: the loaded code is hashed instead."""
    from harness.code_digest import code_digest, code_read

    def f() -> int:
        return 1

    def g() -> int:
        return 2

    f.__wrapped__ = g  # type: ignore[attr-defined]
    g.__wrapped__ = f  # type: ignore[attr-defined]
    assert len(code_digest(f)) == 16
    assert code_read(f) == [f, f]  # the function, and itself in place of what it wraps
