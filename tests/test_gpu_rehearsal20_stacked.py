"""The cuDNN element limit of stacked ensemble activations, with the rows as they are computed: an
eval pass pads each member's batch to ROW_ALIGN rows (`each_member`), so the batch it is given must
leave room for the padding. A 16-member ResNet-18 eval pass was cut to 2,047 images, which the
padding made 2,048 again: exactly the 2^31 elements cuDNN refused on an H200. A CPU has no such
limit, so these tests check the arithmetic and the rows each pass actually computes."""

from __future__ import annotations

from dataclasses import replace

import torch

import harness.ensemble_stack as ensemble_stack
from baselines.stability import stability_specs
from harness.ensemble import MAX_STACKED_ELEMENTS, members_per_step, stacked_batch, train_ensemble
from harness.ensemble_stack import ROW_ALIGN, aligned_count
from harness.models import build_model
from harness.recorders import EVAL_LAST

RESNET18_PER_SAMPLE = 64 * 32 * 32  # its largest activation on a 32x32 image


def test_the_h200_eval_pass_fits_once_padded() -> None:
    batch = stacked_batch(16, 2048, RESNET18_PER_SAMPLE, align=ROW_ALIGN)
    assert batch == 2032
    assert 16 * aligned_count(batch, batch) * RESNET18_PER_SAMPLE <= MAX_STACKED_ELEMENTS
    assert stacked_batch(4, 512, RESNET18_PER_SAMPLE, align=ROW_ALIGN) == 512  # inside the limit: as asked
    assert stacked_batch(16, 2048, RESNET18_PER_SAMPLE) == 2047  # no padding: every row counts


def test_training_members_are_counted_with_their_padded_rows() -> None:
    per_sample = 2**20
    # 100 rows pad to 112: 2^31 // (112 * 2^20) = 18 members, where 100 rows alone would allow 20
    assert members_per_step(100, per_sample) == 18
    assert 18 * aligned_count(100, 100) * per_sample <= MAX_STACKED_ELEMENTS
    assert members_per_step(512, RESNET18_PER_SAMPLE) == 63


def test_every_eval_forward_stays_within_the_limit(base_spec, digits_noisy, monkeypatch) -> None:
    """Lower the limit to 2 members x 40 rows: the passes must run at most 32 rows per member as
    computed (padded), not 40 that pad to 48."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=1))
    specs = stability_specs(spec, 2, 0.7)
    per_sample = ensemble_stack.largest_activation(build_model(spec.model, tuple(digits_noisy.x.shape[1:]), 10),
                                                   digits_noisy.inputs(torch.arange(1)))
    limit = 2 * 40 * per_sample
    monkeypatch.setattr("harness.ensemble_plan.MAX_STACKED_ELEMENTS", limit)
    computed: list[int] = []
    plain = ensemble_stack.aligned_rows

    def recording(xb: torch.Tensor) -> torch.Tensor:  # each_member's padding: the rows a pass computes
        out = plain(xb)
        computed.append(out.shape[0] * out.shape[1] * per_sample)
        return out

    monkeypatch.setattr(ensemble_stack, "aligned_rows", recording)
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    assert len(outs) == 2 and computed
    assert max(computed) <= limit, f"{max(computed)} elements in one stacked eval forward, limit {limit}"
