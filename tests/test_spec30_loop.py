"""Every base-run proxy against a training loop written here from docs/methods.md (spec audit 30).

The proxies' scoring rules have hand-made tests of their own (test_proxies_basic, test_learning_time,
test_audit_numbers20*), which feed them records. This file checks the records themselves: a real
`train_run` against a loop written here, with the run's seed, batch order and augmentation draws, so
the two see the same batches. The loop records by the spec's words alone:

- training pass: the forward that makes the gradient step, train mode, augmented input, the labels
  trained on (noisy), before that step;
- eval pass / input gradients / curvature: at the epoch checkpoint t (after epoch t's updates),
  eval mode, clean input, each sample's gradient on its own (a batch of one).

The model has batch norm, so train and eval mode give other logits; the data has injected label
noise, so the noisy and clean labels differ; the first epochs are augmented, the last not (the
recipe's `augment_epochs`): a recorder that used the wrong mode, labels, inputs or checkpoint fails
here (each difference is asserted to be large, so the checks can fail).
"""

from __future__ import annotations

import math
from copy import deepcopy

import numpy as np
import pytest
import torch
from torch import nn

from harness.datasets import Dataset, load_dataset
from harness.models import build_model
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe, random_crop_flip
from harness.recorders import RecorderRequest, Records
from harness.recorders.curvature import curvature_seed
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.training import augment_generator, batch_order, train_run
from proxies import ScoreContext, make_proxy

CPU = torch.device("cpu")
N, E, BS, SEED, AUG_EPOCHS = 96, 4, 48, 0, 3
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4
CURV_N, CURV_H = 2, 1e-2
RECIPE = Recipe(optimizer="sgd", lr=LR, momentum=MOMENTUM, weight_decay=WD, batch_size=BS, epochs=E,
                schedule="cosine", milestones=(), augment=True, crop_padding=2, augment_epochs=AUG_EPOCHS)
CURV = RecorderRequest.of("curvature", n=CURV_N, h=CURV_H, every=1)
REQUESTS = [RecorderRequest.of(name) for name in ("train_loss", "train_correct", "train_margin", "train_prob",
                                                  "input_grads")]
REQUESTS += [RecorderRequest.of("eval_pass", epochs="all"), RecorderRequest.of("eval_pass", epochs="last"), CURV]


def digits16(n: int) -> Dataset:
    """Digits upsampled to 16x16 (each pixel 2x2): big enough for the recipe's crop and flip."""
    d = load_dataset("digits", subset=n)
    up = lambda x: x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).contiguous()  # noqa: E731
    return Dataset(name="digits16", x_train=up(d.x_train), y_train=d.y_train, x_test=up(d.x_test[:20]),
                   y_test=d.y_test[:20], classes=d.classes, full_train_size=n)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    prepared = prepare(DataSpec("digits", N, Corruption("noise", 0.1, seed=0)), digits16(N), CPU)
    assert (prepared.labels != prepared.y_clean).sum() >= 5  # noisy labels differ from the clean ones
    return prepared


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _sample_grad(model: nn.Module, x: torch.Tensor, y: int) -> np.ndarray:
    """∇ₓ of one sample's cross-entropy, the sample alone in its batch (the model in eval mode)."""
    x = x[None].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x * 1.0), torch.tensor([y]))
    (g,) = torch.autograd.grad(loss, x)
    return g[0].flatten().double().numpy()


