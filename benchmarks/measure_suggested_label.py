"""The suspects task's suggested label against the final prediction, over several seeds, on data with
known wrong labels (docs/tasks-and-metrics.md, "The suggested label").

    python benchmarks/measure_suggested_label.py                        # digits and CIFAR-10, seeds 0,1,2
    python benchmarks/measure_suggested_label.py --only digits --work /tmp/sl
    python benchmarks/measure_suggested_label.py --only cifar --cifar ../shared/data/cifar10

The data is built from --data-seed (default 0) alone, so anyone can build it again:

- digits: the bundled 1,797 digits with 10 % of the labels flipped as the mislabeled task flips them
  (`symmetric_noise(target, 10, 0.1, data_seed)`), written as `WORK/digits/flipped.npz`;
- cifar: the first --per-class (200) images of each class of the CIFAR-10 image folder's train/, by
  file name, of which --moved (100), drawn by a seeded RNG, are copied into another class's folder
  (drawn by the same RNG), and the first --test-per-class (100) of test/; written into
  `WORK/cifar/images`, with `WORK/cifar/moved.csv` naming each moved file, its true and its given class.

Each set then runs `python -m harness run --dataset ... --tasks suspects --proxies csl --preset quick
--seeds 0,1,2` on a store of its own under WORK (so every run trains), and this script counts, per seed
(`suspects_seed<s>.csv`) and for the combined `suspects.csv` (the mean over seeds):

- `suggested` / `predicted`: flipped or moved samples whose suggested label / final prediction is
  their true class (combined: the prediction of a majority of the seeds, which that file does not hold);
- `top`, `top_suggested`: flipped or moved samples among csl's top --top (100), and how many of those
  get their true class as `suggested`;
- the mean `p_suggested` of the flipped or moved samples and of the others;
- the two rules the suggestion was chosen over, from the same runs' store entries (per seed, the clean
  run's `train_class_prob` sums and final `probs_last`; combined, their mean over the seeds):
  `mean_argmax`, the highest mean training softmax with the given label allowed, naming the true class
  (`mean_argmax_given`: naming the wrong given label instead), and `final_other`, the final model's
  most probable class other than the given one, naming the true class. The entries' mean softmax must
  give the tables' `suggested` again, so a wrong entry stops the count instead of skewing it.

`--recount` counts again from a WORK folder a finished run of this script left (same options),
training nothing: the truth is built again from --data-seed in a temporary folder.

WORK (--work, default a new temporary folder) is printed and kept: it holds the data, the results
and the store. It must not exist yet or be empty, so nothing of anyone else's is written over.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Built:
    """A data set with known wrong labels: the `--dataset` argument and, per sample, the label given
    and the true one, indexed by `key` (the suspects CSV's `index` for npz, `file` for image folders)."""

    dataset: str
    key: str
    truth: pd.DataFrame  # columns given, true


def build_digits(dest: Path, data_seed: int, rate: float = 0.1) -> Built:
    """Digits with round(rate x N) labels flipped to another class, as the mislabeled task flips them."""
    from sklearn.datasets import load_digits

    from harness.corruption import symmetric_noise

    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)
    given, _ = symmetric_noise(digits.target, 10, rate, data_seed)
    dest.mkdir(parents=True, exist_ok=True)
    np.savez(dest / "flipped.npz", x=x, y=given)
    truth = pd.DataFrame({"given": given, "true": digits.target}, index=pd.Index(range(len(given)), name="index"))
    return Built(f"npz:{dest / 'flipped.npz'}", "index", truth)


def _first_images(folder: Path, n: int) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if len(images) < n:
        raise SystemExit(f"error: {folder} holds {len(images)} images, fewer than the {n} asked; pass a smaller count")
    return images[:n]


