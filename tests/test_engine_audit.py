"""The training engine, audited: a member of a batched ensemble records what its run alone records
(batch norm and augmentation included), a resumed run stores the same bits as an uninterrupted one,
a recipe torch would refuse mid-run is refused before anything trains, and `--compile` runs count
the same FLOPs without torch's hook warning."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_ensemble import _images, _specs

from harness.checkpoints import load_checkpoint, save_checkpoint
from harness.ensemble import train_ensemble
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.presets import PRESETS
from harness.recipe import Recipe
from harness.recorders import EVAL_LAST, RecorderRequest
from harness.runspec import RunSpec, TrainSubset
from harness.training import RunOutput, train_run


def test_batchnorm_members_with_augmentation_match_their_runs_alone(tiny_recipe) -> None:
    """Three members with their own seeds, subsets and crop/flip draws, batch norm in train mode:
    each records the eval pass, history and accuracies its run alone records, to float rounding."""
    data = _images(n=100)
    recipe = replace(tiny_recipe, epochs=2, batch_size=32, lr=0.02, augment=True, schedule="multistep", milestones=(1,))
    specs = _specs(RunSpec(data.spec, "small_cnn", recipe, seed=3), 3)
    assert len({s.seed for s in specs}) == 3 and len({s.train_on for s in specs}) == 3
    for spec, member in zip(specs, train_ensemble(specs, data, [EVAL_LAST], progress=False), strict=True):
        alone = train_run(spec, data, [EVAL_LAST], progress=False)
        a, b = member.arrays[EVAL_LAST.key], alone.arrays[EVAL_LAST.key]
        np.testing.assert_array_equal(a["correct"], b["correct"])
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["probs_last"], b["probs_last"], atol=1e-6)
        np.testing.assert_allclose([h["loss"] for h in member.history], [h["loss"] for h in alone.history], rtol=1e-5)
        assert [h["acc"] for h in member.history] == [h["acc"] for h in alone.history]
        assert (member.train_acc, member.test_acc) == (alone.train_acc, alone.test_acc)


class _Stop(Exception):
    """Stands in for a kill right after the checkpoint of epoch `k` was written."""


def _interrupted_then_resumed(spec: RunSpec, data, requests, k: int, path: Path) -> RunOutput:
    keys = [r.key for r in requests]

    def checkpoint(state: dict) -> None:
        save_checkpoint(path, spec.digest(), state, keys)
        if state["epoch"] == k:
            raise _Stop

    with pytest.raises(_Stop):
        train_run(spec, data, requests, checkpoint=checkpoint, checkpoint_every_s=0, progress=False)
    state = load_checkpoint(path, spec.digest(), keys)
    assert state is not None and state["epoch"] == k
    return train_run(spec, data, requests, resume_state=state, progress=False)


def _assert_same_bits(got: RunOutput, want: RunOutput) -> None:
    assert set(got.arrays) == set(want.arrays)
    for key, arrays in want.arrays.items():
        for name, arr in arrays.items():
            np.testing.assert_array_equal(got.arrays[key][name], arr, err_msg=f"{key}.{name}")
    assert got.history == want.history
    assert (got.train_acc, got.test_acc, got.train_flops) == (want.train_acc, want.test_acc, want.train_flops)


@pytest.mark.parametrize(("optimizer", "schedule", "k"), [("sgd", "multistep", 1), ("adam", "onecycle", 2)])
def test_resume_stores_the_bits_of_an_uninterrupted_run(tmp_path, tiny_recipe, optimizer: str, schedule: str,
                                                        k: int) -> None:
    """Batch norm, augmentation switched off part-way, seeded curvature draws, momentum or Adam
    moments and the lr schedule's position: all come back through a checkpoint file, bit for bit."""
    data = _images(n=80)
    recipe = replace(tiny_recipe, epochs=3, batch_size=32, lr=0.02 if optimizer == "sgd" else 1e-3,
                     optimizer=optimizer, schedule=schedule, milestones=(1, 2), augment=True, augment_epochs=2,
                     weight_decay=5e-4)
    spec = RunSpec(data.spec, "small_cnn", recipe, seed=1)
    requests = [RecorderRequest.of("train_loss"), RecorderRequest.of("train_correct"),
                RecorderRequest.of("eval_pass", epochs="all"), RecorderRequest.of("curvature", n=2)]
    full = train_run(spec, data, requests, progress=False)
    _assert_same_bits(_interrupted_then_resumed(spec, data, requests, k, tmp_path / "c.pt"), full)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_two_phase_resume_at_and_across_the_phase_switch(tmp_path, tiny_recipe, k: int) -> None:
    """SSFT-style runs: a checkpoint at the end of phase 1 (k=2) holds phase 1's optimizer, which
    phase 2 must replace with a fresh one exactly as the uninterrupted run does."""
    data = _images(n=80)
    spec = RunSpec(data.spec, "small_cnn", replace(tiny_recipe, epochs=2, batch_size=32, lr=0.02, augment=True),
                   seed=0, train_on=TrainSubset("half", 0, 2, 0), then_on=TrainSubset("half", 1, 2, 0))
    requests = [RecorderRequest.of("ssft_correct"), RecorderRequest.of("train_loss")]
    full = train_run(spec, data, requests, progress=False)
    _assert_same_bits(_interrupted_then_resumed(spec, data, requests, k, tmp_path / "c.pt"), full)


