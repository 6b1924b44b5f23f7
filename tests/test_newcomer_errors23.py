"""The errors a newcomer met on the docs-only journeys (2026-12-04) name the fix, not just the fault:
a path given without its kind, a one-name class list, a thin class by its name, a proxy class
defined but not registered."""

from __future__ import annotations

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.errors import HarnessError
from proxies.base import Proxy
from proxies.registry import make_proxy
from tests.test_bad_input import argv, assert_refused, no_training  # noqa: F401  (the fixture)


def _npz(path, **arrays) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("make, needle", [
    (lambda d: _npz(d / "mine.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1])), "did you mean --dataset npz:"),
    (lambda d: (d / "photos").mkdir() or str(d / "photos"), "did you mean --dataset imagefolder:"),
    (lambda d: (d / "mine.csv").write_text("a,label\n1,x\n") and str(d / "mine.csv"),
     "a CSV table is converted to an .npz file first"),
])
def test_a_path_without_its_kind_is_answered_with_the_kind_that_reads_it(tmp_path, make, needle) -> None:
    name = make(tmp_path)
    with pytest.raises(HarnessError, match="unknown dataset") as e:
        load_dataset(name)
    assert needle in str(e.value)
    if "npz:" in needle or "imagefolder:" in needle:
        assert f":{name}" in str(e.value)


def test_a_plain_unknown_name_gets_no_path_hint() -> None:
    with pytest.raises(HarnessError) as e:
        load_dataset("foo")
    assert str(e.value).endswith("npz:PATH, hf:PATH")


def test_one_class_name_reads_like_labels_of_one_class(tmp_path) -> None:
    path = _npz(tmp_path / "one.npz", x=np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32),
                y=np.zeros(6, dtype=np.int64), classes=np.array(["benign"]))
    with pytest.raises(HarnessError) as e:
        load_dataset(f"npz:{path}")
    assert str(e.value).endswith("the labels hold a single class ('benign'); a classifier needs at least 2")


def test_a_thin_class_is_named_beside_its_id(tmp_path, capsys, no_training) -> None:  # noqa: F811
    rng = np.random.default_rng(0)
    path = _npz(tmp_path / "inputs" / "thin.npz", x=rng.normal(size=(41, 3)).astype(np.float32),
                y=np.r_[np.arange(40) % 2, 2], classes=np.array(["a", "b", "rose"]),
                x_test=rng.normal(size=(9, 3)).astype(np.float32), y_test=np.arange(9) % 3)
    assert_refused(tmp_path, capsys, argv(tmp_path, {"--dataset": f"npz:{path}"}),
                   "leaves class(es) 2 ('rose') with fewer than 2 training samples")


class _Forgotten(Proxy):
    """Defined in an imported module without @register_proxy."""

    name, description, citation = "forgotten_n23", "never registered", "you, 2026"

    def score(self, ctx):  # pragma: no cover - never selected
        raise AssertionError


def test_a_defined_but_unregistered_proxy_says_to_register_it() -> None:
    with pytest.raises(HarnessError) as e:
        make_proxy("forgotten_n23")
    message = str(e.value)
    assert f"class _Forgotten ({_Forgotten.__module__}) has name 'forgotten_n23' but is not registered" in message
    assert "@register_proxy" in message and "registers when its module is imported" not in message


def test_a_path_with_a_colon_is_hinted_too(tmp_path) -> None:
    """`./a:b.npz` splits at its colon into an unknown kind; the file exists, so the hint still fits."""
    path = _npz(tmp_path / "a:b.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    with pytest.raises(HarnessError) as e:
        load_dataset(path)
    assert f"did you mean --dataset npz:{path}?" in str(e.value)
