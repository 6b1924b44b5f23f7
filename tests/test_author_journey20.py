"""A researcher's new proxy and the mistakes its author makes (author journey, round 20): each one
is named, with the fix, before training where that can be known, and never becomes a silently
wrong number."""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.recorders.bank import Records
from harness.runspec import DataSpec, RunSpec
from proxies import Proxy, ScoreContext, make_proxy, registry, resolve_proxies
from tests.conftest import TINY_RECIPE

TRAIN_LOSS = RecorderRequest.of("train_loss")
BASE = RunSpec(data=DataSpec(), model="mlp", recipe=TINY_RECIPE)
LOSS = [[1.0, 9.0, 3.0], [0.5, 8.0, 4.0]]


class _Clipped(Proxy):
    """Clips the recorded loss in place: the author's `loss[loss > 5] = 5`."""

    name, description, citation = "clipped_j20", "clipped loss", "you, 2026"
    recorders = (TRAIN_LOSS,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        loss = ctx.arrays(TRAIN_LOSS)["loss"]
        loss[loss > 5] = 5
        return loss.sum(0)


class _Sum(Proxy):
    name, description, citation = "sum_j20", "summed loss", "you, 2026"
    recorders = (TRAIN_LOSS,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.asarray(ctx.arrays(TRAIN_LOSS)["loss"], dtype=np.float64).sum(0)


def _shared_ctx() -> ScoreContext:
    """One set of arrays that every read returns, as a SampleTracker's records are."""
    records = Records({TRAIN_LOSS.key: {"loss": np.array(LOSS, dtype=np.float32)}})
    return ScoreContext(base=BASE, labels=np.zeros(3, dtype=np.int64), num_classes=10, runs={BASE: records})


def test_a_proxy_cannot_change_the_records_the_next_proxy_reads() -> None:
    """Before: the clip went through, and the proxy read after it (csl, in `SampleTracker.scores`
    or any later call) summed 5 + 5 where the run recorded 9 + 8, without a word."""
    ctx = _shared_ctx()
    with pytest.raises(ValueError, match="read-only"):
        _Clipped().score(ctx)
    assert _Sum().score(ctx).tolist() == [1.5, 17.0, 7.0]


def test_a_proxy_writing_into_its_records_fails_alone_and_is_told_to_change_a_copy(base_spec, digits_noisy,
                                                                                     capsys) -> None:
    """In an experiment the write is that proxy's failure, with the fix in the line."""
    from harness.evaluation import score

    n = digits_noisy.n
    loss = np.tile(np.linspace(0.0, 9.0, n, dtype=np.float32), (2, 1))
    runs = {base_spec: Records({TRAIN_LOSS.key: {"loss": loss}})}
    scores, problems = score([_Clipped(), _Sum()], base_spec, digits_noisy, runs)  # type: ignore[arg-type]
    assert list(scores) == ["sum_j20"]
    np.testing.assert_allclose(scores["sum_j20"], 2 * np.linspace(0.0, 9.0, n, dtype=np.float32))
    assert len(problems) == 1 and "clipped_j20" in problems[0]
    assert "the recorded arrays are read-only: change a copy, np.array(...)" in problems[0]


class _Windowed(Proxy):
    """Checks `fraction` and forgets `window` in its validate."""

    name, description, citation = "windowed_j20", "mean loss over the last window", "you, 2026"
    recorders = (TRAIN_LOSS,)
    defaults = {"fraction": 0.5, "window": 2, "mode": "mean"}

    def validate(self) -> None:
        self.check_number("fraction", 0.0, 1.0)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.asarray(ctx.arrays(TRAIN_LOSS)["loss"])[-self.params["window"]:].mean(0)


@pytest.mark.parametrize(("params", "message"), [
    ({"window": 2.5}, "windowed_j20.window must be an integer, as its default 2 is (got float 2.5)"),
    ({"window": "3"}, "windowed_j20.window must be an integer, as its default 2 is (got str '3')"),
    ({"mode": True}, "windowed_j20.mode must be a string, as its default 'mean' is (got bool True)"),
    ({"fraction": "0.3"}, "windowed_j20.fraction must be a finite number in (0, 1] (got '0.3')"),
])
def test_a_parameter_its_validate_forgets_is_still_checked_against_its_default(params, message) -> None:
    """Before: a validate of its own switched the defaults' type check off for every parameter, so
    `--proxy-arg windowed_j20.window=2.5` trained every run and then failed in `score`."""
    with pytest.raises(HarnessError) as raised:
        _Windowed(**params)
    assert str(raised.value) == message


def test_values_of_the_right_kind_pass_whoever_checks_them() -> None:
    proxy = _Windowed(window=3, fraction=1, mode="max")
    assert proxy.params == {"fraction": 1.0, "window": 3, "mode": "max"}
    assert proxy.label == "windowed_j20(fraction=1.0,mode=max,window=3)"


def _install_broken(monkeypatch, entry_name: str) -> None:
    """An installed plugin whose module fails to import."""
    ep = importlib.metadata.EntryPoint(entry_name, "no_such_module_j20.sub:Late", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


def test_selecting_a_plugin_that_failed_to_import_says_why(monkeypatch, fresh) -> None:
    """Before: "unknown proxy 'late_loss_j20' ... installed under the `memprox.proxies` entry point",
    for a proxy that is installed there, beside a warning printed before training began."""
    _install_broken(monkeypatch, "late_loss_j20")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry.load_plugins()
    for select in (lambda: make_proxy("late_loss_j20"), lambda: resolve_proxies("csl,late_loss_j20"),
                   lambda: resolve_proxies("csl", {"late_loss_j20": {"fraction": 0.3}})):
        with pytest.raises(HarnessError) as raised:
            select()
        text = str(raised.value)
        assert text.startswith("proxy plugin 'late_loss_j20' (no_such_module_j20.sub:Late) failed to load: "
                               "ModuleNotFoundError: No module named 'no_such_module_j20'")
        assert text.endswith("so proxy 'late_loss_j20' is not available; fix the plugin (its import error or class) "
                             "and run again, or uninstall it")
    assert [p.label for p in resolve_proxies("csl")] == ["csl"]  # the others are unaffected


class _Margin(Proxy):
    """A margin: high for the samples the network is sure of, the opposite of memprox's convention."""

    name, description, citation = "margin_j20", "minus the summed training loss", "you, 2026"
    recorders = (TRAIN_LOSS,)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return -np.asarray(ctx.arrays(TRAIN_LOSS)["loss"], dtype=np.float64).sum(0)


def test_a_proxy_scoring_the_wrong_way_round_is_named_with_the_fix(fresh, tmp_path) -> None:
    """Before: its AUROC below 0.5 (interval and all) stood in the leaderboard as "worse than
    chance", with nothing saying that memprox reads higher as more suspicious."""
    from harness import run_experiment

    registry.register_proxy(_Margin)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_experiment(proxies="csl,margin_j20", tasks="mislabeled", noise_rates=[0.1], seeds=1, epochs=4,
                                subset=300, bootstrap=200, executor="inprocess", store=str(tmp_path / "store"),
                                progress=False)
    board = result.leaderboard.set_index(["proxy", "metric"])
    assert board.loc[("margin_j20", "auroc"), "ci_high"] < 0.5 < board.loc[("csl", "auroc"), "ci_low"]
    lines = [str(w.message) for w in caught if "wrong way round" in str(w.message)]
    assert len(lines) == 1 and lines[0].startswith("proxy margin_j20 ranks the wrong way round")
    assert "mislabeled noise=0.1 auroc" in lines[0] and "whose lower score means more returns its negation" in lines[0]


@pytest.mark.parametrize("name", ["positive", "label", "index", "file", "reference"])
def test_a_proxy_named_like_a_column_of_the_tables_is_refused_when_it_registers(fresh, name: str) -> None:
    """Before: a proxy named `positive` registered, and its scores replaced the ground-truth column
    of scores/*.csv (and `result.scores`) without a word; `label`, the labels trained on."""
    cls = type("Clash", (Proxy,), {"name": name, "description": "d", "citation": "c", "recorders": (TRAIN_LOSS,),
                                   "score": lambda self, ctx: np.zeros(1)})
    with pytest.raises(TypeError, match=f"has name '{name}', which the per-sample tables use for a column of their "
                                        "own .*; give it another name"):
        registry.register_proxy(cls)
    assert name not in fresh


def test_a_misspelled_recorder_suggests_the_registered_one() -> None:
    """Before: the registered recorders listed, with no word on which one was meant."""
    from proxies import Need

    with pytest.raises(HarnessError, match=r"^unknown recorder 'train_los' \(did you mean 'train_loss'\?\) requested "):
        Need(BASE, frozenset({RecorderRequest.of("train_los")}))


def test_every_shipped_proxy_module_is_listed_as_built_in() -> None:
    import pkgutil

    import proxies

    shipped = {m.name for m in pkgutil.iter_modules(proxies.__path__)} - {"base", "registry"}
    assert set(proxies.BUILT_IN) == shipped


CLIPPED_CSL = """
import numpy as np
from proxies.base import Proxy
from proxies.registry import register_proxy


@register_proxy
class Clipped(Proxy):
    name, description, citation = "csl", "mine", "me"

    def score(self, ctx):
        return np.zeros(len(ctx.labels))
"""


def test_a_module_dropped_into_proxies_under_a_built_in_name_is_the_one_told_to_rename(tmp_path) -> None:
    """Before: modules were imported in name order, so a `clipped.py` claiming "csl" registered
    first and the error said "give proxies.csl.CSL another name", the built-in."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "proxies", tmp_path / "proxies", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "proxies" / "clipped.py").write_text(CLIPPED_CSL, encoding="utf-8")
    env = {"PYTHONPATH": f"{tmp_path}:{root}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", "import proxies"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith("ValueError: proxy 'csl' is already registered by proxies.csl.CSL; give "
                                         "proxies.clipped.Clipped another name"), done.stderr[-2000:]


def test_a_proxy_label_holding_a_path_names_one_figure_file(tmp_path, monkeypatch) -> None:
    """Before: the privacy figure of `x(weights=/tmp/w.npy)`, the best proxy after csl, went to
    figures/privacy_x(weights=/tmp/w.npy)_vs_vulnerability_seed0.png: folders `privacy_x(weights=`,
    `tmp`, one per piece of the path."""
    from types import SimpleNamespace

    from harness.tasks import privacy

    written: list = []
    monkeypatch.setattr(privacy, "plot_binned", lambda v, s, xlabel, proxy, path, **k: written.append(path) or path)
    monkeypatch.setattr(privacy, "plot_attack_roc", lambda attack, path, **k: written.append(path) or path)
    ctx = SimpleNamespace(out=tmp_path, setting=SimpleNamespace(seed=0), artifacts={})
    label = "x(weights=/tmp/w.npy)"
    scores = {"csl": np.arange(4.0), label: np.arange(4.0)}
    privacy.Privacy()._plot(ctx, np.arange(4.0), None, scores, {"csl": 0.1, label: 0.5})  # type: ignore[arg-type]
    assert [p.parent for p in written] == [tmp_path / "figures"] * 3
    assert written[1].name == "privacy_x(weights=_tmp_w.npy)_vs_vulnerability_seed0.png"
    assert ctx.artifacts["figures"][1] == "figures/privacy_x(weights=_tmp_w.npy)_vs_vulnerability_seed0.png"


@pytest.mark.parametrize("score", [lambda self: np.zeros(1), lambda ctx: np.zeros(1),
                                   lambda self, ctx, extra: np.zeros(1)])
def test_a_score_that_cannot_take_the_context_is_refused_when_it_registers(fresh, score) -> None:
    """Before: registered, and `TypeError: score() takes 1 positional argument but 2 were given`
    failed the proxy after every run had trained."""
    cls = type("NoCtx", (Proxy,), {"name": "no_ctx_j20", "description": "d", "citation": "c", "score": score})
    with pytest.raises(TypeError, match=r"proxy NoCtx \('no_ctx_j20'\): `score\(.*\)` cannot be called as "
                                        r"score\(self, ctx\); define `def score\(self, ctx\)`"):
        registry.register_proxy(cls)
    assert "no_ctx_j20" not in fresh


def test_a_score_with_optional_arguments_still_registers(fresh) -> None:
    cls = type("Opt", (Proxy,), {"name": "opt_j20", "description": "d", "citation": "c",
                                 "score": lambda self, ctx, scale=1.0, *rest, **kw: np.zeros(1)})
    registry.register_proxy(cls)
    assert fresh["opt_j20"] is cls


def test_selecting_a_task_plugin_that_failed_to_import_says_why(monkeypatch, fresh_tasks) -> None:
    """Before: "unknown task(s) ['heavy_noise_j20']", for a task installed under `memprox.tasks`."""
    from harness.tasks import base

    ep = importlib.metadata.EntryPoint("heavy_noise_j20", "no_such_module_j20:HeavyNoise", base.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    monkeypatch.setattr(base, "_plugins_loaded", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base.load_plugins()
    with pytest.raises(HarnessError, match=r"^task plugin 'heavy_noise_j20' \(no_such_module_j20:HeavyNoise\) failed "
                                           r"to load: ModuleNotFoundError: .*, so task 'heavy_noise_j20' is not "
                                           r"available; fix the plugin"):
        base.make_tasks(["mislabeled", "heavy_noise_j20"])
