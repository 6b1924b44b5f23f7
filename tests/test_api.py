"""The Python API: `run_experiment` gives the CLI's leaderboard as DataFrames, from the same builder,
with the same defaults and the same validation; files only when `out` is given."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.api import experiment_config, keywords, run_experiment
from harness.cli import build_parser, main, run_options
from harness.errors import HarnessError

#: Trained in this process (`--executor inprocess`): the pool's worker processes cost seconds of
#: imports each, and the outputs are the same with any executor (test_local_pool.py,
#: test_executor_equivalence10.py).
TINY = {"dataset": "digits", "proxies": "csl,aum", "tasks": "mislabeled", "seeds": "2", "noise_rates": "0.1",
        "epochs": "2", "device": "cpu", "bootstrap": "50", "executor": "inprocess"}


def as_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a CSV file holds it (nullable booleans and NaN read back alike)."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def _cli_argv(options: dict[str, str], **paths: Path) -> list[str]:
    argv = ["run", "--no-progress"]
    for key, value in {**options, **{k: str(v) for k, v in paths.items()}}.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return argv


def test_run_experiment_returns_the_cli_leaderboard(tmp_path) -> None:
    cli_out, store = tmp_path / "cli", tmp_path / "store"
    assert main(_cli_argv(TINY, out=cli_out, store=store)) == 0
    result = run_experiment(dataset="digits", proxies=["csl", "aum"], tasks=["mislabeled"], seeds=2,
                            noise_rates=[0.1], epochs=2, device="cpu", bootstrap=50, store=store, progress=False)
    assert result.trained == [] and len(result.reused) == 2  # the same runs, found in the store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli", "store"]  # out=None wrote nothing
    expected = pd.read_csv(cli_out / "leaderboard.csv")
    assert len(expected) > 0 and set(expected["proxy"]) == {"csl", "aum"}
    pd.testing.assert_frame_equal(as_csv(result.leaderboard), expected)
    pd.testing.assert_frame_equal(as_csv(result.raw.drop(columns="boot", errors="ignore")),
                                  pd.read_csv(cli_out / "raw.csv"))
    assert sorted(result.scores) == ["noise=0.1_seed0", "noise=0.1_seed1"]
    for key, frame in result.scores.items():
        on_disk = pd.read_csv(cli_out / "scores" / f"{key}.csv")
        pd.testing.assert_frame_equal(as_csv(frame), on_disk)
        assert np.isfinite(frame["csl"]).all()


def test_run_experiment_writes_files_when_given_out(tmp_path) -> None:
    result = run_experiment(proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1, device="cpu",
                            bootstrap=0, store=tmp_path / "store", out=tmp_path / "out", progress=False,
                            executor="inprocess")
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    pd.testing.assert_frame_equal(as_csv(result.leaderboard), board)


def test_cli_flags_and_api_options_are_the_same_set() -> None:
    run_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    dests = {a.dest for a in run_parser._actions if a.dest != "help"}
    assert dests == set(keywords())


def test_cli_defaults_are_the_api_defaults() -> None:
    """`python -m harness run` with no flags builds the config `run_experiment()` builds (out aside)."""
    from_cli = experiment_config(**run_options(build_parser().parse_args(["run"])))
    assert from_cli == experiment_config(out="results/latest")
    assert experiment_config().out is None
    assert from_cli.seeds == (0, 1, 2) and from_cli.noise_rates == (0.01, 0.02, 0.05, 0.1)
    assert from_cli.duplicate_pairs is None and from_cli.bootstrap == 1000 and from_cli.executor == "local"


def test_python_values_and_cli_strings_build_the_same_config() -> None:
    from_strings = experiment_config(seeds="0,5", noise_rates="0.05,0.1", tasks="mislabeled,cost",
                                     proxies="csl,curvature(n=2)", proxy_args=["el2n.window=0.2"], augment="on",
                                     epochs=3)
    from_python = experiment_config(seeds=np.array([0, 5]), noise_rates=(0.05, 0.1), tasks=["mislabeled", "cost"],
                                    proxies=["csl", "curvature(n=2)"], proxy_args={"el2n": {"window": 0.2}},
                                    augment=True, epochs=3)
    assert from_strings == from_python
    assert from_python.seeds == (0, 5) and from_python.recipe.epochs == 3 and from_python.recipe.augment


def test_duplicate_pairs_keeps_none_and_zero_apart() -> None:
    assert experiment_config().duplicate_pairs is None  # the default, 0.5 % of N
    assert experiment_config(duplicate_pairs=5).duplicate_pairs == 5
    with pytest.raises(HarnessError, match="duplicate pairs must be an integer >= 1"):
        experiment_config(duplicate_pairs=0)


def test_noisy_labels_replace_the_noise_rates() -> None:
    assert experiment_config(noisy_labels="labels.npy").noise_rates == ()
    with pytest.raises(HarnessError, match="noisy_labels replaces noise_rates"):
        experiment_config(noisy_labels="labels.npy", noise_rates=[0.1])


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"seeds": True}, "seeds takes"),
        ({"seeds": [0.5]}, "seeds takes"),
        ({"seeds": [1, 1]}, "repeats seed"),
        ({"noise_rates": [True]}, "noise_rates takes"),
        ({"augment": "maybe"}, "augment"),
        ({"compile": 1}, "compile must be True or False"),
        ({"threads": 1.5}, "thread count"),
        ({"epochs": 2.5}, "epochs"),
        ({"bootstrap": True}, "bootstrap"),
        ({"gpus_per_run": float("nan")}, "GPUs per run"),
        ({"preset": "nosuch"}, "preset"),
        ({"nosuch": 1}, "unknown option(s) nosuch; valid: dataset, proxies"),
    ],
)
def test_python_values_are_validated_like_flags(options: dict, needle: str) -> None:
    with pytest.raises(HarnessError) as info:
        experiment_config(**options)
    assert needle in str(info.value)


def test_run_experiment_raises_before_training(tmp_path) -> None:
    with pytest.raises(HarnessError, match="curvature.h"):
        run_experiment(proxies="curvature(h=1e999)", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1,
                       device="cpu", store=tmp_path / "store")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_precision_reaches_the_recipe_training_reads() -> None:
    """--precision changes the run's numbers, so it goes into the recipe (the run's address)."""
    assert experiment_config().recipe.precision == "fp32"
    bf16 = experiment_config(precision="bf16")
    assert bf16.precision == bf16.recipe.precision == "bf16"
    gpu = experiment_config(preset="gpu", dataset="cifar10")  # the preset's own precision
    assert gpu.precision == gpu.recipe.precision == "bf16"
    assert experiment_config(preset="gpu", dataset="cifar10", precision="fp32").recipe.precision == "fp32"


def test_a_hand_built_config_cannot_ignore_its_precision(make_config) -> None:
    with pytest.raises(HarnessError, match="disagrees with recipe.precision"):
        make_config(precision="bf16").validate()


def _small_image_folder(root: Path, per_class: int = 10) -> None:
    """3 classes of 32x32 RGB PNGs, `per_class` training images each, 2 test images each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for c in range(3):
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{c * count + i}.png")


