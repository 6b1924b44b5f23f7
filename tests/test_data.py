"""Dataset loading: shapes, dtypes, the canonical order, the decode cache and the error messages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.datasets import Dataset, dataset_names, imagefolder_cache, load_dataset
from harness.errors import HarnessError

# --- digits ----------------------------------------------------------------------------------


def test_digits_shape_dtype_and_split() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_train.dtype == torch.uint8
    assert ds.y_train.shape == (1437,) and ds.y_train.dtype == torch.int64
    assert ds.x_test.shape == (360, 1, 8, 8) and ds.y_test.shape == (360,)
    assert ds.num_classes == 10 and ds.classes == tuple(str(i) for i in range(10))
    assert ds.input_shape == (1, 8, 8) and ds.n_train == 1437 and ds.full_train_size == 1437
    assert int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0
    # Stratified: each class puts 20% (to within one sample) of its images in the test split.
    n_test = torch.bincount(ds.y_test, minlength=10).double()
    n_all = n_test + torch.bincount(ds.y_train, minlength=10).double()
    assert torch.all((n_test - 0.2 * n_all).abs() <= 1)


def test_digits_is_deterministic_and_in_original_order() -> None:
    from sklearn.datasets import load_digits

    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_test, b.x_test)
    # Canonical order = ascending original index: the train samples are a subsequence of the
    # original data, with the exact 0..16 -> 0..255 mapping.
    raw = load_digits()
    expected = np.rint(raw.images * 255 / 16).astype(np.uint8)
    positions = []
    for img in a.x_train[:50, 0].numpy():
        positions.append(int(np.flatnonzero((expected == img).all(axis=(1, 2)))[0]))
    assert positions == sorted(positions)
    assert np.array_equal(a.y_train[:50].numpy(), raw.target[positions])


def test_digits_subset_keeps_prefix() -> None:
    full, sub = load_dataset("digits"), load_dataset("digits", subset=100)
    assert sub.n_train == 100 and sub.full_train_size == 1437
    assert torch.equal(sub.x_train, full.x_train[:100]) and torch.equal(
        sub.y_train, full.y_train[:100]
    )
    assert sub.x_test.shape[0] == 360


@pytest.mark.parametrize("subset", [0, -3, 1438])
def test_bad_subset_is_an_error(subset: int) -> None:
    with pytest.raises(HarnessError, match="subset"):
        load_dataset("digits", subset=subset)


def test_channel_stats_match_direct_computation() -> None:
    ds = load_dataset("digits")
    mean, std = ds.channel_stats()
    x = ds.x_train.double() / 255
    assert len(mean) == len(std) == 1
    assert mean[0] == pytest.approx(float(x.mean()), rel=1e-9)
    assert std[0] == pytest.approx(float(x.std(unbiased=False)), rel=1e-9)


# --- names and torchvision error path ----------------------------------------------------------


def test_dataset_names() -> None:
    assert dataset_names() == [
        "digits",
        "cifar10",
        "cifar100",
        "mnist",
        "fashion-mnist",
        "imagefolder:PATH",
        "npz:PATH",
        "hf:PATH",
    ]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(HarnessError) as err:
        load_dataset("cifar11")
    message = str(err.value)
    assert "cifar11" in message
    for valid in dataset_names():
        assert valid in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist"])
def test_torchvision_missing_files_explain_the_fix(name: str, tmp_path: Path) -> None:
    # download=False on an empty root: torchvision only checks for files, it never fetches.
    with pytest.raises(HarnessError) as err:
        load_dataset(name, data_root=tmp_path, download=False)
    message = str(err.value)
    assert name in message and str(tmp_path) in message
    assert "--download" in message and "--data-root" in message
    assert not any(tmp_path.iterdir())  # nothing was downloaded


# --- imagefolder -------------------------------------------------------------------------------


def _write_png(path: Path, value: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, (3 * value) % 256)
    Image.new(mode, size, color).save(path)


def _integer_folder(root: Path) -> dict[int, str]:
    """Files whose stems are sample indices, scattered over classes out of order."""
    layout = {7: "cat", 0: "dog", 3: "cat", 12: "bird", 1: "bird", 5: "dog", 2: "cat"}
    for index, cls in layout.items():
        _write_png(root / cls / f"{index:05d}.png", value=10 * index)
    return layout


def test_imagefolder_integer_stems_give_index_order(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    layout = _integer_folder(root)
    ds = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    assert ds.classes == ("bird", "cat", "dog")
    order = sorted(layout)  # 0, 1, 2, 3, 5, 7, 12
    assert ds.y_train.tolist() == [ds.classes.index(layout[i]) for i in order]
    assert ds.x_train.shape == (7, 3, 5, 6) and ds.x_train.dtype == torch.uint8
    assert ds.x_train[:, 0, 0, 0].tolist() == [10 * i for i in order]  # red channel = 10 * index
    assert ds.x_test.shape == (0, 3, 5, 6) and ds.y_test.shape == (0,)
    assert ds.full_train_size == 7


def test_imagefolder_non_integer_stems_give_imagefolder_order(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    files = {
        ("dog", "b.png"): 1,
        ("cat", "z.png"): 2,
        ("dog", "a.png"): 3,
        ("cat", "10.png"): 4,
        ("cat", "9.png"): 5,
    }
    for (cls, name), value in files.items():
        _write_png(root / cls / name, value=value)
    (root / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    # Sorted (class, filename), like torchvision's ImageFolder: "10.png" < "9.png" < "z.png".
    assert ds.x_train[:, 0, 0, 0].tolist() == [4, 5, 2, 3, 1]
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1]


def test_imagefolder_train_test_subset_and_grayscale(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for i in range(6):
        _write_png(root / "train" / ("a" if i % 2 else "b") / f"{i}.png", value=i, mode="L")
    for i in range(3):
        _write_png(root / "test" / "a" / f"{i}.png", value=100 + i, mode="L")
    ds = load_dataset(f"imagefolder:{root}", subset=4, cache_dir=tmp_path / "cache")
    assert ds.classes == ("a", "b")
    assert ds.x_train.shape == (4, 1, 5, 6)  # all grayscale: one channel
    assert ds.x_train[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert ds.y_train.tolist() == [1, 0, 1, 0]
    assert ds.full_train_size == 6
    assert ds.x_test[:, 0, 0, 0].tolist() == [100, 101, 102] and ds.y_test.tolist() == [0, 0, 0]


def test_imagefolder_mixed_gray_and_rgb_becomes_rgb(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _write_png(root / "a" / "0.png", value=40, mode="L")
    _write_png(root / "b" / "1.png", value=50)
    ds = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    assert ds.x_train.shape == (2, 3, 5, 6)
    assert ds.x_train[0, :, 0, 0].tolist() == [40, 40, 40]


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images of each decode call from now on (the cache's `_decode_images`)."""
    decoded: list[int] = []
    real = imagefolder_cache._decode_images

    def counting(files):  # type: ignore[no-untyped-def]
        decoded.append(len(files))
        return real(files)

    monkeypatch.setattr(imagefolder_cache, "_decode_images", counting)
    return decoded


