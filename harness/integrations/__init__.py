"""CSL in the user's own trainer: thin adapters that feed `harness.SampleTracker`.

- `harness.integrations.lightning.CSLCallback`: a PyTorch Lightning callback (extra `lightning`).
- `harness.integrations.transformers.CSLTrainer` + `CSLTrainerCallback`: the Hugging Face
  `Trainer` (extra `hf`), text classification included.

Neither module is imported here, so `import harness` never needs Lightning or transformers. Both
record exactly what a plain loop would hand to `SampleTracker.update`, so their scores are the
tracker's, bitwise (tests/test_integrations_*.py); under DDP each batch is gathered from every
rank first (`harness.integrations._common`). The user guide is docs/integrations.md.
"""

from harness.integrations._common import WithIndex

__all__ = ["WithIndex"]