def build_image_folder(source: Path, dest: Path, data_seed: int, per_class: int, moved: int,
                       test_per_class: int = 0) -> Built:
    """The first `per_class` training images of each class of `source` (an image folder with train/),
    `moved` of them, drawn with `data_seed`, copied into another class folder drawn with it too."""
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise SystemExit(f"error: {source / 'train'} holds {len(classes)} class folders; it needs two or more")
    files = [(c, f) for c, name in enumerate(classes) for f in _first_images(source / "train" / name, per_class)]
    if not 0 <= moved <= len(files):
        raise SystemExit(f"error: cannot move {moved} of {len(files)} images; pass --moved between 0 and {len(files)}")
    rng = np.random.default_rng(data_seed)
    true = np.array([c for c, _ in files])
    given = true.copy()
    chosen = rng.choice(len(files), size=moved, replace=False)
    given[chosen] = (true[chosen] + rng.integers(1, len(classes), size=moved)) % len(classes)  # never its own
    keys = []
    for (_, src), label in zip(files, given):
        rel = f"train/{classes[label]}/{src.name}"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / rel)
        keys.append(rel)
    for name in classes if test_per_class and (source / "test").is_dir() else []:
        (dest / "test" / name).mkdir(parents=True, exist_ok=True)
        for src in _first_images(source / "test" / name, test_per_class):
            shutil.copyfile(src, dest / "test" / name / src.name)
    truth = pd.DataFrame({"given": given, "true": true}, index=pd.Index(keys, name="file"))
    return Built(f"imagefolder:{dest}", "file", truth)


def _aligned(table: pd.DataFrame, built: Built) -> pd.DataFrame:
    """The truth in the table's row order; stops when a row is unknown or its given label is not ours."""
    truth = built.truth.reindex(table[built.key].to_numpy())
    if truth["given"].isna().any():
        raise SystemExit(f"error: the suspects table names samples the built data lacks ({built.dataset})")
    if (truth["given"].to_numpy() != table["label"].to_numpy()).any():
        raise SystemExit(f"error: the suspects table's labels are not the built ones ({built.dataset})")
    return truth


def counts(table: pd.DataFrame, built: Built, predicted: np.ndarray, top: int) -> dict[str, float]:
    """The figures of one ranked table (most suspicious first); `predicted` in the table's row order."""
    truth = _aligned(table, built)
    true = truth["true"].to_numpy()
    bad = truth["given"].to_numpy() != true
    right = table["suggested"].to_numpy() == true
    head = np.arange(len(table)) < top
    p = table["p_suggested"].to_numpy(dtype=np.float64)
    return {"wrong": int(bad.sum()), "suggested": int((right & bad).sum()),
            "predicted": int(((predicted == true) & bad).sum()), "top": int((bad & head).sum()),
            "top_suggested": int((bad & head & right).sum()),
            "p_sug_wrong": float(p[bad].mean()), "p_sug_other": float(p[~bad].mean())}


def majority(tables: list[pd.DataFrame], key: str, order: pd.Series) -> np.ndarray:
    """Per sample of `order`, the class a majority of the seeds' final models predict (-1 when none)."""
    votes = np.stack([t.set_index(key)["predicted"].reindex(order.to_numpy()).to_numpy() for t in tables])
    out = np.full(votes.shape[1], -1)
    for c in np.unique(votes):
        out[(votes == c).sum(0) * 2 > len(tables)] = c
    return out


CLASS_PROB = "train_class_prob"  # harness.recorders.class_prob.NAME
EVAL_LAST = "eval_pass[epochs=last]"  # the suspects task's final-model record, with `probs_last`