def test_imagefolder_subset_decodes_only_the_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "folder"
    _integer_folder(root)
    decoded = count_decodes(monkeypatch)
    ds = load_dataset(f"imagefolder:{root}", subset=3, cache_dir=tmp_path / "cache")
    assert decoded == [3] and ds.n_train == 3 and ds.full_train_size == 7


def test_imagefolder_cache_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "folder", tmp_path / "cache"
    _integer_folder(root)
    first = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    cached = list((cache / "datasets").glob("*.npy"))
    assert len(cached) == 1
    digests = list((cache / "datasets").glob("*.sha256"))
    assert len(digests) == 1  # the split's content digest, keyed by its listing's sizes and mtimes
    pixels = [f.with_suffix(".pixels") for f in cached]  # each decode's pixel hash beside it
    assert sorted((cache / "datasets").iterdir()) == sorted(cached + digests + pixels)  # no temp file, no lock

    def no_decode(files):  # type: ignore[no-untyped-def]
        raise AssertionError("decoded again although the cache should have been used")

    monkeypatch.setattr(imagefolder_cache, "_decode_images", no_decode)
    second = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_train, second.y_train)

    # A new file changes the key: the cache must not serve stale arrays.
    _write_png(root / "dog" / "00020.png", value=200)
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(f"imagefolder:{root}", cache_dir=cache)


