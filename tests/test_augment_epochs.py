"""`augment_epochs`: augmentation in the first N epochs of a phase only (the cpu-full preset's way to
learn features under augmentation and still fit every label at the end). Exact equalities: N = 0 is
bitwise a run without augmentation, N = epochs bitwise one augmented throughout, in both engines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_ensemble import KEY, _images, _specs

from harness.api import experiment_config as build_config
from harness.ensemble import train_ensemble
from harness.errors import HarnessError
from harness.recorders import EVAL_LAST
from harness.runspec import RunSpec
from harness.training import augmenting, train_run


def _run(recipe, data):
    out = train_run(RunSpec(data.spec, "small_cnn_gn", recipe, seed=0), data, [EVAL_LAST], progress=False)
    return out.arrays[KEY]["p_label"], [h["loss"] for h in out.history]


@pytest.fixture(scope="module")
def images():
    return _images()


def test_augmenting_is_decided_per_epoch(tiny_recipe) -> None:
    r = replace(tiny_recipe, augment=True, epochs=5, augment_epochs=2)
    assert [augmenting(r, (3, 16, 16), e) for e in range(5)] == [True, True, False, False, False]
    assert not any(augmenting(r, (1, 8, 8), e) for e in range(5))  # digits are never cropped
    assert all(augmenting(replace(r, augment_epochs=None), (3, 16, 16), e) for e in range(5))


def test_zero_and_all_epochs_equal_off_and_on_bitwise(tiny_recipe, images, monkeypatch) -> None:
    """Compared with the normalisation (`Recipe.__post_init__`) off, so the schedule itself is tested."""
    import harness.recipe

    monkeypatch.setattr(harness.recipe.Recipe, "__post_init__", lambda self: None)
    base = replace(tiny_recipe, epochs=3, batch_size=32, lr=0.02, augment=True)
    on, off = _run(base, images), _run(replace(base, augment=False), images)
    assert np.array_equal(_run(replace(base, augment_epochs=3), images)[0], on[0])
    assert np.array_equal(_run(replace(base, augment_epochs=0), images)[0], off[0])
    mixed = _run(replace(base, augment_epochs=1), images)
    assert mixed[1][0] == on[1][0]  # the first epoch is the augmented run's, exactly
    assert mixed[1][1] != on[1][1] and not np.array_equal(mixed[0], off[0])


def test_ensemble_members_switch_at_the_same_epoch(tiny_recipe, images) -> None:
    """The engines agree to rounding, which the switch amplifies on some CPUs (AMD EPYC, AVX-512: 1.8e-4
    after 3 epochs, 7.7e-4 after 2, 2e-7 without a switch); a switch one or two epochs off moves p_label
    by 0.16-0.26, so 1e-3 still catches a member that switches at another epoch."""
    recipe = replace(tiny_recipe, epochs=3, batch_size=32, lr=0.02, augment=True, augment_epochs=1)
    specs = _specs(RunSpec(images.spec, "small_cnn_gn", recipe, seed=0), 2)
    outs = train_ensemble(specs, images, [EVAL_LAST], progress=False)
    for spec, out in zip(specs, outs, strict=True):
        single = train_run(spec, images, [EVAL_LAST], progress=False)
        np.testing.assert_allclose(out.arrays[KEY]["p_label"], single.arrays[KEY]["p_label"], atol=1e-3)


def test_settings_that_change_nothing_take_the_plain_form(tiny_recipe) -> None:
    r = replace(tiny_recipe, augment=True, epochs=4)
    assert replace(r, augment_epochs=4) == r
    assert replace(r, augment_epochs=0) == replace(r, augment=False)
    assert replace(r, augment_epochs=2).augment_epochs == 2


def test_the_field_keeps_old_addresses_and_changes_new_ones(tiny_recipe, images) -> None:
    spec = RunSpec(images.spec, "small_cnn", replace(tiny_recipe, augment=True), seed=0)
    assert replace(spec, recipe=replace(spec.recipe, augment_epochs=None)).digest() == spec.digest()
    assert replace(spec, recipe=replace(spec.recipe, augment_epochs=1)).digest() != spec.digest()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"augment": False, "augment_epochs": 2}, "augmentation off"),
    ({"augment": True, "augment_epochs": 9, "epochs": 5}, "must be in [0, epochs=5]"),
])
def test_contradictions_are_refused(tiny_recipe, kwargs, message) -> None:
    with pytest.raises(HarnessError, match=message.replace("[", r"\[").replace("]", r"\]")):
        replace(tiny_recipe, **kwargs).validate()


def test_options_follow_the_preset_and_the_flags(tmp_path) -> None:
    from harness.options import _augment_into, _epochs_into
    from harness.recipe import Recipe

    preset = Recipe(epochs=20, augment=True, augment_epochs=10)  # as a preset would give it
    assert _epochs_into(preset, 15).augment_epochs == 10
    assert _epochs_into(preset, 3).augment_epochs is None  # cut to the epochs: augmented throughout
    off = _augment_into(preset, False)
    assert not off.augment and off.augment_epochs is None  # nothing left to stop
    common = dict(dataset="cifar10", store=tmp_path / "s", out=tmp_path / "o", preset="cpu-full")
    assert build_config(**common, augment_epochs=5).recipe.augment_epochs == 5
    zero = build_config(**common, augment_epochs=0).recipe
    assert (zero.augment, zero.augment_epochs) == (False, None)  # one address for one training
    with pytest.raises(HarnessError, match="fix augment_epochs"):
        build_config(**common, augment_epochs=-1)
    with pytest.raises(HarnessError, match="must be in"):  # both given: no silent cut
        build_config(**common, epochs=3, augment_epochs=4)
    with pytest.raises(HarnessError, match="augmentation off"):
        build_config(**common, augment=False, augment_epochs=4)


def test_the_experiment_id_changes_only_when_the_field_is_set(tmp_path) -> None:
    from harness.cli import preset_note
    from harness.config import experiment_id

    common = dict(dataset="cifar10", store=tmp_path / "s", out=tmp_path / "o", preset="cpu-full", augment=True)
    plain = build_config(**common)
    assert experiment_id(build_config(**common, augment_epochs=2)) != experiment_id(plain)
    assert "augmentation in the first 2 epochs, then off" in preset_note(build_config(**common, augment_epochs=2))
