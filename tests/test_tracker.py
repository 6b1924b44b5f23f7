"""SampleTracker: a user's own loop gives the harness's scores, and bad use fails clearly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError
from harness.models import build_model
from harness.prepared import PreparedData
from harness.recipe import Recipe
from harness.runspec import RunSpec
from harness.training import _seed_for, train_run
from proxies import ScoreContext, make_proxy

RECIPE = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=4,
                schedule="cosine", milestones=(), augment=False)
COMPARED = ("csl", "forgetting", "aum", "threshold_lt", "el2n", "variability", "csl_eval", "final_loss",
            "in_confidence")


def user_loop(data: PreparedData, tracker: SampleTracker | None, *, seed: int = 0, recipe: Recipe = RECIPE,
              eval_every_epoch: bool = True) -> nn.Module:
    """A plain PyTorch loop, written as a user would, with the harness run's model, init, batch order
    and seed: torch.manual_seed(seed) before building the model, epoch e's order from _seed_for."""
    torch.manual_seed(seed)
    model = build_model("mlp", tuple(data.x.shape[1:]), data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.epochs)
    n = data.n
    x, y = data.inputs(torch.arange(n)), data.y
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_for(seed, epoch, 0)))
        model.train()
        for start in range(0, n, recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()
            if tracker is not None:
                tracker.update(idx, losses=loss, logits=logits, labels=y[idx])
        sched.step()
        if tracker is not None:
            tracker.end_epoch()
            if eval_every_epoch or epoch == recipe.epochs - 1:
                tracker.eval_epoch(model, (x, y))
    return model


class _Run:
    def __init__(self, arrays):
        self._arrays = arrays

    def arrays(self, key):
        return self._arrays[key]


def harness_scores(data: PreparedData, spec: RunSpec) -> dict[str, np.ndarray]:
    """The harness's own run of `spec` (train_run + recorders), scored by the registered proxies."""
    proxies = [make_proxy(name) for name in COMPARED]
    requests = sorted({r for p in proxies for r in p.recorders}, key=lambda r: r.key)
    out = train_run(spec, data, requests, progress=False)
    ctx = ScoreContext(base=spec, labels=data.labels, num_classes=data.num_classes, runs={spec: _Run(out.arrays)})
    return {p.label: p.score(ctx) for p in proxies}


@pytest.fixture(scope="module")
def tracked(digits_noisy: PreparedData) -> SampleTracker:
    tracker = SampleTracker(digits_noisy.n)
    user_loop(digits_noisy, tracker)
    return tracker


def test_user_loop_matches_the_harness_run(digits_noisy: PreparedData, tracked: SampleTracker) -> None:
    spec = RunSpec(data=digits_noisy.spec, model="mlp", recipe=RECIPE, seed=0)
    expected = harness_scores(digits_noisy, spec)
    table = tracked.scores()
    assert set(COMPARED) <= set(table.columns)
    for name in COMPARED:
        np.testing.assert_allclose(table[name].to_numpy(), expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
    # the comparison is not vacuous: the scores vary across samples
    assert table["csl"].std() > 0.1 and table["forgetting"].max() >= 1
    assert table["index"].tolist() == list(range(digits_noisy.n))
    assert np.array_equal(table["label"].to_numpy(dtype=np.int64), digits_noisy.labels)


def test_suspects_find_the_noisy_labels(digits_noisy: PreparedData, tracked: SampleTracker) -> None:
    table = tracked.scores(["csl"])
    assert roc_auc_score(digits_noisy.positives, table["csl"]) >= 0.95
    top = tracked.suspects(k=50)
    assert list(top.columns) == ["index", "label", "predicted", "suggested", "suggested_name", "p_suggested",
                                 "score"]
    assert top["score"].is_monotonic_decreasing and len(top) == 50
    assert np.array_equal(top["score"].to_numpy(), np.sort(table["csl"].to_numpy())[::-1][:50])
    assert digits_noisy.positives[top["index"].to_numpy()].mean() >= 0.8
    # a flagged noisy sample is typically predicted as its clean class, not its given label
    idx = top["index"].to_numpy()
    noisy = digits_noisy.positives[idx]
    assert (top["predicted"].to_numpy()[noisy] == digits_noisy.y_clean[idx][noisy]).mean() >= 0.5
    assert np.array_equal(top["label"].to_numpy(dtype=np.int64), digits_noisy.labels[idx])


def test_plot_suspects_writes_a_png(digits_noisy: PreparedData, tracked: SampleTracker, tmp_path: Path) -> None:
    path = tracked.plot_suspects(digits_noisy.dataset.x_train, k=10, path=tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    floats = digits_noisy.dataset.x_train[:, 0].numpy() / 255.0  # (N, H, W) real-valued
    assert tracked.plot_suspects(floats, k=3, by="aum", path=tmp_path / "f.png").exists()
    with pytest.raises(HarnessError, match="all 1437 samples"):
        tracked.plot_suspects(floats[:5], path=tmp_path / "x.png")


def test_losses_only_and_running_sums_give_the_same_csl(digits_noisy: PreparedData, tracked: SampleTracker) -> None:
    n = digits_noisy.n
    x, y = digits_noisy.inputs(torch.arange(n)), digits_noisy.y
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    full, sums = SampleTracker(n), SampleTracker(n, running_sums=True)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        for idx in torch.randperm(n, generator=gen).split(100):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            full.update(idx, losses=loss)
            sums.update(idx.numpy(), losses=loss)
        full.end_epoch()
        sums.end_epoch()
    a, b = full.scores(), sums.scores()
    # only losses: csl is the one built-in proxy (a user's installed plugin may read losses too)
    assert list(a.columns) == list(b.columns) == ["index", "label", "csl", *_plugin_columns(a)]
    np.testing.assert_allclose(a["csl"], b["csl"], rtol=1e-6)
    assert a["label"].isna().all()  # never told the labels
    with pytest.raises(HarnessError, match="running_sums=True keeps only"):
        sums.scores(["aum"])
    with pytest.raises(HarnessError, match="pass logits= and labels="):
        full.scores(["aum"])


def test_half_precision_logits_are_cast(digits_noisy: PreparedData) -> None:
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8)
    ref, half = SampleTracker(8), SampleTracker(8)
    ref.update(torch.arange(8), logits=logits, labels=labels)
    half.update(torch.arange(8), logits=logits.to(torch.bfloat16), labels=labels)
    for t in (ref, half):
        t.end_epoch()
    a, b = ref.scores(["csl", "aum"]), half.scores(["csl", "aum"])
    assert b["csl"].dtype == np.float64
    np.testing.assert_allclose(a[["csl", "aum"]], b[["csl", "aum"]], rtol=0.05, atol=0.05)
    expected = nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    np.testing.assert_allclose(a["csl"], expected, rtol=1e-6)


def test_unseen_samples_and_selection() -> None:
    t = SampleTracker(4, proxies=["csl", "aum"], labels=[0, 1, 1, 0])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    for _ in range(2):
        t.update(torch.tensor([0, 2]), logits=logits)  # labels from the constructor: 0 and 1
        t.end_epoch()
    table = t.scores()
    assert list(table.columns) == ["index", "label", "csl", "aum"]
    assert table["label"].tolist() == [0, 1, 1, 0]
    assert table["csl"].iloc[1] == 0 and np.isnan(table["aum"].iloc[1])  # never presented
    assert table["aum"].iloc[0] == pytest.approx(-2.0) and table["aum"].iloc[2] == pytest.approx(-1.0)
    with pytest.raises(HarnessError, match="select it when creating the tracker"):
        t.scores(["forgetting"])


def test_eval_proxies_need_the_right_passes(digits_noisy: PreparedData) -> None:
    n = digits_noisy.n
    t = SampleTracker(n)
    user_loop(digits_noisy, t, recipe=Recipe(**{**RECIPE.__dict__, "epochs": 2}), eval_every_epoch=False)
    cols = set(t.scores().columns)
    assert {"final_loss", "in_confidence", "csl", "forgetting"} <= cols and "csl_eval" not in cols
    with pytest.raises(HarnessError, match=r"after every epoch \(passes ran after epochs \[2\] of 2\)"):
        t.scores(["csl_eval"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.update(torch.tensor([0, 10]), losses=torch.ones(2)), r"index 10 is outside \[0, 10\)"),
        (lambda t: t.update(torch.tensor([-1]), losses=torch.ones(1)), r"index -1 is outside"),
        (lambda t: t.update(torch.tensor([0.0, 1.0]), losses=torch.ones(2)), "integer tensor of sample indices"),
        (lambda t: t.update(torch.tensor([[0, 1]]), losses=torch.ones(2)), "1-D integer"),
        (lambda t: t.update(torch.tensor([0, 1]), losses=torch.ones(3)), r"losses has shape \(3,\) but must be \(2,\)"),
        (lambda t: t.update(torch.tensor([0, 1]), losses=torch.ones(2, 1)), "reduction='none'"),
        (lambda t: t.update(torch.tensor([0, 1]), losses=torch.ones(())), "reduction='none'"),
        (lambda t: t.update(torch.tensor([0, 1]), losses=torch.ones(2, dtype=torch.int64)), "floating point"),
        (lambda t: t.update(torch.tensor([0, 1]), logits=torch.ones(2, 3)), "needs labels="),
        (lambda t: t.update(torch.tensor([0, 1]), logits=torch.ones(2, 3), labels=torch.ones(2)), "integer class ids"),
        (lambda t: t.update(torch.tensor([0, 1]), logits=torch.ones(3), labels=torch.ones(2)), r"\(2, classes\)"),
        (lambda t: t.update(torch.tensor([0, 1]), logits=torch.ones(2, 3), labels=torch.tensor([0, 3])),
         r"label 3 is outside \[0, 3\)"),
        (lambda t: t.update(torch.tensor([0, 1])), "needs losses="),
        (lambda t: t.update(torch.tensor([0, 1]), losses=[1.0, 2.0]), "must be torch tensors"),
        (lambda t: t.end_epoch(), "without update"),
        (lambda t: t.scores(), "no epoch recorded"),
    ],
)
def test_bad_use_is_a_clear_error(call, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        call(SampleTracker(10))


def test_lifecycle_errors() -> None:
    t = SampleTracker(3)
    t.update(torch.tensor([0, 1, 2]), logits=torch.eye(3), labels=torch.tensor([0, 1, 2]))
    with pytest.raises(HarnessError, match="last epoch is still open"):
        t.scores()
    with pytest.raises(HarnessError, match="call end_epoch"):
        t.eval_epoch(nn.Linear(3, 3), (torch.eye(3), torch.arange(3)))
    t.end_epoch()
    with pytest.raises(HarnessError, match="logits have 4 classes but earlier batches had 3"):
        t.update(torch.tensor([0]), logits=torch.ones(1, 4), labels=torch.tensor([0]))
    with pytest.raises(HarnessError, match="forgetting needs at least 2 epochs"):
        t.scores(["forgetting"])
    assert "forgetting" not in t.scores().columns  # the default set leaves it out
    with pytest.raises(HarnessError, match="after the tracker finished"):
        t.update(torch.tensor([0]), losses=torch.ones(1))
    with pytest.raises(HarnessError, match="after the tracker finished"):
        t.end_epoch()
    with pytest.raises(HarnessError, match="positive integer"):
        t.suspects(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "number of training samples"),
        ({"n": 3, "proxies": ["ssft"]}, "trains runs of its own"),
        ({"n": 3, "proxies": ["curvature"]}, "only memprox's own training loop records"),
        ({"n": 3, "proxies": ["nonsense"]}, "unknown proxy"),
        ({"n": 3, "proxies": ["aum"], "running_sums": True}, "running_sums=True keeps only"),
        ({"n": 3, "labels": [0, 1]}, "must be 3 integer class ids"),
    ],
)
def test_bad_construction(kwargs, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        SampleTracker(**kwargs)


def test_selected_proxies_need_logits() -> None:
    t = SampleTracker(3, proxies=["csl", "aum"])
    with pytest.raises(HarnessError, match=r"need \['train_margin'\], computed from logits="):
        t.update(torch.tensor([0]), losses=torch.ones(1))


def test_eval_batches_from_a_loader_match_tensors() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    by_tensor, by_loader = SampleTracker(10), SampleTracker(10)
    for t in (by_tensor, by_loader):
        t.update(torch.arange(10), logits=model(x), labels=y)
        t.end_epoch()
    by_tensor.eval_epoch(model, (x, y), batch_size=4)
    order = torch.randperm(10)
    by_loader.eval_epoch(model, [(x[i], y[i], i) for i in order.split(3)])
    a, b = by_tensor.scores(["final_loss"]), by_loader.scores(["final_loss"])
    np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-6)
    expected = nn.functional.cross_entropy(model(x), y, reduction="none").detach().numpy()
    np.testing.assert_allclose(a["final_loss"], expected, rtol=1e-5)
    bad = SampleTracker(10)
    bad.update(torch.arange(10), losses=torch.ones(10))
    bad.end_epoch()
    with pytest.raises(HarnessError, match=r"\(x, y, index\)"):
        bad.eval_epoch(model, [(x, y)])


