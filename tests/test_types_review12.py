"""What the type-checking pass (mypy gated in CI) changed in behaviour, pinned: a decode cache that
cannot be read back right after it is written still yields the pixels (it returned None: the
loader crashed on a file system without memory maps), and `build_model` refuses a shape that is not
(C, H, W) with what the loaders make instead of a factory's unpacking error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.datasets import imagefolder_cache, load_dataset
from harness.model_registry import as_shape, build_model
from harness.models import MODELS  # noqa: F401  (registers the built-in models)


def _folder(root: Path) -> Path:
    for c, name in enumerate(("ant", "bee")):
        for i in range(3):
            index = 3 * c + i
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (40 * index, 255 - index, 7)).save(root / "train" / name / f"{index:05d}.png")
    return root


def test_a_cache_unreadable_after_its_write_gives_the_decoded_pixels(tmp_path, monkeypatch) -> None:
    root = _folder(tmp_path / "ds")
    expected = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "plain").x_train
    monkeypatch.setattr(imagefolder_cache, "_read_cache", lambda folder, key, count: None)
    got = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "unmappable")
    assert isinstance(got.x_train, torch.Tensor) and got.x_train.shape == (6, 3, 4, 4)
    assert torch.equal(got.x_train, expected)
    assert np.unique(got.y_train.numpy()).tolist() == [0, 1]


def test_build_model_takes_a_samples_shape_and_refuses_another_length() -> None:
    assert as_shape((3, 8, 8)) == (3, 8, 8) and type(as_shape(torch.Size([64, 1, 1]))) is tuple
    assert build_model("mlp", (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"\(C, H, W\), got \(8, 8\): features are stored as \(D, 1, 1\)"):
        build_model("mlp", (8, 8), 10)


def test_a_preset_subset_that_cuts_the_dataset_is_announced() -> None:
    """The quick preset's 4,000 (not a --subset the user chose) ranked 4,000 of a user's 6,000 texts,
    and only the start line's N said so."""
    import warnings
    from types import SimpleNamespace

    from harness.presets import announce_preset_cut

    big = SimpleNamespace(name="hf:/data/topics,tokenizer=/tok", full_train_size=6000)
    with pytest.warns(UserWarning, match=r"the quick preset trains on the first 4,000 of the 6,000 training samples "
                                         r"of hf:/data/topics.* pass --subset 6000"):
        assert announce_preset_cut(big, "quick", 4000) is big  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        announce_preset_cut(SimpleNamespace(name="imagefolder:/x", full_train_size=4000), "quick", 4000)  # all kept
        announce_preset_cut(big, "quick", 500)  # the user's own --subset
        announce_preset_cut(big, "quick", None)
        announce_preset_cut(SimpleNamespace(name="digits", full_train_size=1437), "quick", None)
