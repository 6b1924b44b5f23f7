"""Pack an ImageFolder tree into two files and back, so a dataset travels to the device machine.

The device machine receives only the working tree (64 MiB in all) and cannot download. CIFAR-10's
50,000 training JPEGs are 46 MB of bytes but, as a tar, ~150 MB (a 512-byte header and padding per
file); packed as one blob of concatenated file bytes plus an index they stay 46 MB, so the full
training set fits beside the repository. Pixels are untouched: the JPEG bytes are copied, not
decoded.

    python benchmarks/pack_imagefolder.py pack ../shared/data/cifar10 .gpu_pack --test-per-class 200
    python benchmarks/pack_imagefolder.py unpack .gpu_pack .gpu_data/cifar10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BLOB, INDEX = "images.bin", "index.npz"


def pack(src: Path, dest: Path, splits: list[str], test_per_class: int | None = None,
         train_per_class: int | None = None) -> int:
    """Writes dest/images.bin and dest/index.npz; returns the number of files packed. The test split
    can be cut to its first `test_per_class` files per class (it only yields held-out accuracy), the
    training split to `train_per_class` (a small grid that must travel beside other files)."""
    files = []
    for split in splits:
        keep = test_per_class if split == "test" else train_per_class if split == "train" else None
        for class_dir in sorted(d for d in (src / split).iterdir() if d.is_dir()):
            members = sorted(p for p in class_dir.iterdir() if p.is_file())
            files += members[:keep] if keep else members
    if not files:
        raise SystemExit(f"no files under {src} in splits {splits}")
    dest.mkdir(parents=True, exist_ok=True)
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    with open(dest / BLOB, "wb") as blob:
        for i, path in enumerate(files):
            offsets[i + 1] = offsets[i] + blob.write(path.read_bytes())
    names = np.array([str(p.relative_to(src)) for p in files])
    np.savez_compressed(dest / INDEX, names=names, offsets=offsets)
    return len(files)


def unpack(src: Path, dest: Path) -> int:
    """Recreates the tree under dest; returns the number of files written."""
    index = np.load(src / INDEX)
    names, offsets = index["names"], index["offsets"]
    data = (src / BLOB).read_bytes()
    if len(data) != offsets[-1]:
        raise SystemExit(f"{src / BLOB} has {len(data)} bytes, the index expects {offsets[-1]}: repack it")
    for name, start, end in zip(names, offsets[:-1], offsets[1:], strict=True):
        path = dest / str(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[start:end])
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--splits", nargs="+", default=["train", "test"])
    p.add_argument("--test-per-class", type=int, default=None)
    p.add_argument("--train-per-class", type=int, default=None)
    u = sub.add_parser("unpack")
    u.add_argument("src", type=Path)
    u.add_argument("dest", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        n = pack(args.src, args.dest, args.splits, args.test_per_class, args.train_per_class)
    else:
        n = unpack(args.src, args.dest)
    print(f"{args.command}: {n} files")


if __name__ == "__main__":
    main()
