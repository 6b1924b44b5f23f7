"""The user docs read by a new user, top to bottom, with every command run (fifth review): each test
pins a claim of a page to the value the code gives, where the page and the code had parted.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _text(name: str) -> str:
    """A page with its line breaks folded, so a sentence matches wherever the page wraps it."""
    return " ".join((DOCS / name).read_text(encoding="utf-8").split())


def test_the_one_cycle_peak_epoch_the_page_names_is_the_schedules() -> None:
    """experiments.md said one-cycle at 10 epochs never trains above 0.93 of its peak lr; the
    schedule now peaks at the whole epoch nearest E/4, so 10 epochs reach the full peak, in epoch 3."""
    from test_presets import _lrs

    from harness.presets import PRESETS

    said = re.search(r"at 10 epochs the peak lr is used in epoch (\d+)", _text("experiments.md"))
    assert said, "experiments.md no longer says where one-cycle peaks at 10 epochs"
    recipe = replace(PRESETS.get("gpu").for_dataset("cifar10").recipe, epochs=10)
    assert recipe.schedule == "onecycle"
    lrs = _lrs(recipe)
    assert int(np.argmax(lrs)) == int(said.group(1))
    assert max(lrs) == pytest.approx(recipe.lr)  # the full peak, not 0.93 of it
    assert "0.93× the peak" not in _text("experiments.md")


def test_the_proxies_said_to_carry_a_last_epoch_eval_pass_are_the_ones_that_do() -> None:
    """experiments.md listed el2n among the proxies whose base run records a last-epoch eval pass
    (which `flipped_fit` reads); el2n reads the training pass, and `--proxies csl,el2n` printed no
    flipped-label share."""
    from harness.api import experiment_config
    from harness.recorders import EVAL_LAST
    from harness.runspec import DataSpec, RunSpec
    from proxies import resolve_proxies

    text = _text("experiments.md")
    said = re.search(r"for noisy base runs that carry a last-epoch eval pass \((.*?) request one; (.*?) do not", text)
    assert said, "experiments.md no longer says which proxies record a last-epoch eval pass"
    named_yes = set(re.findall(r"`(\w+)`", said.group(1)))
    named_no = set(re.findall(r"`(\w+)`", said.group(2)))
    base = RunSpec(data=DataSpec(dataset="digits"), model="mlp", recipe=experiment_config().recipe, seed=0)
    carrying = {p.name for p in resolve_proxies("all", {})
                if any(n.spec == base and EVAL_LAST in n.recorders for n in p.needs(base))}
    assert named_yes == carrying
    assert named_no and not named_no & carrying


def test_the_default_data_root_the_page_names_is_the_loaders(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """datasets.md did not say where cifar10 & co. live (and are downloaded to) without --data-root,
    and `--help` says "default: none"; they live in $MEMPROX_CACHE/data."""
    from harness.datasets import default_data_root, load_dataset
    from harness.errors import HarnessError

    assert "without it: `$MEMPROX_CACHE/data`, by default `~/.cache/memprox/data`" in _text("datasets.md")
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "data"
    with pytest.raises(HarnessError, match=re.escape(str(tmp_path / "cache" / "data"))):
        load_dataset("cifar10")  # no --data-root, no --download: looked for in that folder
    monkeypatch.delenv("MEMPROX_CACHE")
    assert default_data_root() == Path.home() / ".cache" / "memprox" / "data"


def test_partly_nan_scores_are_scored_as_the_extending_page_says() -> None:
    """extending.md said a proxy returning "anything but one real number per sample" is a failure;
    a proxy leaving some samples NaN is scored: detection ranks them below every scored sample,
    correlations with the reference become NaN."""
    from harness.metrics import detection_metrics
    from harness.similarity import similarity_metrics

    text = _text("extending.md")
    assert "anything but one real number per sample" not in text
    assert "rank a NaN sample below every scored sample" in text
    assert "any NaN or infinite score makes the proxy's correlations with the memorization reference" in text

    rng = np.random.default_rng(0)
    scores = rng.random(300)
    positives = rng.random(300) < 0.2
    reference = scores + rng.random(300)
    partly = scores.copy()
    partly[:30] = np.nan
    lowest = scores.copy()
    lowest[:30] = -np.inf
    assert detection_metrics(positives, partly) == detection_metrics(positives, lowest)
    assert detection_metrics(positives, partly) != detection_metrics(positives[30:], scores[30:])  # not left out
    for bad in (np.nan, np.inf):
        broken = scores.copy()
        broken[:3] = bad
        assert all(np.isnan(v) for v in similarity_metrics(broken, reference).values())
    assert not any(np.isnan(v) for v in similarity_metrics(scores, reference).values())


def test_a_rerun_into_its_own_out_is_not_another_experiment_when_the_folder_is_below_the_preset_subset(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """how-it-works.md: "a rerun of the same experiment replaces its own unchanged outputs". The quick
    preset caps image datasets at 4,000 samples; on a smaller folder (the quickstart's "rank your own
    data" line) the first run recorded the identity of the config without the cap, and the rerun,
    checked before loading with the cap, was refused as "another experiment" (exit 2)."""
    from PIL import Image

    from harness import run_experiment

    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b", "c")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(8):
            pixels = (rng.random((16, 16, 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{c * 8 + i:05d}.png")
    assert "a rerun of the same experiment replaces its own unchanged outputs" in _text("how-it-works.md")
    options = dict(dataset=f"imagefolder:{tmp_path / 'imgs'}", proxies="csl", tasks="suspects", seeds=1, epochs=1,
                   bootstrap=0, executor="inprocess", progress=False, store=str(tmp_path / "store"),
                   out=str(tmp_path / "out"))
    with pytest.warns(UserWarning, match="subset of 4000 is more than the 24 training samples"):
        first = run_experiment(**options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = run_experiment(**options)  # was: HarnessError "--out ... holds results of another experiment"
    assert len(again.reused) == 1 and not again.trained
    assert again.scores.keys() == first.scores.keys()


def test_a_proxy_that_leaves_samples_unscored_is_named_in_a_warning() -> None:
    """Partly NaN or infinite scores are scored (see above), so they must not pass unnoticed: the
    scoring step warns with the proxy and the count; a proxy that scores every sample gets no warning."""
    from types import SimpleNamespace

    from harness.evaluation import score

    values = np.linspace(0.0, 1.0, 10)
    partly = values.copy()
    partly[[2, 5]] = [np.nan, np.inf]
    proxies = [SimpleNamespace(label=name, needs=lambda base: [], score=lambda ctx, v=v: v)
               for name, v in (("whole", values), ("gappy", partly))]
    base = SimpleNamespace(label=lambda: "digits clean mlp seed0")
    data = SimpleNamespace(labels=np.zeros(10, dtype=int), num_classes=2, n=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores, problems = score(proxies, base, data, {})
    messages = [str(w.message) for w in caught]
    assert messages == ["proxy gappy gives 2 of 10 samples no finite score for digits clean mlp seed0: detection "
                        "metrics rank them as its value says (NaN below every score, +inf above every finite score) "
                        "and its correlations with a reference are NaN; a proxy should score every sample"]
    assert not problems and set(scores) == {"whole", "gappy"}


def test_help_and_messages_name_the_real_defaults_and_ranges() -> None:
    """`--data-root`'s help said "(default: none)" (they live in $MEMPROX_CACHE/data), and
    curvature(h=0) was told "(0, 1]" although the range is [1e-5, 1] (proxies.md)."""
    from harness.cli import help_text
    from harness.errors import HarnessError
    from harness.options import OPTIONS
    from proxies import resolve_proxies

    (data_root,) = [o for o in OPTIONS if o.name == "data_root"]
    assert help_text(data_root).endswith("(default: $MEMPROX_CACHE/data, else ~/.cache/memprox/data)")
    with pytest.raises(HarnessError, match=re.escape("curvature.h must be a finite number in [1e-05, 1] (got 0)")):
        resolve_proxies("curvature(h=0)", {})