def test_imagefolder_cache_dir_defaults_to_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "folder"
    _integer_folder(root)
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "envcache"))
    load_dataset(f"imagefolder:{root}")
    assert len(list((tmp_path / "envcache" / "datasets").glob("*.npy"))) == 1


def test_imagefolder_missing_path(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", cache_dir=tmp_path)


def test_imagefolder_without_images(tmp_path: Path) -> None:
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    (tmp_path / "folder" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(HarnessError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'folder'}", cache_dir=tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no class subfolders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", cache_dir=tmp_path / "cache")


def test_imagefolder_size_mismatch_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _write_png(root / "a" / "0.png", value=1)
    _write_png(root / "b" / "1.png", value=2, size=(7, 5))
    with pytest.raises(HarnessError, match=r"1\.png.*one size"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")


def test_imagefolder_subset_too_large(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _integer_folder(root)
    with pytest.raises(HarnessError, match=r"--subset 8 .* 7 training samples"):
        load_dataset(f"imagefolder:{root}", subset=8, cache_dir=tmp_path / "cache")


def test_dataset_rejects_wrong_dtype() -> None:
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(HarnessError, match="uint8"):
        Dataset(
            "t",
            x,
            torch.zeros(2, dtype=torch.int64),
            x[:0].to(torch.uint8),
            torch.zeros(0, dtype=torch.int64),
            ("a",),
            2,
        )


# --- the offline CIFAR-10 copy -----------------------------------------------------------------


def _cifar10_dir() -> Path | None:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"]
    if os.environ.get("MEMPROX_CIFAR10_DIR"):
        candidates.insert(0, Path(os.environ["MEMPROX_CIFAR10_DIR"]))
    return next((c for c in candidates if (c / "train").is_dir()), None)


@pytest.mark.slow  # 54 s here: it lists the 50,000 training files and decodes the test split
def test_offline_cifar10_imagefolder_is_in_original_order(tmp_path: Path) -> None:
    root = _cifar10_dir()
    if root is None:
        pytest.skip("offline CIFAR-10 copy not found (set MEMPROX_CIFAR10_DIR)")
    ds = load_dataset(f"imagefolder:{root}", subset=200, cache_dir=tmp_path)
    assert ds.x_train.shape == (200, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.full_train_size == 50_000 and ds.num_classes == 10
    assert 0 <= int(ds.y_train.min()) and int(ds.y_train.max()) <= 9
    # Sample i is file i: labels follow the class folder holding <i>.jpg, pixels that file.
    first = next((root / "train").glob("*/00000.jpg"))
    assert ds.classes[int(ds.y_train[0])] == first.parent.name
    for i in (0, 1, 57, 199):
        file = next((root / "train").glob(f"*/{i:05d}.jpg"))
        assert ds.classes[int(ds.y_train[i])] == file.parent.name
        pixels = np.asarray(Image.open(file).convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(ds.x_train[i].numpy(), pixels)
    assert ds.x_test.shape == (1000, 3, 32, 32)  # max(1000, subset) test images


# --- npz ---------------------------------------------------------------------------------------


def _features(n: int = 30, d: int = 5, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    return rng.normal(size=(n, d)) + y[:, None], y


def test_npz_features_round_trip(tmp_path: Path) -> None:
    x, y = _features()
    xt, yt = x[:7] * 2, y[:7]
    file = tmp_path / "table.npz"
    np.savez(file, x=x, y=y, x_test=xt, y_test=yt)
    ds = load_dataset(f"npz:{file}")
    assert ds.name == f"npz:{file}" and ds.classes == ("0", "1", "2") and not ds.is_image
    assert ds.x_train.dtype == torch.float32 and ds.x_train.shape == (30, 5, 1, 1)
    assert np.array_equal(ds.x_train[:, :, 0, 0].numpy(), x.astype(np.float32))  # stored order is the order
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == y.tolist()
    assert np.array_equal(ds.x_test[:, :, 0, 0].numpy(), xt.astype(np.float32)) and ds.y_test.tolist() == yt.tolist()
    # every feature is a channel, so the per-channel statistics standardize each feature
    mean, std = ds.channel_stats()
    np.testing.assert_allclose(np.array(mean) * 255, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.array(std) * 255, x.std(0), rtol=1e-5)
    sub = load_dataset(f"npz:{file}", subset=10)
    assert sub.n_train == 10 and sub.full_train_size == 30 and torch.equal(sub.x_train, ds.x_train[:10])


def test_npz_images_and_class_names(tmp_path: Path) -> None:
    images = np.arange(4 * 6 * 5, dtype=np.uint8).reshape(4, 6, 5)  # (N, H, W) gray
    file = tmp_path / "img.npz"
    np.savez(file, x=images, y=np.array([1, 0, 1, 2]), classes=np.array(["cat", "dog", "emu"]))
    ds = load_dataset(f"npz:{file}")
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape == (4, 1, 6, 5) and ds.is_image
    assert np.array_equal(ds.x_train[:, 0].numpy(), images)
    assert ds.classes == ("cat", "dog", "emu") and ds.num_classes == 3
    assert ds.x_test.shape == (0, 1, 6, 5)
    rgb = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    np.savez(file, x=rgb, y=np.array([0, 1]))
    assert load_dataset(f"npz:{file}").x_train.shape == (2, 3, 4, 4)


def test_npz_fingerprint_is_the_content(tmp_path: Path) -> None:
    x, y = _features()
    file = tmp_path / "t.npz"
    np.savez(file, x=x, y=y)
    first = load_dataset(f"npz:{file}").fingerprint
    np.savez(tmp_path / "copy.npz", x=x, y=y)
    assert load_dataset(f"npz:{tmp_path / 'copy.npz'}").fingerprint == first  # same bytes, same dataset
    x[3, 2] += 1.0
    np.savez(file, x=x, y=y)
    assert len(first) == 16 and load_dataset(f"npz:{file}").fingerprint != first
    assert load_dataset("digits").fingerprint == ""


def test_imagefolder_has_a_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _integer_folder(root)
    first = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c").fingerprint
    _write_png(root / "dog" / "00020.png", value=200)
    assert first and load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c").fingerprint != first


def _bad(**arrays: np.ndarray) -> dict[str, np.ndarray]:
    x, y = _features()
    return {"x": x, "y": y, **arrays}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, r"lacks array\(s\) \['y'\] \(it has \['x'\]\)"),
        (_bad(x_test=np.zeros((2, 5))), "only one of x_test and y_test"),
        (_bad(y=np.arange(29) % 3), r"y has shape \(29,\) but must be \(30,\)"),
        (_bad(y=(np.arange(30) % 3).reshape(30, 1)), "one class id per sample"),
        (_bad(y=(np.arange(30) % 3).astype(float)), "integer class ids 0..C-1.*astype"),
        (_bad(y=np.arange(30) % 3 - 1), "negative class id -1"),
        (_bad(y=(np.arange(30) % 3) * 2), r"\[1, 3\] never occur.*np.unique"),
        (_bad(y=np.zeros(30, dtype=int)), "single class"),
        (_bad(x_test=np.zeros((2, 5)), y_test=np.array([0, 3])), "y_test has class id 3"),
        (_bad(classes=np.array(["a", "b"])), "class id 2 is out of range for 2 classes"),
        (_bad(classes=np.array(["a", "a", "b"])), "duplicate names"),
        (_bad(x=np.where(np.eye(30, 5) > 0, np.nan, 0.0)), r"NaN or inf in 5 sample\(s\) \(first: \[0, 1, 2, 3, 4\]\)"),
        (_bad(x=np.full((30, 5), np.inf)), "NaN or inf"),
        (_bad(x=np.zeros((0, 5)), y=np.zeros(0, dtype=int)), "x is empty"),
        (_bad(x=np.zeros((30, 0))), "x is empty"),
        (_bad(x=np.zeros(30)), r"x has shape \(30,\); expected \(N, D\)"),
        (_bad(x=np.zeros((30, 8, 8, 3), dtype=np.uint8)), "channels-last.*transpose"),
        (_bad(x=np.array(["a"] * 30)[:, None]), "dtype <U1; save real numbers"),
        (_bad(x_test=np.zeros((2, 6)), y_test=np.array([0, 1])), r"x_test samples are \(6, 1, 1\)"),
    ],
)
def test_npz_validation(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    file = tmp_path / "bad.npz"
    np.savez(file, **arrays)
    with pytest.raises(HarnessError, match=message):
        load_dataset(f"npz:{file}")


def test_npz_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(HarnessError, match="cannot read .* as a .npz file"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(HarnessError, match="single array, not an .npz archive"):
        load_dataset(f"npz:{tmp_path / 'single.npy'}")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 3, dtype=object), y=np.arange(3))
    with pytest.raises(HarnessError, match="object array"):
        load_dataset(f"npz:{tmp_path / 'obj.npz'}")


def test_dataset_paths_are_checked() -> None:
    with pytest.raises(HarnessError, match="npz needs a path"):
        load_dataset("npz:")
    with pytest.raises(HarnessError, match="'digits' takes no path"):
        load_dataset("digits:/tmp/x")


def test_npz_trains_through_the_harness(tmp_path: Path, make_config) -> None:
    """`--dataset npz:PATH` end to end: tabular features, scores aligned with the file's order."""
    from harness.experiment import Experiment

    digits = load_dataset("digits")
    x = digits.x_train.reshape(digits.n_train, -1).numpy() / 16.0  # (N, 64) float features
    file = tmp_path / "digits.npz"
    np.savez(file, x=x, y=digits.y_train.numpy(), x_test=digits.x_test.reshape(360, -1).numpy() / 16.0,
             y_test=digits.y_test.numpy())
    cfg = make_config(dataset=f"npz:{file}", subset=300, out=None)
    result = Experiment(cfg).run()
    assert not result.failures
    (frame,) = result.scores.values()
    assert frame["index"].tolist() == list(range(300))
    assert frame["clean_label"].tolist() == digits.y_train[:300].tolist()
    auroc = result.raw.query("proxy == 'csl' and metric == 'auroc'")["value"]
    assert len(auroc) == 1 and auroc.iloc[0] > 0.8


def test_an_edited_npz_file_is_a_new_dataset_for_the_store(tmp_path: Path, make_config) -> None:
    from harness.experiment import Experiment

    x, y = _features(n=60)
    file = tmp_path / "t.npz"
    np.savez(file, x=x, y=y)
    cfg = make_config(dataset=f"npz:{file}", out=None)
    first = Experiment(cfg).run()
    assert first.trained and not first.reused
    np.savez(file, x=x + 1.0, y=y)
    second = Experiment(cfg).run()
    assert second.trained and not second.reused
