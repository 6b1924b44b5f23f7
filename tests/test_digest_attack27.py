"""The code digest that addresses a user's recorder or model factory in the run store, attacked
(digestattack27). Each test failed before the fix it names:

- a module value read only inside a comprehension, lambda or inner function (a list comprehension
  is code of its own before Python 3.12), or in a staticmethod or property, was not hashed: a
  factory's `[nn.Linear(HIDDEN, HIDDEN) for _ in ...]` kept its digest from HIDDEN = 32 to 256, and
  the 32-wide model's runs were served as the new one's;
- a `functools.partial` or a callable instance registered as a factory was hashed as nothing at all
  (`width=32` and `width=256` shared one digest);
- `BIG = 10**5000` read by a recorder made its registration fail (int-to-text digit limit);
- a notebook class (no source) holding a comprehension had another digest in every process;
- a module global that only shares a name with an attribute (`self.scale`) was hashed;
- a value set anew in every process (`RUN_ID = str(uuid.uuid4())`) gave the local pool's workers
  recorder keys the driver never looked up: the run trained, the proxy failed with "did not
  record", and every rerun trained again. It is refused before training, naming the value, and so
  is a module edited since this process imported it."""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from harness.code_digest import code_digest
from harness.errors import HarnessError


def _module(tmp_path, monkeypatch, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _digests(tmp_path, monkeypatch, template: str, values: tuple[str, str], attribute: str) -> list[str]:
    """The digest of `attribute` of a module written from `template` with each of `values` as VALUE."""
    found = []
    for i, value in enumerate(values):
        module = _module(tmp_path, monkeypatch, f"attack27_{abs(hash(template)) % 10**8}_{i}",
                         template.replace("VALUE", value))
        found.append(code_digest(getattr(module, attribute)))
    return found


NESTED = {
    "list comprehension": """
        from torch import nn
        HIDDEN = VALUE
        def tiny(input_shape, num_classes):
            return nn.Sequential(*[nn.Linear(HIDDEN, HIDDEN) for _ in range(2)])
        """,
    "lambda": """
        HIDDEN = VALUE
        def tiny(input_shape, num_classes):
            width = lambda: HIDDEN
            return width()
        """,
    "own class in a generator": """
        HIDDEN = VALUE
        class Block:
            def __init__(self):
                self.width = HIDDEN
        def tiny(input_shape, num_classes):
            return list(Block() for _ in range(2))
        """,
}


@pytest.mark.parametrize("where", sorted(NESTED))
def test_a_value_read_in_nested_code_changes_the_digest(tmp_path, monkeypatch, where) -> None:
    before, after = _digests(tmp_path, monkeypatch, NESTED[where], ("32", "256"), "tiny")
    assert before != after


@pytest.mark.parametrize("decorator", ["@staticmethod", "@classmethod", "@property"])
def test_a_value_read_in_a_static_or_class_method_or_property_changes_the_digest(tmp_path, monkeypatch,
                                                                                   decorator) -> None:
    template = f"""
        SCALE = VALUE
        class Rec:
            {decorator}
            def factor(x):
                return SCALE
        """
    before, after = _digests(tmp_path, monkeypatch, template, ("1.0", "2.0"), "Rec")
    assert before != after


def _make(input_shape, num_classes, width=32):
    return width


class _Factory:
    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(self, input_shape, num_classes):
        return self.width


def test_a_partial_or_a_callable_instance_is_hashed_with_its_arguments() -> None:
    assert code_digest(functools.partial(_make, width=32)) != code_digest(functools.partial(_make, width=256))
    assert code_digest(functools.partial(_make, width=32)) == code_digest(functools.partial(_make, width=32))
    assert code_digest(functools.partial(_make, width=32)) != code_digest(_make)
    assert code_digest(_Factory(32)) != code_digest(_Factory(256))
    assert code_digest(_Factory(32)) == code_digest(_Factory(32))


def test_a_huge_int_setting_is_hashed_not_a_crash(tmp_path, monkeypatch) -> None:
    template = "BIG = VALUE\ndef f():\n    return BIG\n"
    before, after = _digests(tmp_path, monkeypatch, template, ("10**5000", "10**5000 + 1"), "f")
    assert before != after
    from harness.code_digest import settings_read

    module = _module(tmp_path, monkeypatch, "attack27_big_tuple", "T = (1, 10**5000)\ndef f():\n    return T\n")
    assert settings_read(module.f) == {"attack27_big_tuple.T": f"(1, {hex(10**5000)})"}


def test_floats_are_told_apart_by_their_repr(tmp_path, monkeypatch) -> None:
    template = "V = VALUE\ndef f():\n    return V\n"
    assert len(set(_digests(tmp_path, monkeypatch, template, ("0.0", "-0.0"), "f"))) == 2
    assert len(set(_digests(tmp_path, monkeypatch, template, ("float('nan')", "-float('nan')"), "f"))) == 1


def test_a_global_named_like_an_attribute_is_not_hashed(tmp_path, monkeypatch) -> None:
    template = """
        scale = VALUE
        class Rec:
            def f(self):
                return self.scale
        """
    before, after = _digests(tmp_path, monkeypatch, template, ("1", "2"), "Rec")
    assert before == after


NOTEBOOK = """
from harness.code_digest import code_digest
cell = "K = 2\\nclass Rec:\\n    def f(self):\\n        return [K * i for i in range(3)]\\n"
namespace = {"__name__": "__main__"}
exec(cell, namespace)
print(code_digest(namespace["Rec"]))
"""


def test_a_class_without_source_has_one_digest_in_every_process() -> None:
    digests = {subprocess.run([sys.executable, "-c", NOTEBOOK], capture_output=True, text=True, check=True,
                              timeout=120).stdout.strip() for _ in range(2)}
    assert len(digests) == 1 and len(digests.pop()) == 16


RECORDER = """
import uuid
from harness.recorders import register_recorder
from harness.recorders.train_pass import TrainLoss

RUN_ID = VALUE


@register_recorder
class Tagged(TrainLoss):
    name = "tagged_attack27_NAME"

    def tag(self):
        return RUN_ID
"""


def _check(names: list[str]) -> None:
    """`check_workers_know` for one run that records `names`, as the local executor calls it."""
    from harness.recorders import RecorderRequest
    from harness.worker_imports import check_workers_know

    spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="mlp")
    executor = SimpleNamespace(runs_jobs_here=False, name="local")
    check_workers_know([(spec, {RecorderRequest.of(n) for n in names})], executor)  # type: ignore[arg-type]




