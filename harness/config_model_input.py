"""Whether a model can take a dataset's samples, found by a forward pass before anything trains
(`ExperimentConfig.validate_for_data` calls it for every model the plan trains): a mismatch found
only in the first training step cost the setup, and a traceback said nothing of the fix."""

from __future__ import annotations

import math

from harness.errors import HarnessError

#: `check_model_input` runs its forward pass on the CPU up to these sizes (resnet50's 23.5M parameters; a
#: 3x64x64 sample), and on the meta device above them.
CPU_CHECK_PARAMS = 30_000_000
CPU_CHECK_VALUES = 3 * 64 * 64


def check_model_input(model: str, input_shape: tuple[int, ...], num_classes: int, dataset: str,
                      tokens: bool = False) -> None:
    """Refuse a model that cannot take the dataset's samples (e.g. small_cnn on (N, D) features,
    which pooling shrinks below 1x1, or an image model on token ids) before anything trains, by a
    forward pass of two samples. A small model on small samples runs it on the CPU (~0.1 s for
    ResNet-18 on 32x32); a large one on the meta device, which costs no memory but ~1.5 s of torch's
    lazy imports on its first call, once per process (a third of a one-epoch digits run). A model the
    meta device cannot run is tried on the CPU before it is refused, so only a real mismatch stops the
    experiment. `tokens`: the samples are int64 token ids (text), and the test input is too."""
    import torch

    from harness.models import build_model

    def forward(device: str) -> None:
        with torch.device(device), torch.no_grad():
            x = torch.zeros(2, *input_shape, dtype=torch.int64 if tokens else torch.float32)
            build_model(model, input_shape, num_classes).eval()(x)

    def small() -> bool:
        with torch.device("meta"):  # building on meta allocates nothing and imports nothing more
            params = sum(p.numel() for p in build_model(model, input_shape, num_classes).parameters())
        return params <= CPU_CHECK_PARAMS and math.prod(input_shape) <= CPU_CHECK_VALUES

    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        try:
            if not tokens and not small():  # the meta device does not check dtypes: token ids go to the CPU
                forward("meta")
                return
        except HarnessError:
            raise
        except Exception:  # confirmed on the CPU below
            pass
        try:
            forward("cpu")
        except HarnessError:
            raise
        except Exception as e:  # any failure of a forward pass means the model cannot train here
            shape = "x".join(map(str, input_shape))
            if tokens:  # an image model's dtype error says nothing to a user: the fix is the model
                raise HarnessError(f"model {model} cannot take the token ids ({shape}) of text dataset {dataset}; "
                                   "pass --model text_bow (or text_cnn): the text models of `memprox list`") from e
            kind = " ((N, D) features are stored as D x 1 x 1)" if input_shape[1:] == (1, 1) else ""
            raise HarnessError(f"model {model} cannot take the {shape} samples of dataset {dataset}{kind}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; pick a model that takes "
                               "this input (e.g. mlp)") from e
