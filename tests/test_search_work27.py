"""The near-duplicate search's work limit counts the shifted search (shiftattack27): before, a search
of images 16+ pixels a side was judged by its plain and mirrored work alone, ~6 % short on CIFAR-10
and more for large images and few samples."""

from __future__ import annotations

import torch

from harness.tasks.suspects import shifted_work


def test_cifar10s_shifted_work_is_its_candidates_and_check() -> None:
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(50_000, 3, 32, 32)
    work = shifted_work(x, 50_000, 10_000)
    candidates, check = 2 * 50_000 * 60_000 * 3 * 49, 2 * 60_000 * 11 * 50 * 3 * 28 * 28 * 4
    assert work == candidates + check
    plain_and_mirrored = 2 * 50_000 * 60_000 * 3_072
    assert 0.04 < work / plain_and_mirrored < 0.1  # 8 % with the test split


def test_no_shifted_work_where_no_shifted_search_runs() -> None:
    assert shifted_work(torch.zeros(10, 1, 8, 8), 10, 0) == 0  # digits: 8 x 8, under 16 a side
    assert shifted_work(torch.zeros(10, 30, 1, 1), 10, 0) == 0  # a table
    gray = shifted_work(torch.zeros(10, 16, 16), 10, 2)
    assert gray == 2 * 10 * 12 * 49 + 2 * 12 * 11 * 50 * 12 * 12 * 4  # (N, H, W): one channel
