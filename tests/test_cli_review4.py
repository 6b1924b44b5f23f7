"""Review 4 of the command line and configuration: each test failed before its fix."""

from __future__ import annotations

import pytest

from harness.api import experiment_config
from harness.cli import main, preset_note
from harness.config import ExperimentConfig, experiment_id
from harness.errors import HarnessError


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --download fetches files; it does not change what is computed ----------------------------------
def test_download_leaves_the_experiment_identity_alone(monkeypatch) -> None:
    """`--download` in the first run and not in the rerun (the quickstart's workflow: fetch once) made
    the rerun "another experiment", refused on its own --out without --overwrite. Ids of configs
    without it stay as they were (the default's is pinned in test_options)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the id pinned on a machine without CUDA
    plain = experiment_config()
    assert experiment_id(plain) == "054ea2abc95a6134"
    assert experiment_id(experiment_config(download=True)) == experiment_id(plain)
    assert experiment_id(ExperimentConfig(download=True)) == experiment_id(ExperimentConfig())


# seeds the fold and half splits cannot take ---------------------------------------------------------
def test_a_seed_past_32_bits_is_one_error_line(tmp_path, capsys) -> None:
    """Seeds up to 2**64 - 1 passed, and confident_learning's and ssft's stratified splits (sklearn,
    32-bit seeds) then failed with a numpy ValueError traceback while planning."""
    code = main(["run", "--proxies", "confident_learning", "--tasks", "mislabeled", "--seeds", f"{2**32},",
                 "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--executor", "inprocess"])
    assert code == 2
    assert "seed must be at most 4294967295" in _error_line(capsys)
    assert not (tmp_path / "s").exists() and not (tmp_path / "o").exists()


def test_the_largest_seed_plans_the_split_runs(tmp_path) -> None:
    """The bound is the splits' own: 2**32 - 1 still plans them (guards the bound above)."""
    from harness.experiment import Experiment

    cfg = experiment_config(proxies="confident_learning,ssft", tasks="mislabeled", seeds=[2**32 - 1],
                            noise_rates=[0.1], store=tmp_path / "s", executor="inprocess", device="cpu")
    specs = Experiment(cfg).plan.runs
    assert {s.seed for s in specs} == {2**32 - 1}
    assert {s.train_on.kind for s in specs} == {"fold", "half"}


# the printed recipe ---------------------------------------------------------------------------------
def test_the_printed_recipe_does_not_claim_augment_epochs_on_inputs_never_augmented() -> None:
    """`--augment on --augment-epochs 1` on 8x8 digits printed "augmentation in the first 1 epochs,
    then off", though the engine augments no epoch of images under 16 pixels wide."""
    cfg = experiment_config(augment="on", augment_epochs=1, epochs=2)
    assert "augmentation on, not applied to these inputs" in preset_note(cfg, (1, 8, 8))
    assert preset_note(cfg, (3, 32, 32)).endswith("augmentation in the first 1 epochs, then off")
    assert preset_note(cfg).endswith("augmentation in the first 1 epochs, then off")


# proxy names ------------------------------------------------------------------------------------------
def test_a_proxy_named_all_is_refused_when_it_registers() -> None:
    """`--proxies all` selects every proxy, so a proxy named "all" could never be selected alone
    (nor given --proxy-arg all.PARAM=...)."""
    from proxies.base import Proxy
    from proxies.registry import PROXIES, register_proxy

    class All(Proxy):
        name, description, citation = "all", "every sample scores 0", "none"

        def score(self, ctx):  # pragma: no cover - never registered
            raise NotImplementedError

    with pytest.raises(TypeError, match="'all'"):
        register_proxy(All)
    assert "all" not in PROXIES


# a hand-built ExperimentConfig --------------------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    ({"seeds": 3}, "seeds must be a tuple"),
    ({"noise_rates": 0.1}, "noise_rates must be a tuple"),
    ({"noise_rates": None}, "noise_rates must be a tuple"),
    ({"tasks": "mislabeled"}, "tasks must be a tuple"),
    ({"tasks": "cost"}, "tasks must be a tuple"),
    ({"recipe": None}, "recipe must be a harness.recipe.Recipe"),
])
def test_a_hand_built_config_of_the_wrong_shape_is_bad_input(fields, message) -> None:
    """The config promises a hand-built config the same refusals as the API; seeds=3 (the API's
    count) raised TypeError from len(), tasks="mislabeled" said "repeats task(s) e, l", and
    tasks="cost" passed to fail as unknown tasks 'c', 'o', 's', 't'."""
    with pytest.raises(HarnessError, match=message) as caught:
        ExperimentConfig(**fields).validate()
    assert "experiment_config" in str(caught.value)


# --help says what each option does -------------------------------------------------------------------
def test_the_help_of_gpus_per_run_names_the_local_pool_too() -> None:
    """It said "ray on GPUs", but the local pool reads it as well: on a GPU it runs at most 1 / F
    runs at once (`default_workers`), and both size the ensemble chunks by it (the planner)."""
    from harness.cli import help_text
    from harness.executors.local import default_workers
    from harness.options import keyword_options

    text = help_text(keyword_options()["gpus_per_run"])
    assert "local" in text and "ray" in text and not text.startswith("ray on GPUs")
    assert default_workers(1, 0.25, cpus=16) == 4  # what the help promises the pool does


# a set has no order ----------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["tasks", "proxies"])
def test_a_set_of_names_is_refused_because_its_order_changes_between_runs(option) -> None:
    """String hashing is salted per process, so tuple({"csl", "aum"}) came in another order in each
    run: the same call got another experiment id (its own --out refused as another experiment's)
    and another leaderboard order. Measured: 3 ids in 4 processes for the same call."""
    with pytest.raises(HarnessError, match=f"{option} must be str or list of str \\(got set "):
        experiment_config(**{option: {"csl", "aum"} if option == "proxies" else {"mislabeled", "cost"}})
    ordered = experiment_config(**{option: ["csl", "aum"] if option == "proxies" else ("mislabeled", "cost")})
    assert experiment_id(ordered) == experiment_id(experiment_config(
        **{option: "csl,aum" if option == "proxies" else "mislabeled,cost"}))


# plugins -----------------------------------------------------------------------------------------------
def test_a_plugin_with_an_unhashable_name_warns_instead_of_taking_the_harness_down(monkeypatch) -> None:
    """`name = ["x"]` raised TypeError (unhashable) in the clash check, before the class's own checks
    could refuse it: every command, `list` included, ended in a traceback."""
    import importlib.metadata
    import sys
    import types

    from harness.registry import Registry, load_class_plugins
    from proxies.base import Proxy
    from proxies.registry import register_proxy

    class Listed(Proxy):
        name, description, citation = ["listed"], "d", "c"

        def score(self, ctx):  # pragma: no cover - never registered
            raise NotImplementedError

    module = types.ModuleType("rv4_plugin_module")
    module.Listed = Listed
    monkeypatch.setitem(sys.modules, "rv4_plugin_module", module)
    entry = importlib.metadata.EntryPoint("listed", "rv4_plugin_module:Listed", "rv4.proxies")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [entry] if group == "rv4.proxies" else [])
    registry: Registry[type] = Registry("proxy")
    with pytest.warns(UserWarning, match=r"proxy plugin 'listed' .* is invalid: .*\['listed'\].*; ignored"):
        load_class_plugins("rv4.proxies", registry, Proxy, register_proxy)
    assert len(registry) == 0
