"""Which files of an image folder are samples: images by extension (hidden files and types not read are
counted for a warning), and which folder links are followed so that no image counts twice and no walk
is endless. Its own job, kept apart from `harness.datasets.imagefolder` (labels, order, fingerprint
and decoding), which lists each class folder through `_image_files`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from harness.errors import HarnessError

_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Images by name that torchvision's ImageFolder (whose extensions `_IMG_EXTENSIONS` are) skips too:
#: skipped with a warning, so that a folder of mixed .jpg and .gif does not lose the GIFs unnoticed.
_SKIPPED_IMAGES = (".gif", ".jfif", ".jpe", ".pbm", ".pnm", ".avif", ".heic", ".heif", ".jp2", ".tga", ".dib")
#: The folder a zip made on macOS unpacks beside its files: `._x.jpg` metadata, never samples. Not hidden,
#: so it was a class of no images (refused) and its files were counted as hidden images to rename.
_MACOS_ZIP = "__MACOSX"


def _image_files(top: Path, tree: Path, skipped: list[str], hidden: list[str]) -> list[tuple[Path, str]]:
    """Image files under `top` (not hidden, by extension) with their resolved paths, following
    only safe folder links; hidden subfolders (`.ipynb_checkpoints`, `.thumbnails`) are not entered,
    as hidden files are not listed: their images are copies, not samples. Files named like an image
    of a type not read are added to `skipped`, hidden ones to `hidden` (for the warning: a `.x.png`
    was dropped without a word), but for macOS's `._x.jpg` beside `x.jpg`, metadata of that image.

    A subfolder is skipped, with a warning, when it is a link that resolves inside `tree` or to
    an ancestor of the folder holding it, or when it resolves to a folder already listed:
    following it would count images twice or never end. `top` itself is always listed (a class
    folder linked to another class folder is caught file by file, as images reached twice).
    An image-named entry that is not a readable file (a link to a missing file) is an error.
    """
    files: list[tuple[Path, str]] = []
    listed: set[str] = set()
    stack: list[tuple[Path, str | None]] = [(top, None)]  # (folder, resolved parent; None for top)
    while stack:
        folder, parent = stack.pop()
        here = os.path.realpath(folder)
        reason = _skip_reason(folder, here, parent, tree, listed) if parent is not None else None
        if reason:
            warnings.warn(
                f"not following folder link {folder} -> {here}: it {reason}, so its images would count "
                f"twice; remove the link to silence this",
                stacklevel=6,  # the caller of load_dataset
            )
            continue
        listed.add(here)
        try:
            listing = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise HarnessError(f"cannot list folder {folder}: {exc}; check that it is readable") from exc
        subfolders = []
        names = {entry.name for entry in listing}
        for entry in listing:
            path = Path(entry.path)
            if entry.name.startswith("."):
                if _hidden_image(entry, names):
                    hidden.append(str(path))
                continue
            if entry.name == _MACOS_ZIP:
                continue
            if entry.is_dir():  # follows links; which ones to enter is decided when popped
                subfolders.append((path, here))
            elif entry.name.lower().endswith(_SKIPPED_IMAGES):
                skipped.append(str(path))
            elif entry.name.lower().endswith(_IMG_EXTENSIONS):
                if not entry.is_file():
                    raise HarnessError(
                        f"image {path} is not a readable file (a link to a missing file?); remove it or "
                        f"fix its target"
                    )
                # one realpath per folder, not per file: only a linked file needs its own
                files.append((path, os.path.realpath(path) if entry.is_symlink() else os.path.join(here, entry.name)))
        stack.extend(reversed(subfolders))
    return files


def _hidden_image(entry: os.DirEntry, names: set[str]) -> bool:
    """A hidden file named like an image that may be one: not macOS's `._x.jpg` beside `x.jpg`."""
    if not entry.name.lower().endswith(_IMG_EXTENSIONS) or entry.is_dir():
        return False
    return not (entry.name.startswith("._") and entry.name[2:] in names)


def _skip_reason(folder: Path, here: str, parent: str, tree: Path, listed: set[str]) -> str | None:
    """Why subfolder `folder` (resolved: `here`, inside resolved `parent`) must not be listed."""
    link = folder.is_symlink()
    if link and _inside(parent, here):
        return "points to a folder that contains it (a loop)"
    if link and _inside(here, str(tree)):
        return "points back into the dataset folder"
    if here in listed:
        return "resolves to a folder already listed"
    return None


def _inside(path: str, folder: str) -> bool:
    """`path` is `folder` or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
