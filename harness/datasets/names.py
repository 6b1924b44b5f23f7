"""What to say when `--dataset` names a file or folder without its kind: a newcomer types the path
(`mine.npz`, `./photos`, `mine.csv`), and "unknown dataset" alone leaves the fix to guesswork."""

from __future__ import annotations

from pathlib import Path


def path_hint(name: str) -> str:
    """The kind that reads `name` (suffixed to the unknown-dataset error), or '' if none fits."""
    try:
        path = Path(name).expanduser()
        is_dir = path.is_dir()
    except (RuntimeError, OSError, ValueError):  # ~nosuchuser, a name too long: no hint rather than a traceback
        return ""
    if path.suffix.lower() == ".csv":
        return ("; a CSV table is converted to an .npz file first (a few lines of pandas: 'Arrays: npz:PATH' in "
                "docs/datasets.md), then --dataset npz:FILE.npz")
    if path.suffix.lower() == ".npz":
        return f"; did you mean --dataset npz:{name}?"
    if is_dir:
        return (f"; did you mean --dataset imagefolder:{name} (a folder per class) or hf:{name} (a Hugging Face "
                "dataset saved with save_to_disk)?")
    if "/" in name:
        return "; a path needs its kind: imagefolder:PATH, npz:PATH or hf:PATH"
    return ""