def test_scores_is_a_dataframe_of_floats(tracked: SampleTracker) -> None:
    table = tracked.scores(["csl", "in_confidence(variant=max)"])
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["index", "label", "csl", "in_confidence(variant=max)"]
    assert table["in_confidence(variant=max)"].between(0, 1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_buffers_and_deferred_index_check() -> None:
    dev = torch.device("cuda")
    t = SampleTracker(4)
    logits = torch.randn(4, 3, device=dev, dtype=torch.float16)
    t.update(torch.arange(4), logits=logits, labels=torch.tensor([0, 1, 2, 0], device=dev))
    t.end_epoch()
    assert t.scores()["csl"].notna().all()
    bad = SampleTracker(4)
    bad.update(torch.tensor([0, 9], device=dev), losses=torch.ones(2, device=dev))
    with pytest.raises(HarnessError, match="outside"):
        bad.end_epoch()


# --- non-finite losses (issue 16): NaN, never a number that ranks the sample ---------------------

NAN = float("nan")


def test_a_nan_loss_scores_nan_not_zero() -> None:
    """Sample 1's loss is NaN in epoch 1: its csl is NaN (it once came out 0, least suspicious), the
    others' are the plain sums; with running sums too."""
    epochs = [torch.tensor([1.0, NAN, 0.5]), torch.tensor([2.0, 1.0, 0.25])]
    for running in (False, True):
        t = SampleTracker(3, running_sums=running)
        for e, losses in enumerate(epochs):
            t.update(torch.arange(3), losses=losses)
            if e == 0:
                with pytest.warns(RuntimeWarning, match=r"1 sample\(s\) in epoch 1 \(first: \[1\]\).*learning rate"):
                    t.end_epoch()
            else:
                t.end_epoch()
        with pytest.warns(RuntimeWarning, match=r"first: \[1\]; they score NaN in csl \(1\)"):
            csl = t.scores()["csl"].to_numpy()
        np.testing.assert_array_equal(csl, [3.0, NAN, 0.75])
        with pytest.warns(RuntimeWarning, match="non-finite"):
            assert t.suspects(3)["index"].tolist() == [0, 2]  # ranked by nothing: left out, not last


def test_a_nan_logit_spoils_every_training_proxy_of_that_sample_only() -> None:
    labels = torch.tensor([0, 1, 0])
    epochs = [torch.tensor([[1.0, 0.0], [NAN, 0.0], [0.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])]
    t = SampleTracker(3)
    t.update(torch.arange(3), logits=epochs[0], labels=labels)
    with pytest.warns(RuntimeWarning, match=r"first: \[1\]"):
        t.end_epoch()
    t.update(torch.arange(3), logits=epochs[1], labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean epoch says nothing
        t.end_epoch()
    with pytest.warns(RuntimeWarning, match=r"1 sample\(s\).*first: \[1\]"):
        table = t.scores(["csl", "aum", "forgetting", "threshold_lt", "el2n", "variability"])
    assert table.iloc[1, 2:].isna().all()  # every proxy of the diverged sample
    assert table.drop(index=1).iloc[:, 2:].notna().all().all()
    ce = np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0)), np.log(2.0) + np.log1p(np.e)
    np.testing.assert_allclose(table["csl"].to_numpy()[[0, 2]], ce, rtol=1e-6)
    np.testing.assert_allclose(table["aum"].to_numpy()[[0, 2]], [-1.5, 0.5], rtol=1e-6)  # -mean margin
    assert table["forgetting"].tolist()[::2] == [0, 2]  # sample 2: a tie is not its label, then wrong: E


def test_a_nan_in_one_eval_pass_spoils_only_the_proxies_reading_it() -> None:
    """Eval passes after epochs 1 and 2 through nn.Identity (the inputs are the logits): sample 2 is
    NaN after epoch 1 only, so csl_eval (every pass) is NaN for it, final_loss (last pass) is not."""
    labels = torch.tensor([0, 1, 0])
    passes = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [NAN, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])]
    t = SampleTracker(3)
    for logits in passes:
        t.update(torch.arange(3), losses=torch.ones(3))
        t.end_epoch()
        t.eval_epoch(nn.Identity(), (logits, labels))
    with pytest.warns(RuntimeWarning, match=r"first: \[2\]; they score NaN in csl_eval \(1\)"):
        table = t.scores(["csl", "csl_eval", "final_loss"])
    np.testing.assert_array_equal(table["csl"], [2.0, 2.0, 2.0])
    assert np.isnan(table["csl_eval"][2]) and table["csl_eval"][:2].notna().all()
    np.testing.assert_allclose(table["csl_eval"][:2], [np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0))] * 2,
                               rtol=1e-6)
    np.testing.assert_allclose(table["final_loss"], [np.log1p(np.exp(-2.0))] * 2 + [np.log(2.0)], rtol=1e-6)