def test_a_presets_subset_caps_a_smaller_image_dataset(tmp_path) -> None:
    # the quick preset keeps 4,000 images; a 30-image folder is used whole (with a warning), not
    # refused for a --subset the user never passed; an explicit --subset too large is still an error
    root = tmp_path / "folder"
    _small_image_folder(root)
    common = {"dataset": f"imagefolder:{root}", "proxies": "csl", "tasks": "mislabeled", "noise_rates": [0.1],
              "seeds": 1, "epochs": 1, "device": "cpu", "bootstrap": 0, "store": tmp_path / "store",
              "progress": False, "executor": "inprocess"}
    with pytest.warns(UserWarning, match="quick preset's subset of 4000 is more than the 30 training samples"):
        result = run_experiment(**common, out=tmp_path / "out")
    assert len(result.scores["noise=0.1_seed0"]) == 30
    # each score names its image, so a suspect can be found in the folder
    on_disk = pd.read_csv(tmp_path / "out" / "scores" / "noise=0.1_seed0.csv")
    assert list(on_disk.columns[:3]) == ["index", "file", "label"]
    assert on_disk["file"].tolist() == [f"train/class{i // 10}/{i}.png" for i in range(30)]
    assert on_disk["file"].tolist() == result.scores["noise=0.1_seed0"]["file"].tolist()
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"subset": null' in summary
    with pytest.raises(HarnessError, match="subset=31 is larger than the 30 training samples"):
        run_experiment(**common, subset=31)