def hand_loop(data: PreparedData) -> dict[str, np.ndarray]:
    """The records of methods.md §1 from a loop written here; (E, N) float64 each."""
    y = data.y
    labels = data.labels
    rows = {k: np.full((E, N), np.nan) for k in ("loss", "correct", "margin", "p_label", "el2n", "eval_loss",
                                                 "eval_p_label", "eval_p_max", "eval_correct", "l1", "l2", "sq",
                                                 "curvature", "clean_train_loss", "eval_mode_loss", "clean_label_loss",
                                                 "eval_loss_before")}
    torch.manual_seed(SEED)
    model = build_model("small_cnn", tuple(data.x.shape[1:]), data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    clean = data.normalize(data.x)
    for e in range(E):
        for group in opt.param_groups:  # cosine annealing, stepped once per epoch
            group["lr"] = LR * (1 + math.cos(math.pi * e / E)) / 2
        model.eval()
        with torch.no_grad():  # the model *before* epoch e's updates: what an off-by-one would record
            before = model(clean).double().numpy()
        rows["eval_loss_before"][e] = -np.log(_softmax(before)[np.arange(N), labels])
        order = batch_order(SEED, e, torch.arange(N))  # the run's batch order and crop/flip draws
        gen = augment_generator(SEED, e, CPU) if e < AUG_EPOCHS else None
        model.train()
        for start in range(0, N, BS):
            idx = order[start:start + BS]
            raw = data.x[idx] if gen is None else random_crop_flip(data.x[idx], RECIPE.crop_padding, gen)
            with torch.no_grad():  # what a record of the wrong pass would hold, on copies (a train-mode
                # forward moves batch norm's running statistics): clean inputs in train mode, eval mode
                plain = deepcopy(model)(data.normalize(data.x[idx])).double()
                in_eval = deepcopy(model).eval()(data.normalize(raw)).double()
            for key, alt in (("clean_train_loss", plain), ("eval_mode_loss", in_eval)):
                rows[key][e, idx.numpy()] = nn.functional.cross_entropy(alt, y[idx], reduction="none").numpy()
            logits = model(data.normalize(raw))
            loss = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            z = logits.detach().double().numpy()
            i, lab = idx.numpy(), labels[idx.numpy()]
            p = _softmax(z)
            given = z[np.arange(len(i)), lab]
            others = z.copy()
            others[np.arange(len(i)), lab] = -np.inf
            rows["loss"][e, i] = -np.log(p[np.arange(len(i)), lab])
            rows["clean_label_loss"][e, i] = -np.log(p[np.arange(len(i)), data.y_clean[i]])
            rows["correct"][e, i] = given > others.max(1)
            rows["margin"][e, i] = given - others.max(1)
            rows["p_label"][e, i] = p[np.arange(len(i)), lab]
            rows["el2n"][e, i] = np.linalg.norm(p - np.eye(data.num_classes)[lab], axis=1)
        model.eval()  # the checkpoint after epoch e
        with torch.no_grad():
            z = model(clean).double().numpy()
        p = _softmax(z)
        others = z.copy()
        others[np.arange(N), labels] = -np.inf
        rows["eval_loss"][e] = -np.log(p[np.arange(N), labels])
        rows["eval_p_label"][e] = p[np.arange(N), labels]
        rows["eval_p_max"][e] = p.max(1)
        rows["eval_correct"][e] = z[np.arange(N), labels] > others.max(1)
        grads = np.stack([_sample_grad(model, clean[i], int(labels[i])) for i in range(N)])
        rows["l1"][e] = np.abs(grads).sum(1)
        rows["sq"][e] = (grads**2).sum(1)
        rows["l2"][e] = np.sqrt(rows["sq"][e])
        # curvature: n Rademacher draws v of the input's shape, from the recorder's per-checkpoint seed
        # (one eval batch holds all N samples here); the gradients are taken sample by sample
        draws = torch.Generator().manual_seed(curvature_seed(SEED, e))
        diffs = []
        for _ in range(CURV_N):
            v = torch.randint(0, 2, tuple(clean.shape), generator=draws).float() * 2 - 1
            moved = np.stack([_sample_grad(model, clean[i] + CURV_H * v[i], int(labels[i])) for i in range(N)])
            diffs.append(np.linalg.norm(moved - grads, axis=1))
        rows["curvature"][e] = np.mean(diffs, axis=0)
    return rows


@pytest.fixture(scope="module")
def both(data: PreparedData) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], RunSpec]:
    spec = RunSpec(data=data.spec, model="small_cnn", recipe=RECIPE, seed=SEED)
    torch.set_num_threads(1)
    out = train_run(spec, data, REQUESTS, progress=False)
    return hand_loop(data), out.arrays, spec


def _far(a: np.ndarray, b: np.ndarray, rel: float = 1e-2) -> bool:
    """`a` and `b` differ by far more than the tolerance the records are held to."""
    return float(np.max(np.abs(a - b) / (np.abs(b) + 1e-3))) > rel