def test_a_recorder_reading_a_value_set_anew_in_every_process_is_refused_before_training(
        tmp_path, monkeypatch, forget) -> None:
    forget += ["tagged_attack27_constant", "tagged_attack27_uuid"]
    for name, value in (("constant", "'run-1'"), ("uuid", "str(uuid.uuid4())")):
        _module(tmp_path, monkeypatch, f"attack27_{name}", RECORDER.replace("VALUE", value).replace("NAME", name))
    _check(["tagged_attack27_constant"])  # the same in a fresh process: nothing to refuse
    with pytest.raises(HarnessError) as refused:
        _check(["tagged_attack27_constant", "tagged_attack27_uuid"])
    message = str(refused.value)
    assert message.startswith("recorder 'tagged_attack27_uuid' is addressed in the run store by a digest of its code")
    assert "attack27_uuid.RUN_ID is '" in message and "every proxy reading it would fail" in message


def test_a_recorder_whose_module_was_edited_since_import_is_refused(tmp_path, monkeypatch, forget) -> None:
    forget.append("tagged_attack27_edited")
    from harness.recorders import RecorderRequest

    _module(tmp_path, monkeypatch, "attack27_edited", RECORDER.replace("VALUE", "'a'").replace("NAME", "edited"))
    first = RecorderRequest.of("tagged_attack27_edited").key  # a first run: the key is taken from the code imported
    assert first.startswith("tagged_attack27_edited@code-")
    (tmp_path / "attack27_edited.py").write_text(RECORDER.replace("VALUE", "'a'").replace("NAME", "edited")
                                                 .replace("return RUN_ID", "return RUN_ID * 2"), encoding="utf-8")
    with pytest.raises(HarnessError, match="was attack27_edited edited since this process imported it"):
        _check(["tagged_attack27_edited"])


