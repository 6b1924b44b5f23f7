"""`harness.datasets` as a package: fingerprints (and with them store addresses) and loaded arrays are
those of the former single module `harness/data.py`, each built-in loader is its own module, no
module is over 400 lines or in an import cycle, `harness.data` still works, and a new dataset is
one module (registered in code, or found through the `memprox.datasets` entry-point group).

The literal values below were computed with `harness/data.py` before the move (commit 1045ac4).
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import harness.datasets as datasets_pkg
from harness.datasets import DATASETS, Dataset, dataset_names, load_dataset
from harness.datasets.base import ENTRY_POINT_GROUP
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "harness" / "datasets"
CIFAR = Path("/work/shared/data/cifar10")  # the shared image folder; skipped where it is absent


def _content(ds: Dataset) -> str:
    """What training sees: every array (dtype, shape, bytes) and the class names."""
    h = hashlib.sha256()
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        a = t.numpy()
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(ds.classes).encode())
    return h.hexdigest()[:16]


def _summary(ds: Dataset) -> tuple:
    return (ds.fingerprint, _content(ds), ds.full_train_size, tuple(ds.x_train.shape), tuple(ds.x_test.shape))


def _write_npz(path: Path) -> Path:
    """A byte-for-byte reproducible .npz (fixed member dates: numpy.savez stamps the current time)."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(40, 5)).astype(np.float32), "y": np.arange(40) % 4,
              "x_test": rng.normal(size=(8, 5)).astype(np.float32), "y_test": np.arange(8) % 4}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for key, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    return path


# --------------------------------------------------------------------------------------------
# same fingerprints, same arrays


def test_digits_is_unchanged() -> None:
    assert _summary(load_dataset("digits")) == ("", "aa79f5878b407e70", 1437, (1437, 1, 8, 8), (360, 1, 8, 8))
    assert _summary(load_dataset("digits", subset=200)) == ("", "ea2dbb5a8f2b2faa", 1437, (200, 1, 8, 8),
                                                           (360, 1, 8, 8))


def test_npz_is_unchanged(tmp_path: Path) -> None:
    ds = load_dataset(f"npz:{_write_npz(tmp_path / 't.npz')}")
    assert _summary(ds) == ("918c85240517eca2", "9e618e812ad2cad3", 40, (40, 5, 1, 1), (8, 5, 1, 1))


@pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason="needs the shared CIFAR-10 image folder")
def test_imagefolder_is_unchanged() -> None:
    """The shared copy: fingerprint (from the JPEG bytes, so the same on every copy of the folder)
    and decoded pixels, frozen."""
    ds = load_dataset(f"imagefolder:{CIFAR}", subset=500)
    assert _summary(ds)[:2] == ("1fe278cf305bb524", "ab45fc3cea4cc8be")  # test split: 100 per class
    assert _summary(ds)[2:] == (50000, (500, 3, 32, 32), (1000, 3, 32, 32))


