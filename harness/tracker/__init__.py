"""Score every sample of *your own* training loop with memprox's proxies.

CSL's promise is that it is free: the loop already computes every sample's loss. `SampleTracker`
keeps those per-sample signals on the model's device while you train, then scores them with the
very proxy classes `python -m harness run` uses (`proxies.make_proxy`), reading the signals through
the same `ScoreContext` interface a stored run offers. The signals are recorded, and stored, by
the harness's own recorders in a `RecorderBank` (`harness/recorders/`): each batch goes to the
training-pass recorders' `on_batch`, each `eval_epoch` pass to the `eval_pass` recorder's
`on_eval_batch`, exactly as in `python -m harness run`. There is no second implementation of any
formula or of their storage.

The package: `core` (`SampleTracker`, the calls of a user's loop), `evaluation` (its eval-mode
pass, `eval_epoch`), `signals` (its recording state: the bank, labels, non-finite counts), `inputs`
(checks of what the loop passes), `selection`
(which proxies it can score), `report` (warnings, labels, the suspects' grid), `class_probs` (the
suspects' suggested label, by the suspects task's recorder and rule), `class_names` (the suspects'
`classes=`, checked and written beside the ids), `checkpoints` (its checkpoint: `state_dict` /
`load_state_dict`; the state they save and load in `state`) and `gather` (a DDP job's batch from
every process: `update(..., gather=True)`).

Your loop needs each batch's sample indices. Wrap the dataset so it returns them::

    class WithIndex(torch.utils.data.Dataset):
        def __init__(self, ds): self.ds = ds
        def __len__(self): return len(self.ds)
        def __getitem__(self, i): return (*self.ds[i], i)        # (x, y, index)

and then, per batch ``for x, y, idx in loader``::

    logits = model(x); loss = F.cross_entropy(logits, y, reduction="none")
    loss.mean().backward(); opt.step(); opt.zero_grad()
    tracker.update(idx, losses=loss, logits=logits, labels=y)

with ``tracker.end_epoch()`` after each epoch and ``tracker.scores()`` (a DataFrame) at the end.
"""

from harness.tracker.core import SampleTracker

__all__ = ["SampleTracker"]
