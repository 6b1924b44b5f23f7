"""Rewrite a Ray wheel without what a local `ray.init` never imports, so it fits a device call.

The device machine cannot download and a call carries at most 64 MiB beside the repository; Ray's
cp312 wheel is 79 MB, 32 MB of it Java jars. Dropped: the jars, rllib, serve, tune, train, data,
llm and the dashboard's web build (and their RECORD lines, so pip installs the result cleanly).

    python benchmarks/strip_ray_wheel.py ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl .whl/
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

DROP = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/tune/", "ray/train/", "ray/llm/", "ray/data/",
        "ray/dashboard/client/build/")


def strip(src: Path, dest_dir: Path) -> Path:
    """Writes the stripped wheel under dest_dir with the source's file name (pip checks the name)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    if dest.resolve() == src.resolve():
        raise SystemExit(f"{dest} is the source wheel; pick another folder")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if info.filename.startswith(DROP):
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"\n".join(line for line in data.split(b"\n") if not line.decode().startswith(DROP))
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("dest_dir", type=Path)
    args = parser.parse_args()
    dest = strip(args.wheel, args.dest_dir)
    print(f"{dest}: {dest.stat().st_size / 1e6:.1f} MB (from {args.wheel.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
