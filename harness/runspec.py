"""Run specs: frozen, hashable descriptions of one training run.

Two proxies that need the same run produce equal specs, so the planner trains it once; the spec's
hash is the run's address in the store. Recorders are *not* part of the spec: they are what a
run writes down, not how it trains.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from harness.corruption import split_label_spec
from harness.recipe import (
    AUGMENT_VERSION,
    LATER_RECIPE_DEFAULTS,
    ONECYCLE_VERSION,
    Recipe,
    onecycle_changed,
    without_defaults,
)

STORE_FORMAT = 1  # bump when stored arrays change meaning; old entries then stop matching
#: Which test samples a `--subset` run is scored on (its stored test_acc). Version 2: max(1000, subset)
#: taken round robin over the classes (`harness.datasets.base._test_keep`); version 1 took a prefix,
#: which in a split stored class by class (the offline CIFAR-10 copy) was all airplanes.
TEST_KEEP_VERSION = 2
#: How a tie between the label's logit and another's counts as correct (`harness.predictions`). Version 2:
#: never; version 1 (argmax == label) counted it for the lower class index only. Only bf16 logits tie in
#: practice, so only bf16 runs carry it: float32 runs keep their addresses (bitwise the same arrays).
TIE_RULE_VERSION = 2

#: Recipe fields added after STORE_FORMAT 1, with their defaults. At its default such a field is
#: left out of the hashed spec, so every run stored before the field existed keeps its address;
#: any other value is hashed, so e.g. a bf16 run never reuses an fp32 one.
_ADDED_RECIPE_DEFAULTS: dict[str, object] = {"precision": "fp32", "channels_last": False, **LATER_RECIPE_DEFAULTS}


@dataclass(frozen=True)
class Corruption:
    """What was done to the training labels/images before training (ground truth for the tasks)."""

    kind: str = "none"  # "none" | "noise" | "duplicates" | "label_file"
    rate: float = 0.0
    pairs: int = 0
    seed: int = 0
    label_file: str = ""  # "path.npy" or "path.npz:key"
    label_file_sha: str = ""  # content hash, so an edited file is a different run

    def label(self) -> str:
        if self.kind == "noise":
            return f"noise={self.rate:g}"
        if self.kind == "duplicates":
            return f"duplicates={self.pairs}"
        if self.kind == "label_file":
            return f"labels={_file_label(self.label_file)}"
        return "clean"


#: Longest label-file spec kept whole in a label: the label names output files
#: (scores/<label>_seed<k>.csv), and a file name may not exceed 255 bytes.
MAX_LABEL_FILE_BYTES = 120


def label_file_key(spec: str) -> str:
    """The part of a label-file spec ("PATH.npy", "PATH.npz", "PATH.npz:KEY") that is not where the
    file lies: ":KEY" or "". A run's address holds the file's content hash instead of its path."""
    key = split_label_spec(spec)[1]
    return f":{key}" if key else ""


def _file_label(spec: str) -> str:
    """The label file as given, or, when that is too long for a file name, a digest of it and
    the end of its name (the digest keeps two long paths with one file name apart)."""
    if len(spec.encode()) <= MAX_LABEL_FILE_BYTES:
        return spec
    tail = spec.replace("\\", "/").rsplit("/", 1)[-1][-40:]
    return f"{hashlib.sha256(spec.encode()).hexdigest()[:12]}_{tail}"


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"
    subset: int | None = None
    corruption: Corruption = field(default_factory=Corruption)
    #: content hash of a user-supplied dataset (npz file, image folder listing): an edited file is
    #: another dataset, so its runs get other store addresses; empty for built-in datasets
    dataset_sha: str = ""


@dataclass(frozen=True)
class TrainSubset:
    """Which training samples a run (or a run phase) trains on.

    kind: "all"; "fold" (all folds but `index` of `count` stratified folds); "half" (stratified half
    `index` of 2); "random" (first round(fraction*N) of a seeded permutation, model `index`).
    """

    kind: str = "all"
    index: int = 0
    count: int = 1
    seed: int = 0
    fraction: float = 1.0

    def label(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "random":
            return f"random{self.fraction:g}#{self.index}@{self.seed}"
        return f"{self.kind}{self.index}/{self.count}@{self.seed}"


@dataclass(frozen=True)
class RunSpec:
    data: DataSpec
    model: str
    recipe: Recipe
    seed: int = 0
    train_on: TrainSubset = field(default_factory=TrainSubset)
    then_on: TrainSubset | None = None  # a second phase with a fresh optimizer (SSFT)
    #: the code of a model registered outside memprox (`model_registry.model_fingerprint`): an edited
    #: or re-registered model under the same name is another model; empty for memprox's own
    model_sha: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        spec = self.to_dict()
        spec["recipe"] = without_defaults(spec["recipe"], _ADDED_RECIPE_DEFAULTS)
        if self.recipe.augment:  # runs stored before AUGMENT_VERSION 2 padded crops with grey: not reused
            spec["recipe"]["augment_version"] = AUGMENT_VERSION
        if self.recipe.schedule == "onecycle" and onecycle_changed(self.recipe.epochs):  # peaked between epochs
            spec["recipe"]["onecycle_version"] = ONECYCLE_VERSION  # before version 2: not reused
        if self.data.subset is not None:  # runs stored before TEST_KEEP_VERSION 2 measured test_acc on
            spec["data"]["test_keep_version"] = TEST_KEEP_VERSION  # a prefix of the test split: not reused
        if self.recipe.precision != "fp32":  # bf16 runs stored before TIE_RULE_VERSION 2 counted a tie with
            spec["recipe"]["tie_rule_version"] = TIE_RULE_VERSION  # the label as correct for class 0: not reused
        if not spec["model_sha"]:  # memprox's models keep their addresses
            del spec["model_sha"]
        if not spec["data"].get("dataset_sha"):  # built-in datasets keep their pre-fingerprint addresses
            spec["data"].pop("dataset_sha", None)
        else:  # content-addressed: `kind:PATH` says where the data lie, the fingerprint what they are
            spec["data"]["dataset"] = spec["data"]["dataset"].partition(":")[0]  # (a copy finds its runs)
        if spec["data"]["corruption"].get("label_file_sha"):  # likewise a label file: its key stays
            spec["data"]["corruption"]["label_file"] = label_file_key(spec["data"]["corruption"]["label_file"])
        payload = json.dumps({"format": STORE_FORMAT, "spec": spec}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def label(self) -> str:
        parts = [self.data.dataset, self.data.corruption.label(), self.model, f"seed{self.seed}"]
        if self.train_on.kind != "all":
            parts.append(f"on={self.train_on.label()}")
        if self.then_on is not None:
            parts.append(f"then={self.then_on.label()}")
        return " ".join(parts)

    def with_subset(self, train_on: TrainSubset, then_on: TrainSubset | None = None) -> RunSpec:
        return replace(self, train_on=train_on, then_on=then_on)