def test_imagefolder_pixels_and_fingerprint_frozen(tmp_path: Path) -> None:
    """Binary PPM images, written byte by byte (no encoder whose output could change): the decoded
    arrays and the fingerprint are frozen, whatever the folder's path and the files' mtimes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                (tmp_path / split / cls / f"{i}.ppm").write_bytes(b"P6\n32 32\n255\n" + pixels.tobytes())
    first = _summary(load_dataset(f"imagefolder:{tmp_path}"))
    assert first == ("df77c5a10639c373", "d98f0b0bb8e8bd7b", 6, (6, 3, 32, 32), (4, 3, 32, 32))
    os.utime(tmp_path / "train" / "a" / "0.ppm", (1_700_000_000, 1_700_000_100))
    assert _summary(load_dataset(f"imagefolder:{tmp_path}")) == first


def test_hf_is_unchanged(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import _hf_tiny as tiny
    finally:
        sys.path.pop(0)
    image = load_dataset(f"hf:{tiny.save_image_dataset(tmp_path / 'img')}")
    assert _summary(image) == ("1641386d3fb53e65", "10dbae989a8fa4d5", 30, (30, 3, 8, 8), (0, 3, 8, 8))
    tok, text = tiny.make_tokenizer(tmp_path / "tok"), tiny.save_text_dataset(tmp_path / "txt")
    ds = load_dataset(f"hf:{text},text=sentence,tokenizer={tok},max_length=16")
    assert _summary(ds) == ("c5d2004963888d9e", "259a2e27dcba5900", 64, (64, 9, 1, 1), (16, 9, 1, 1))


# --------------------------------------------------------------------------------------------
# structure


def test_each_builtin_loader_is_its_own_module() -> None:
    where = {name: entry.load.__module__ for name, entry in DATASETS.items() if entry.load.__module__.startswith(
        "harness.")}
    tv = "harness.datasets.torchvision_sets"
    assert where == {"digits": "harness.datasets.digits", "cifar10": tv, "cifar100": tv, "mnist": tv,
                     "fashion-mnist": tv, "imagefolder": "harness.datasets.imagefolder",
                     "npz": "harness.datasets.npz", "hf": "harness.datasets.hf"}
    assert dataset_names()[:8] == ["digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder:PATH",
                                   "npz:PATH", "hf:PATH"]


def test_no_module_over_400_lines() -> None:
    files = [*PACKAGE.glob("*.py"), REPO / "harness" / "data.py"]
    sizes = {f.name: len(f.read_text().splitlines()) for f in files}
    assert max(sizes.values()) <= 400, sizes


def _imports(file: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_import_cycle() -> None:
    """Inside the package, modules import base (and hf_labels imports npz), never the package or each other
    in a loop; outside it, only harness's leaf modules (errors, io, registry, values), so no cycle can pass
    through the rest of the harness (nor through the `harness.data` alias). `harness.values` is a
    leaf too (it imports only errors): its `expand_home` turns a `~user` that cannot expand into one line."""
    modules = {f.stem for f in PACKAGE.glob("*.py")} - {"__init__"}
    graph = {m: {i.rsplit(".", 1)[-1] for i in _imports(PACKAGE / f"{m}.py") if i.startswith("harness.datasets.")
                 and i.rsplit(".", 1)[-1] in modules} for m in modules}
    for m in modules:
        outside = {i for i in _imports(PACKAGE / f"{m}.py") if i.startswith("harness") and
                   not i.startswith("harness.datasets")}
        assert outside <= {"harness.errors", "harness.errors.HarnessError", "harness.errors.SubsetTooLarge",
                           "harness.io", "harness.io.atomic_write",
                           "harness.io.exclusive", "harness.io.file_sha256", "harness.registry",
                           "harness.registry.Registry", "harness.registry.installed_plugins",
                           "harness.registry.load_failure", "harness.values",
                           "harness.values.expand_home", "harness.values.EXCLUDE_OPTION"}, (m, outside)
        assert "harness.datasets" not in _imports(PACKAGE / f"{m}.py"), m
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in visiting, f"import cycle: {' -> '.join((*path, m))}"
        if m in done:
            return
        visiting.add(m)
        for n in graph[m]:
            visit(n, (*path, m))
        visiting.discard(m)
        done.add(m)

    for m in sorted(modules):
        visit(m, ())


def test_harness_data_is_an_alias() -> None:
    from harness import data

    for name in data.__all__:
        assert getattr(data, name) is getattr(datasets_pkg, name), name
    assert set(data.__all__) == set(datasets_pkg.__all__)  # docs: "the same names"


# --------------------------------------------------------------------------------------------
# a new dataset is one module

_TINY = '''
"""A tiny synthetic dataset, in one module."""
import numpy as np
import torch

from harness.datasets import Dataset, LoadRequest, register_dataset


@register_dataset({name!r}, "three Gaussian blobs, 8 features")
def load(request: LoadRequest) -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(160) % 3
    x = (rng.normal(size=(160, 8)) + 2.0 * y[:, None]).astype(np.float32)
    n = request.subset or 120
    xt, yt = torch.from_numpy(x)[:, :, None, None], torch.from_numpy(y.astype(np.int64))
    return Dataset(name={name!r}, x_train=xt[:n], y_train=yt[:n], x_test=xt[120:], y_test=yt[120:],
                   classes=("a", "b", "c"), full_train_size=120)
'''


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Datasets registered by a test are gone after it; its modules are importable from tmp_path."""
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("tiny_ds_"):
            del sys.modules[name]


def test_a_dataset_in_one_module_runs_by_name(scratch_registry: Path, make_config, capsys) -> None:
    from harness.cli import main
    from harness.experiment import Experiment

    (scratch_registry / "tiny_ds_blobs.py").write_text(textwrap.dedent(_TINY.format(name="blobs3")))
    __import__("tiny_ds_blobs")
    assert "blobs3" in dataset_names()
    ds = load_dataset("blobs3", subset=50)
    assert ds.n_train == 50 and ds.x_train.shape == (50, 8, 1, 1) and ds.full_train_size == 120

    result = Experiment(make_config(dataset="blobs3", subset=60, out=None)).run()
    assert not result.failures and result.trained
    (frame,) = result.scores.values()
    assert frame["index"].tolist() == list(range(60))

    code = main(["run", "--dataset", "blobs3", "--model", "mlp", "--epochs", "2", "--batch-size", "16",
                 "--subset", "60", "--seeds", "1", "--noise-rates", "0.1", "--proxies", "csl",
                 "--tasks", "mislabeled", "--executor", "inprocess", "--no-progress", "--bootstrap", "0",
                 "--out", str(scratch_registry / "cli-out"), "--store", str(scratch_registry / "cli-store")])
    assert code == 0, capsys.readouterr().err
    assert list((scratch_registry / "cli-out" / "scores").glob("*.csv"))


def test_an_entry_point_plugin_is_imported_when_its_name_is_loaded(scratch_registry: Path) -> None:
    (scratch_registry / "tiny_ds_plugin.py").write_text(textwrap.dedent(_TINY.format(name="blobsplug")))
    (scratch_registry / "tiny_ds_bad.py").write_text("x = 1\n")
    info = scratch_registry / "tiny_ds_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-ds-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nblobsplug = tiny_ds_plugin\n"
                                           "silent = tiny_ds_bad\nbroken = tiny_ds_missing\n")
    assert "blobsplug" not in DATASETS and "blobsplug" in dataset_names()  # listed, not imported yet
    ds = load_dataset("blobsplug")
    assert ds.name == "blobsplug" and ds.n_train == 120 and "tiny_ds_plugin" in sys.modules
    assert "blobsplug" in DATASETS
    with pytest.raises(HarnessError, match="registered no dataset 'silent'"):
        load_dataset("silent")
    with pytest.raises(HarnessError, match="plugin 'broken' .* failed to load"):
        load_dataset("broken")
    with pytest.raises(HarnessError, match="unknown dataset 'nope'"):
        load_dataset("nope")