def test_training_pass_records_are_train_mode_augmented_noisy_label_values(both, data) -> None:
    hand, got, _ = both
    np.testing.assert_allclose(got["train_loss"]["loss"], hand["loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got["train_correct"]["correct"], hand["correct"])
    np.testing.assert_allclose(got["train_margin"]["margin"], hand["margin"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["train_prob"]["p_label"], hand["p_label"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["train_prob"]["el2n"], hand["el2n"], rtol=1e-4, atol=1e-6)
    # what the wrong record would have been is far away: eval mode, clean inputs, the clean labels
    assert _far(hand["loss"], hand["eval_mode_loss"]) and _far(hand["loss"], hand["eval_loss"])
    assert _far(hand["loss"][:AUG_EPOCHS], hand["clean_train_loss"][:AUG_EPOCHS])
    # the epochs after `augment_epochs` train on clean inputs, and the record follows them
    np.testing.assert_allclose(hand["loss"][AUG_EPOCHS:], hand["clean_train_loss"][AUG_EPOCHS:], rtol=1e-6)
    flipped = data.labels != data.y_clean
    assert _far(hand["loss"][:, flipped], hand["clean_label_loss"][:, flipped])


def test_checkpoint_records_are_eval_mode_after_the_epochs_updates(both) -> None:
    hand, got, _ = both
    every, last = got["eval_pass[epochs=all]"], got["eval_pass[epochs=last]"]
    np.testing.assert_allclose(every["loss"], hand["eval_loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(every["p_label"], hand["eval_p_label"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(every["p_max"], hand["eval_p_max"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(every["correct"], hand["eval_correct"])
    np.testing.assert_allclose(last["loss"][-1], hand["eval_loss"][-1], rtol=1e-4, atol=1e-6)
    for key in ("l1", "l2", "sq"):
        np.testing.assert_allclose(got["input_grads"][key], hand[key], rtol=1e-3, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(got[CURV.key]["curvature"], hand["curvature"], rtol=5e-3, atol=1e-6)
    assert _far(hand["eval_loss"], hand["eval_loss_before"])  # the checkpoint before the epoch's updates


def _by_the_spec(hand: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every base-run proxy of methods.md §1 from the hand loop's records, a sample at a time."""
    out: dict[str, list[float]] = {}
    running = np.cumsum(hand["sq"], axis=0) / np.arange(1, E + 1)[:, None]  # m_T, T = 1..E
    tau = running.mean()
    window = max(1, math.floor(0.1 * E + 0.5))
    for i in range(N):
        c = hand["correct"][:, i]
        first = next((t for t in range(E) if c[t]), None)
        below = next((t + 1 for t in range(E) if running[t, i] <= tau), None)
        row = {
            "csl": hand["loss"][:, i].sum(),
            "csl_eval": hand["eval_loss"][:, i].sum(),
            "final_loss": hand["eval_loss"][-1, i],
            "in_confidence": 1 - hand["eval_p_label"][-1, i],
            "in_confidence(variant=max)": 1 - hand["eval_p_max"][-1, i],
            "forgetting": E if not c.any() else sum(bool(c[t - 1] and not c[t]) for t in range(1, E)),
            "threshold_lt": 1.0 if first is None else first / E,
            "learning_time": 1.0 if below is None else below / E,
            "learning_time(rule=count)": float(np.mean(running[:, i] > tau)),
            "loss_sensitivity": hand["l1"][:, i].mean(),
            "loss_sensitivity(norm=2)": hand["l2"][:, i].mean(),
            "csg": hand["l2"][:, i].sum(),
            "curvature(h=0.01,n=2)": hand["curvature"][:, i].mean(),
            "aum": -hand["margin"][:, i].mean(),
            "el2n": hand["el2n"][:window, i].mean(),
            "variability": float(np.std(hand["p_label"][:, i])),
        }
        for name, value in row.items():
            out.setdefault(name, []).append(float(value))
    return {name: np.array(v) for name, v in out.items()}


def test_every_base_run_proxy_scores_what_the_spec_computes(both, data) -> None:
    hand, got, spec = both
    ctx = ScoreContext(base=spec, labels=data.labels, num_classes=data.num_classes, runs={spec: Records(got)})
    want = _by_the_spec(hand)
    for label, value in want.items():
        name, _, args = label.partition("(")
        params = dict(kv.split("=") for kv in args.rstrip(")").split(",")) if args else {}
        typed = {k: (int(v) if v.isdigit() else float(v) if v[0].isdigit() else v) for k, v in params.items()}
        proxy = make_proxy(name, **typed)
        assert proxy.label == label
        # learning_time and the counts are exact functions of records that agree to ~1e-5: a
        # sample whose running mean sits within that of tau could flip; none does in this run
        np.testing.assert_allclose(proxy.score(ctx), value, rtol=5e-3, atol=1e-6, err_msg=label)