def test_a_model_reading_a_value_set_anew_in_every_process_is_refused(tmp_path, monkeypatch) -> None:
    from harness.model_registry import MODELS
    from harness.worker_imports import check_workers_know

    _module(tmp_path, monkeypatch, "attack27_model", """
        import time
        from torch import nn
        from harness.model_registry import register_model

        STAMP = time.time_ns()


        @register_model("stamped_attack27", "a model whose module stamps its import")
        def stamped(input_shape, num_classes):
            return nn.Linear(STAMP % 7 + 1, num_classes)
        """)
    try:
        spec = SimpleNamespace(data=SimpleNamespace(dataset="digits"), model="stamped_attack27")
        with pytest.raises(HarnessError) as refused:
            check_workers_know([(spec, set())], SimpleNamespace(runs_jobs_here=False, name="local"))  # type: ignore[arg-type]
    finally:
        MODELS.remove("stamped_attack27")
    assert str(refused.value).startswith("model 'stamped_attack27' is addressed in the run store by a digest")
    assert "attack27_model.STAMP is " in str(refused.value) and "would never be reused" in str(refused.value)


def _dist(root, name: str, version: str, entry: str) -> None:
    """An installed distribution's metadata: one `memprox.digestattack27` entry point `top_x`."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[memprox.digestattack27]\ntop_x = {entry}\n", encoding="utf-8")


def test_two_distributions_claiming_a_name_are_named_by_distribution(tmp_path, monkeypatch) -> None:
    """A package renamed with the old one left installed: both entry points reach one module by two
    paths. The warning said `topx_pkg.core:TopX, topx_pkg:TopX` and "uninstall all but one",
    naming neither package to uninstall."""
    from harness.registry import installed_plugins

    _dist(tmp_path, "topx", "1.0", "topx_pkg:TopX")
    _dist(tmp_path, "topx_renamed", "2.0", "topx_pkg.core:TopX")
    _dist(tmp_path / "editable", "topx", "1.0", "topx_pkg:TopX")  # the same distribution twice is one
    monkeypatch.syspath_prepend(str(tmp_path / "editable"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning) as said:
        found, withheld = installed_plugins("memprox.digestattack27", "proxy")
    assert found == {}
    assert withheld == {"top_x": ["topx_pkg.core:TopX from topx_renamed 2.0", "topx_pkg:TopX from topx 1.0"]}
    assert "(topx_pkg.core:TopX from topx_renamed 2.0, topx_pkg:TopX from topx 1.0)" in str(said[0].message)


def test_a_stale_entry_point_of_a_package_says_its_package_registered_the_name(tmp_path, monkeypatch, fresh) -> None:
    """Two dist-infos of one distribution in one folder (an interrupted upgrade): Python reads the old
    one, whose entry point names a module the new version dropped; importing it ran the package's
    `__init__`, which registered the new class. The warning called that class "not this plugin"."""
    from proxies import registry

    package = tmp_path / "stale27_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        import numpy as np
        from proxies import Proxy, register_proxy

        @register_proxy
        class TopX(Proxy):
            name, description, citation = "top_x_stale27", "the new version", "me"

            def score(self, ctx):
                return np.zeros(len(ctx.labels))
        """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "stale27_pkg", raising=False)
    eps = [importlib.metadata.EntryPoint("top_x_stale27", "stale27_pkg.old:TopX", registry.ENTRY_POINT_GROUP)]
    real, ours = importlib.metadata.entry_points, registry.ENTRY_POINT_GROUP
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: eps if group == ours else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(UserWarning) as said:
        available = registry.available_proxies()
    assert available["top_x_stale27"].__module__ == "stale27_pkg"
    line = next(str(w.message) for w in said if "top_x_stale27" in str(w.message))
    assert line.endswith("selecting proxy 'top_x_stale27' runs stale27_pkg.TopX, which its package registered")