def test_numpy_values_are_the_python_numbers_they_hold() -> None:
    # values read from arrays: the same config and the same experiment identity as plain numbers
    from harness.config import experiment_id

    plain = experiment_config(epochs=3, seeds=2, noise_rates=[0.1, 0.2], lr=0.05, subset=100)
    numpy = experiment_config(epochs=np.int64(3), seeds=np.int32(2), noise_rates=np.array([0.1, 0.2]),
                              lr=np.float64(0.05), subset=np.int64(100))
    assert numpy == plain and experiment_id(numpy) == experiment_id(plain)
    assert type(numpy.recipe.epochs) is int


def test_float32_values_are_the_decimals_they_print_as() -> None:
    """Before: np.float32(0.1) became 0.10000000149011612, another experiment (no reuse of the
    store) whose setting and learning rate read 0.10000000149011612."""
    from harness.config import experiment_id

    plain = experiment_config(noise_rates=[0.1, 0.2], lr=0.05)
    single = experiment_config(noise_rates=np.array([0.1, 0.2], dtype=np.float32), lr=np.float32(0.05))
    assert single.noise_rates == (0.1, 0.2) and single.recipe.lr == 0.05
    assert experiment_id(single) == experiment_id(plain)


def test_a_generator_is_read_once() -> None:
    """Before: the type check consumed it and parsing saw nothing: 'the mislabeled task needs noise
    rates', about rates the caller had passed."""
    cfg = experiment_config(noise_rates=(r for r in [0.1, 0.05]), seeds=iter([0, 3]), tasks=(t for t in ["mislabeled"]))
    assert (cfg.noise_rates, cfg.seeds, cfg.tasks) == ((0.1, 0.05), (0, 3), ("mislabeled",))


def test_numpy_values_in_proxy_args_are_python_numbers() -> None:
    """Before: curvature.n=np.int64(2) passed the config and failed `check_int` when the proxies
    were built ('must be an integer >= 1 (got np.int64(2))')."""
    from proxies import resolve_proxies

    cfg = experiment_config(proxies="curvature", proxy_args={"curvature": {"n": np.int64(2), "h": np.float32(0.01)}})
    assert cfg.proxy_args == {"curvature": {"n": 2, "h": 0.01}}
    assert [p.label for p in resolve_proxies(cfg.proxies, cfg.proxy_args)] == ["curvature(h=0.01,n=2)"]


def test_an_out_inside_the_image_folder_is_refused_before_training(tmp_path) -> None:
    # results written into an imagefolder: would become a class folder and break the dataset
    root = tmp_path / "folder"
    _small_image_folder(root)
    common = {"dataset": f"imagefolder:{root}", "proxies": "csl", "tasks": "mislabeled", "noise_rates": [0.1],
              "seeds": 1, "epochs": 1, "device": "cpu", "bootstrap": 0, "progress": False, "executor": "inprocess"}
    with pytest.raises(HarnessError, match="folder"):
        run_experiment(**common, store=tmp_path / "store", out=root / "train" / "results")
    with pytest.raises(HarnessError, match="folder"):
        run_experiment(**common, store=root / "store", out=tmp_path / "out")
    assert sorted(p.name for p in (root / "train").iterdir()) == ["class0", "class1", "class2"]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))
