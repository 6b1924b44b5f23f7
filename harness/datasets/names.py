"""What to say when `--dataset` names a file or folder without its kind: a newcomer types the path
(`mine.npz`, `./photos`, `mine.csv`), and "unknown dataset" alone leaves the fix to guesswork."""

from __future__ import annotations

from pathlib import Path

#: File names of packed downloads, which a user passes as they came (`photos.zip`).
_ARCHIVES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def path_hint(name: str) -> str:
    """The kind that reads `name` (suffixed to the unknown-dataset error), or '' if none fits. The
    suffix is read from the name as typed: `~nosuchuser/x.npz` or a name too long for the file system
    still ends in .npz (only the folder check needs the path expanded). A name with a colon gets a
    hint only when it is an existing path (`./a:b.npz`, `photos:2024`): the kind ends at the first
    colon, so `npz:./a:b.npz` reads it."""
    if ":" in name and not _exists(name):  # `kind:path` with an unknown kind (NPZ:x.npz, hf-hub:x): not a path
        return ""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return ("; a CSV table is converted to an .npz file first (a few lines of pandas: 'Arrays: npz:PATH' in "
                "docs/datasets.md), then --dataset npz:FILE.npz")
    if suffix == ".npz":
        return f"; did you mean --dataset {_shown('npz:' + name)}?"
    try:
        path = Path(name).expanduser()
        is_dir = path.is_dir()
        saved = is_dir and saved_by_save_to_disk(path)
    except (RuntimeError, OSError, ValueError):  # ~nosuchuser, a name too long: no hint rather than a traceback
        return ""
    if saved:  # the files `hf:` reads (`harness.datasets.hf`): not a folder per class
        return f"; did you mean --dataset {_shown('hf:' + name)} (a Hugging Face dataset saved with save_to_disk)?"
    if is_dir:
        return (f"; did you mean --dataset {_shown('imagefolder:' + name)} (a folder per class) or "
                f"{_shown('hf:' + name)} (a Hugging Face dataset saved with save_to_disk)?")
    if name.lower().endswith(_ARCHIVES):  # a download as it came (Kaggle's .zip): no kind reads it packed
        return ("; an archive is unpacked first (unzip, tar -xf), then --dataset imagefolder:FOLDER for the folder "
                "of class subfolders it holds")
    if suffix == ".npy":  # one array: the labels are missing
        return ("; a single .npy array is not a dataset: save the samples and their labels together, "
                "numpy.savez('mine.npz', x=x, y=y), then --dataset npz:mine.npz")
    if "/" in name:
        return "; a path needs its kind: imagefolder:PATH, npz:PATH or hf:PATH"
    return ""


def saved_by_save_to_disk(path: Path) -> bool:
    """The files `hf:` reads: a DatasetDict's dataset_dict.json, or a Dataset's state.json with its
    dataset_info.json (the hint and the loader share this rule, so a hinted folder is one hf: reads)."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                      and (path / "dataset_info.json").is_file())


def _shown(value: str) -> str:
    """`value` as typed, or quoted with escapes when it holds a line break or another unprintable
    character: the error stays one line."""
    return value if value.isprintable() else repr(value)


def _exists(name: str) -> bool:
    try:
        return Path(name).expanduser().exists()
    except (RuntimeError, OSError, ValueError):
        return False