def test_an_inf_loss_is_not_finite_either() -> None:
    t = SampleTracker(2, proxies=["csl"])
    t.update(torch.tensor([0, 1]), losses=torch.tensor([float("inf"), 1.0]))
    with pytest.warns(RuntimeWarning, match=r"first: \[0\]"):
        t.end_epoch()
    with pytest.warns(RuntimeWarning):
        np.testing.assert_array_equal(t.scores()["csl"], [NAN, 1.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_nan_loss_is_counted_on_the_device() -> None:
    dev = torch.device("cuda")
    t = SampleTracker(3)
    t.update(torch.arange(3, device=dev), losses=torch.tensor([1.0, NAN, 0.5], device=dev))
    with pytest.warns(RuntimeWarning, match=r"first: \[1\]"):
        t.end_epoch()
    with pytest.warns(RuntimeWarning):
        np.testing.assert_array_equal(t.scores()["csl"], [1.0, NAN, 0.5])


def _plugin_columns(table) -> list[str]:
    """Columns of proxies that are not memprox's own (installed plugins), in the table's order."""
    from proxies import available_proxies

    builtin = {name for name, cls in available_proxies().items() if cls.__module__.split(".")[0] == "proxies"}
    return [c for c in table.columns[3:] if c.split("(")[0] not in builtin]