def test_a_checkpoint_of_another_recorder_set_or_recipe_is_not_resumed(tmp_path, tiny_recipe) -> None:
    data = _images(n=40)
    spec = RunSpec(data.spec, "small_cnn", replace(tiny_recipe, epochs=2, batch_size=32), seed=0)
    path = tmp_path / "c.pt"
    save_checkpoint(path, spec.digest(), {"epoch": 1}, ["train_loss"])
    assert load_checkpoint(path, spec.digest(), ["train_loss"]) == {"epoch": 1}
    assert load_checkpoint(path, spec.digest(), ["train_loss", "train_correct"]) is None
    other = replace(spec, recipe=replace(spec.recipe, lr=0.01))
    with pytest.warns(UserWarning, match="another run"):
        assert load_checkpoint(path, other.digest(), ["train_loss"]) is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("momentum", -0.5, "momentum"),
    ("momentum", 1.0, "momentum"),
    ("weight_decay", -1e-4, "weight decay"),
    ("weight_decay", float("nan"), "weight decay"),
    ("gamma", 0.0, "gamma"),
    ("crop_padding", -2, "crop padding"),
    ("milestones", (0, 5), "milestones"),
])
def test_recipe_refuses_what_torch_would_refuse_mid_run(tiny_recipe, field: str, value, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        replace(tiny_recipe, **{field: value}).validate()


def test_multistep_milestones_past_the_end_are_refused_not_trained_at_a_constant_lr(tiny_recipe) -> None:
    """Before: Recipe(epochs=10) kept the default milestones 120 and 180 and trained at lr 0.1
    throughout, labelled multistep."""
    with pytest.raises(HarnessError, match=r"milestones \[120, 180\] are at or past the end of training \(10 epochs"):
        Recipe(epochs=10).validate()
    with pytest.raises(HarnessError, match=r"milestones \[3\]"):
        replace(tiny_recipe, schedule="multistep", milestones=(1, 3)).validate()  # 3 epochs: 0, 1, 2
    replace(tiny_recipe, schedule="multistep", milestones=(1, 2)).validate()
    replace(tiny_recipe, schedule="multistep", milestones=()).validate()  # a constant lr, said so
    replace(tiny_recipe, schedule="cosine", milestones=(120,)).validate()  # not read by cosine


def test_a_bad_recipe_fails_before_anything_trains(make_config) -> None:
    """Before the fix a negative weight decay passed validation and came back as torch's ValueError
    from inside the training phase."""
    cfg = make_config(recipe=replace(Recipe(epochs=3, schedule="cosine", milestones=(), augment=False),
                                     weight_decay=-1e-4))
    with pytest.raises(HarnessError, match="weight decay"):
        Experiment(cfg).run()
    assert not (cfg.store / "runs").exists() or not any((cfg.store / "runs").iterdir())


def test_every_preset_recipe_is_valid_and_paper_names_its_milestones() -> None:
    for name in PRESETS:
        entry = PRESETS.get(name)
        for preset in (entry.default, *entry.by_dataset.values()):
            preset.recipe.validate()
    paper = PRESETS.get("paper")
    assert paper.default.recipe.milestones == (120, 180)  # App. B.1's text
    assert "120 and 180" in paper.description and "120 and 160" in paper.description  # and the released code's


NO_COMPILER = not any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile needs a C++ compiler")
def test_compiled_run_counts_the_same_flops_without_the_hook_warning(digits_noisy, base_spec) -> None:
    """torch.compile warned that the FLOP counter's global hooks fire twice; the total is the same."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=1))
    eager = train_run(spec, digits_noisy, [RecorderRequest.of("train_loss")], progress=False)
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = train_run(spec, digits_noisy, [RecorderRequest.of("train_loss")], progress=False, compile=True)
    assert not [w for w in caught if "global hooks" in str(w.message)]
    assert compiled.train_flops == eager.train_flops
    np.testing.assert_allclose(compiled.arrays["train_loss"]["loss"], eager.arrays["train_loss"]["loss"], atol=1e-5)