def stored_probs(store: Path, dataset: str, seeds: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per seed, the clean run of `dataset` in `store`: its (N, C) mean training softmax and its final
    softmax `probs_last`, in the dataset's order. Each entry is checked as the store checks it; a seed
    without exactly one such entry stops the count."""
    from harness.recorders.class_prob import mean_probs
    from harness.store_entry_files import checked_bytes
    from harness.store_scan import scan

    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for entry in scan(store).entries:
        m = entry.manifest
        if entry.status != "complete" or m is None or CLASS_PROB not in m.recorders:
            continue
        spec, data = m.spec, m.spec["data"]
        if (data["dataset"] != dataset or data["corruption"]["kind"] != "none" or spec["seed"] not in seeds
                or spec["train_on"]["kind"] != "all" or spec["then_on"] is not None):
            continue
        if spec["seed"] in found:
            raise SystemExit(f"error: {store} holds two clean runs of {dataset} seed {spec['seed']}; "
                             "pass --work with a folder only this script wrote")

        def load(key: str, name: str, path: Path = entry.path, manifest=m) -> np.ndarray:
            fname = f"{key}.{name}.npy"
            return np.load(io.BytesIO(checked_bytes(path, fname, manifest.checksums[fname])), allow_pickle=False)

        found[spec["seed"]] = (mean_probs({a: load(CLASS_PROB, a) for a in ("prob_sum", "seen")}),
                               np.asarray(load(EVAL_LAST, "probs_last"), dtype=np.float64))
    if missing := sorted(set(seeds) - set(found)):
        raise SystemExit(f"error: {store} holds no complete clean run of {dataset} with {CLASS_PROB} for "
                         f"seed(s) {missing}; run this script again without --recount")
    return found


def best_other(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Per row, the class of the highest probability other than the given one (the first on a tie)."""
    others = probs.copy()
    others[np.arange(len(others)), given] = -np.inf
    return others.argmax(axis=1)


def other_rules(table: pd.DataFrame, built: Built, mean: np.ndarray, final: np.ndarray) -> dict[str, int]:
    """Of the flipped or moved samples of `table`, how many the rules the suggestion was chosen over
    name the true class: the highest `mean` softmax with the given label allowed (`mean_argmax`; how
    many it names the given label: `mean_argmax_given`) and the `final` softmax's best other class
    (`final_other`). `mean`, `final`: (N, C) in the dataset's order, matched by the table's `index`."""
    truth = _aligned(table, built)
    true, given = truth["true"].to_numpy(dtype=np.int64), truth["given"].to_numpy(dtype=np.int64)
    rows = table["index"].to_numpy()
    mean, final = mean[rows], final[rows]
    if np.isnan(mean).any() or np.isnan(final).any():
        raise SystemExit(f"error: a sample of {built.dataset} has no recorded softmax; its counts would be wrong")
    if (best_other(mean, given) != table["suggested"].to_numpy(dtype=np.int64)).any():
        raise SystemExit(f"error: the stored softmax of {built.dataset} does not give the table's `suggested`; "
                         "the store is not this table's")
    bad = given != true
    argmax = mean.argmax(axis=1)
    return {"mean_argmax": int(((argmax == true) & bad).sum()),
            "mean_argmax_given": int(((argmax == given) & bad).sum()),
            "final_other": int(((best_other(final, given) == true) & bad).sum())}


def measure(built: Built, out: Path, seeds: list[int], top: int, store: Path) -> pd.DataFrame:
    """One row per seed and one for the combined file (its other rules from the seeds' mean softmax)."""
    folder = out / "suspects"
    tables = {s: pd.read_csv(folder / f"suspects_seed{s}.csv") for s in seeds}
    probs = stored_probs(store, built.dataset, seeds)
    rows = {f"seed {s}": counts(t, built, t["predicted"].to_numpy(), top) | other_rules(t, built, *probs[s])
            for s, t in tables.items()}
    if len(seeds) > 1:
        combined = pd.read_csv(folder / "suspects.csv")
        mean, final = (np.mean([probs[s][i] for s in seeds], axis=0) for i in (0, 1))
        voted = majority(list(tables.values()), built.key, combined[built.key])
        rows["combined"] = counts(combined, built, voted, top) | other_rules(combined, built, mean, final)
    return pd.DataFrame.from_dict(rows, orient="index")


def run_harness(built: Built, out: Path, store: Path, seeds: list[int]) -> None:
    command = [sys.executable, "-m", "harness", "run", "--dataset", built.dataset, "--tasks", "suspects",
               "--proxies", "csl", "--preset", "quick", "--seeds", ",".join(map(str, seeds)),
               "--out", str(out), "--store", str(store), "--no-progress"]
    print("$", " ".join(command), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=REPO, env=env)
    if done.returncode:
        raise SystemExit(f"error: the harness run above exited {done.returncode}; its log is under {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="digits,cifar", help="digits, cifar or both (default: both)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (default: 0,1,2)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the flipped or moved labels (default: 0)")
    parser.add_argument("--cifar", type=Path, default=REPO.parent / "shared" / "data" / "cifar10",
                        help="CIFAR-10 image folder with train/ and test/ (default: ../shared/data/cifar10)")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--moved", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--top", type=int, default=100, help="csl's top k to count (default: 100)")
    parser.add_argument("--work", type=Path, default=None, help="new or empty folder (default: a new temporary one)")
    parser.add_argument("--recount", action="store_true",
                        help="count again from --work, left by a finished run with these options; trains nothing")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.only.split(",") if s.strip()]
    if not sets or set(sets) - {"digits", "cifar"}:
        parser.error(f"--only takes digits, cifar or both, got {args.only!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if "cifar" in sets and not (args.cifar / "train").is_dir():
        raise SystemExit(f"error: {args.cifar} has no train/ folder; pass --cifar with the CIFAR-10 image folder")
    if args.recount:
        if args.work is None or not (args.work / "store" / "runs").is_dir():
            raise SystemExit("error: --recount needs --work with the folder a finished run of this script left")
        for name in sets:
            with tempfile.TemporaryDirectory(prefix="memprox-recount-") as scratch:
                built = recounted(build(name, args, Path(scratch)), name, args.work)
            report(name, built, args.work, seeds, args.top)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="memprox-suggested-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"error: {work} is not empty; pass --work with a new or empty folder")
    print(f"work folder (kept): {work}", flush=True)
    for name in sets:
        built = build(name, args, work)
        if name == "cifar":
            wrong = built.truth[built.truth["given"] != built.truth["true"]]
            wrong.to_csv(work / "cifar" / "moved.csv")
        run_harness(built, work / name / "out", work / "store", seeds)
        report(name, built, work, seeds, args.top)


def build(name: str, args: argparse.Namespace, work: Path) -> Built:
    if name == "digits":
        return build_digits(work / "digits", args.data_seed)
    return build_image_folder(args.cifar, work / "cifar" / "images", args.data_seed, args.per_class, args.moved,
                              args.test_per_class)


def recounted(scratch: Built, name: str, work: Path) -> Built:
    """The truth built in a scratch folder, named as the data in `work` (the store's runs name it so)
    once that data is checked to be it: the digits' arrays equal, every image file there."""
    if name == "digits":
        used = work / "digits" / "flipped.npz"
        with np.load(scratch.dataset.removeprefix("npz:")) as new, np.load(used) as old:
            if not (np.array_equal(new["x"], old["x"]) and np.array_equal(new["y"], old["y"])):
                raise SystemExit(f"error: {used} is not the data --data-seed builds; pass the seed it was made with")
        return dataclasses.replace(scratch, dataset=f"npz:{used}")
    images = work / "cifar" / "images"
    if lost := [k for k in scratch.truth.index if not (images / k).is_file()]:
        raise SystemExit(f"error: {images} lacks {lost[0]} (and {len(lost) - 1} more) that these options build; "
                         "pass the options that run used")
    return dataclasses.replace(scratch, dataset=f"imagefolder:{images}")


def report(name: str, built: Built, work: Path, seeds: list[int], top: int) -> None:
    table = measure(built, work / name / "out", seeds, top, work / "store")
    print(f"\n{name}: {int(table['wrong'].iloc[0])} flipped or moved of {len(built.truth)}, csl's top {top}")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"), flush=True)

if __name__ == "__main__":
    main()
