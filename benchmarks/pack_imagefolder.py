"""Pack an ImageFolder tree into two files and back, so a dataset travels to the device machine.

The device machine receives only the working tree (64 MiB in all, the repository's tracked files
included) and cannot download. CIFAR-10's 50,000 training JPEGs are 47 MB of bytes but, as a tar,
~150 MB (a 512-byte header and padding per file). Packed as one zlib stream of the concatenated file
bytes plus an index they are 16 MB: each 32x32 JPEG is ~950 bytes, of which ~600 are headers and
tables that every file repeats, and zlib stores each repeat as a back-reference (the uncompressed
blob was 46 MiB, which beside the 41 MiB repository exceeded the 64 MiB a call carries). Pixels are
untouched: the JPEG bytes are copied, not decoded, and unpacking writes byte-identical files.

    python benchmarks/pack_imagefolder.py pack ../shared/data/cifar10 .gpu_pack --test-per-class 200
    python benchmarks/pack_imagefolder.py travel .gpu_pack       # MiB a device call would carry (<= 64)
    python benchmarks/pack_imagefolder.py unpack .gpu_pack .gpu_data/cifar10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

BLOB, INDEX = "images.zlib", "index.npz"
RAW_BLOB = "images.bin"  # an uncompressed blob, as packs before the zlib one were written; unpack reads it
#: What one device call may carry: the working tree (tracked and untracked, not ignored files) and
#: the carried paths together.
TRAVEL_LIMIT = 64 * 2**20


def pack(src: Path, dest: Path, splits: list[str], test_per_class: int | None = None,
         train_per_class: int | None = None) -> int:
    """Writes dest/images.zlib and dest/index.npz; returns the number of files packed. The test split
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
    (dest / RAW_BLOB).unlink(missing_ok=True)  # an older pack's blob would travel beside the new one
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    squeeze = zlib.compressobj(9)
    with open(dest / BLOB, "wb") as blob:
        for i, path in enumerate(files):
            data = path.read_bytes()
            offsets[i + 1] = offsets[i] + len(data)
            blob.write(squeeze.compress(data))
        blob.write(squeeze.flush())
    names = np.array([str(p.relative_to(src)) for p in files])
    np.savez_compressed(dest / INDEX, names=names, offsets=offsets)
    return len(files)


def unpack(src: Path, dest: Path) -> int:
    """Recreates the tree under dest; returns the number of files written."""
    index = np.load(src / INDEX)
    names, offsets = index["names"], index["offsets"]
    blob = src / BLOB
    try:
        data = zlib.decompress(blob.read_bytes()) if blob.exists() else (blob := src / RAW_BLOB).read_bytes()
    except zlib.error as e:
        raise SystemExit(f"{blob} is not a whole zlib stream ({e}): repack it") from e
    if len(data) != offsets[-1]:
        raise SystemExit(f"{blob} holds {len(data)} bytes, the index expects {offsets[-1]}: repack it")
    for name, start, end in zip(names, offsets[:-1], offsets[1:], strict=True):
        path = dest / str(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[start:end])
    return len(names)


def tree_files(repo: Path = Path(".")) -> dict[str, int]:
    """Bytes of each file a device call copies from `repo`: tracked or untracked-not-ignored, present."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return {f: (repo / f).stat().st_size for f in set(listed) if f and (repo / f).is_file()}


def largest_folders(files: dict[str, int], n: int = 5) -> list[tuple[str, int]]:
    """The n largest folders two levels down (results/NAME, tests): what to look at when a call is over."""
    sizes: dict[str, int] = {}
    for f, size in files.items():
        folder = "/".join(f.split("/")[:2][: max(1, f.count("/"))])
        sizes[folder] = sizes.get(folder, 0) + size
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:n]


def travel_bytes(carry: list[Path], repo: Path = Path(".")) -> tuple[int, int]:
    """(working tree, carried paths) in bytes, as a device call counts them: the files git lists as
    tracked or untracked-not-ignored under `repo`, and every file under each carried path."""
    tree = sum(tree_files(repo).values())
    carried = 0
    for path in carry:
        files = [path] if path.is_file() else [Path(d) / f for d, _, fs in os.walk(path) for f in fs]
        carried += sum(f.stat().st_size for f in files if f.is_file())
    return tree, carried


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
    t = sub.add_parser("travel", help="MiB one device call would carry from here; exit 1 over 64 MiB")
    t.add_argument("carry", type=Path, nargs="*", help="the call's carry paths (ignored by git)")
    args = parser.parse_args()
    if args.command == "travel":
        tree, carried = travel_bytes(args.carry)
        fits = tree + carried <= TRAVEL_LIMIT
        print(f"travel: working tree {tree / 2**20:.1f} MiB + carry {carried / 2**20:.1f} MiB = "
              f"{(tree + carried) / 2**20:.1f} MiB ({'within' if fits else 'OVER'} the 64 MiB a call carries)")
        if not fits:  # a refused call costs device time: say by how much, and where the bytes are
            big = ", ".join(f"{f} {b / 2**20:.1f}" for f, b in largest_folders(tree_files()))
            print(f"travel: {(tree + carried - TRAVEL_LIMIT) / 2**20:.1f} MiB too much; largest folders (MiB): {big}. "
                  "A call copies only files present: move some of them out of the checkout for the call "
                  "(benchmarks/README.md, 'How the dataset travels')")
        sys.exit(0 if fits else 1)
    if args.command == "pack":
        n = pack(args.src, args.dest, args.splits, args.test_per_class, args.train_per_class)
        size = sum(f.stat().st_size for f in args.dest.iterdir() if f.is_file())
        print(f"pack: {n} files, {size / 2**20:.1f} MiB in {args.dest}")
    else:
        print(f"unpack: {unpack(args.src, args.dest)} files")


if __name__ == "__main__":
    main()
