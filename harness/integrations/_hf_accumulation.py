"""`CSLTrainer`'s warning that gradient accumulation trains it unlike the plain `Trainer`.

Under gradient accumulation the plain `Trainer` does not divide the loss of a model whose forward
takes `**kwargs` (it hands it `num_items_in_batch` and trusts it to normalise), while CSLTrainer's
batch mean is divided by the steps: the same arguments then train differently (BERT's
classification head ignores `num_items_in_batch`: the plain Trainer's update is `steps` times
CSLTrainer's). Nothing in the scores would show it, so it is said in words -- at construction, and
again at each `train()` whose arguments have another accumulation: `hyperparameter_search` sets
each trial's arguments inside `train()` (`Trainer._hp_search_setup`), after construction, so a
trial searching `gradient_accumulation_steps` was never warned. The check runs where every
`train()`'s arguments are final (`on_train_begin`), once per distinct number of steps.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

__all__ = ["AccumulationCheck"]


def _steps(args: Any) -> int:
    return int(getattr(args, "gradient_accumulation_steps", 1) or 1)


class AccumulationCheck(TrainerCallback):
    """Warns once per distinct `gradient_accumulation_steps` > 1 a `CSLTrainer` trains (or is built)
    with, when its model's loss is one the plain `Trainer` would leave undivided (`model_scales`:
    the `Trainer`'s `model_accepts_loss_kwargs` at construction, which it does not recompute for the
    models `model_init` makes per `train()`)."""

    def __init__(self, model_scales: bool) -> None:
        self.model_scales = model_scales
        self.warned: set[int] = set()  # the steps already said: a search repeats settings, trials are many

    def check(self, args: Any, stacklevel: int = 2) -> None:
        """Warn for `args`' accumulation steps unless said before (or the model's loss would be divided anyway)."""
        steps = _steps(args)
        if not self.model_scales or steps <= 1 or steps in self.warned:
            return
        self.warned.add(steps)
        warnings.warn(f"CSLTrainer: with gradient_accumulation_steps={steps} its loss is each batch's mean divided "
                      f"by {steps}, while the plain Trainer leaves this model's own loss undivided (its forward takes "
                      f"**kwargs, so the Trainer expects it to normalise by num_items_in_batch): a model whose loss "
                      f"is a batch mean regardless (BERT's classification head) trains with {steps}x the update "
                      f"under the plain Trainer. To train as it did, multiply learning_rate by {steps} (or set "
                      f"gradient_accumulation_steps=1 with a {steps}x batch)", RuntimeWarning,
                      stacklevel=stacklevel + 1)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The `train()`'s final arguments: a search trial's (or the user's edits since construction)."""
        self.check(args)
