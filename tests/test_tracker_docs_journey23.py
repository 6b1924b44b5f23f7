"""docs/own-training-loop.md's claims on what `SampleTracker.scores` equals (journey23): a researcher
checks the tracker against a recomputation in their own loop. `csl` is the passed losses summed in
float64, bitwise on the CPU; `aum` minus the mean margin to float32 rounding; `forgetting` counts
correct-to-wrong changes, E for a sample never correct (a first recomputation without that rule
differed by up to E, which the page did not say)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness import SampleTracker

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-training-loop.md"
N, C, EPOCHS, BATCH = 48, 4, 4, 16


def test_the_page_says_what_the_recomputation_checks() -> None:
    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    assert "`csl` is each sample's passed losses summed over the epochs in float64" in text
    assert "give the same bits on the CPU" in text
    assert "`aum` is minus the mean margin (the label's logit minus the largest other)" in text
    assert "a sample never correct gets E, the number of epochs, not 0" in text


def test_scores_equal_a_recomputation_in_the_loop() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(N, 6), torch.randint(0, C, (N,))  # random labels: some samples are never learned
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, C))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = SampleTracker(N)
    csl = np.zeros(N)
    margin = np.zeros((EPOCHS, N))
    correct = np.zeros((EPOCHS, N), dtype=bool)
    for epoch in range(EPOCHS):
        for idx in torch.randperm(N).split(BATCH):
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            tracker.update(idx, losses=loss, logits=logits, labels=y[idx])
            held = logits.detach().double()
            given = held.gather(1, y[idx, None])[:, 0]
            other = held.scatter(1, y[idx, None], float("-inf")).max(1).values
            csl[idx.numpy()] += loss.detach().double().numpy()
            margin[epoch, idx.numpy()] = (given - other).numpy()
            correct[epoch, idx.numpy()] = (given > other).numpy()
        tracker.end_epoch()
    scores = tracker.scores(["csl", "aum", "forgetting"])
    assert np.array_equal(scores["csl"].to_numpy(), csl)
    np.testing.assert_allclose(scores["aum"].to_numpy(), -margin.mean(0), rtol=0, atol=1e-5)
    forgetting = (correct[:-1] & ~correct[1:]).sum(0).astype(np.float64)
    never = ~correct.any(0)
    assert never.any() and (~never).any()
    forgetting[never] = EPOCHS
    assert np.array_equal(scores["forgetting"].to_numpy(), forgetting)
