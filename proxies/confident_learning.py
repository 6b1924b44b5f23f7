"""Confident learning (Northcutt et al. 2021) through cleanlab, on honest out-of-fold predictions.

K stratified folds; each fold's model trains from scratch on the other folds with the base recipe
and predicts its own, held-out fold in eval mode. The released benchmark code reused one network
across folds, so its "held-out" probabilities had been trained on; here every fold is its own run,
and the planner shares nothing between them.

Self-confidence p is read from the stored float32 `probs_last`: renormalized in float64, 1 − p
keeps its order until the other classes' share falls below float64's 1.1e-16 (a margin of ~37
nats), then every such unflagged sample scores exactly 0, tied, and past ~27 nats it is rounding
more than 1e-4 of itself. Where 1 − p is below `EXACT_BELOW` it is taken from the fold models'
recorded phi = logit_y − logsumexp of the other logits, as 1 / (1 + e^phi) in float64, exact at
any margin (as final_loss and in_confidence do); larger values are unchanged bit for bit, and the
flags are cleanlab's on the same pred_probs as before. If any fold run was stored before phi
existed, every sample keeps the float32 value: one definition per ranking, never a mix of folds.
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.recorders import EVAL_LAST
from harness.runspec import RunSpec, TrainSubset
from harness.subsets import stratified_folds
from proxies.base import Need, Proxy, ScoreContext
from proxies.final_loss import exact_where_small
from proxies.in_confidence import one_minus_p_label
from proxies.registry import register_proxy


def confident_learning_scores(labels: np.ndarray, pred_probs: np.ndarray, phi: np.ndarray | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
    """(score, flags): cleanlab's confident-learning issue flags, and flag + (1 - self-confidence).

    Self-confidence is the predicted probability of the given label, in [0, 1], so every flagged
    sample scores in [1, 2] and every unflagged one in [0, 1]: flagged rank first, and within
    each group lower self-confidence ranks higher. `phi` (N,), each sample's logit_y − logsumexp
    of its other logits, gives 1 − self-confidence where the float32 probabilities round it
    (below EXACT_BELOW); the flags never read it.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if pred_probs.ndim != 2 or len(pred_probs) != len(labels) or np.isnan(pred_probs).any():
        raise HarnessError(f"pred_probs must be a complete (N, C) array for N={len(labels)}, got {pred_probs.shape}")
    from cleanlab.filter import find_label_issues  # here, not at import: cleanlab takes seconds to import

    pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)  # float32 softmax rounding
    flags = find_label_issues(labels, pred_probs, filter_by="confident_learning", n_jobs=1)
    tail = 1.0 - pred_probs[np.arange(len(labels)), labels]
    if phi is not None:
        phi = np.asarray(phi, dtype=np.float64)
        if phi.shape != labels.shape or np.isnan(phi).any():
            raise HarnessError(f"phi must be a complete ({len(labels)},) array, got shape {phi.shape}"
                               f"{' with NaN' if phi.shape == labels.shape else ''}")
        tail = exact_where_small(tail, one_minus_p_label(phi))
    return flags.astype(np.float64) + tail, flags


@register_proxy
class ConfidentLearning(Proxy):
    name = "confident_learning"
    description = "cleanlab confident-learning flag + (1 - self-confidence) on K-fold out-of-fold probabilities"
    citation = "Northcutt et al., Confident Learning: Estimating Uncertainty in Dataset Labels, JAIR 2021"
    defaults = {"folds": 3}

    def validate(self) -> None:
        self.check_int("folds", 2)

    def fold_specs(self, base: RunSpec) -> list[RunSpec]:
        """Run k trains on every fold but k (TrainSubset kind "fold"), from a fresh init."""
        k = self.params["folds"]
        return [base.with_subset(TrainSubset(kind="fold", index=i, count=k, seed=base.seed)) for i in range(k)]

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(spec, frozenset({EVAL_LAST})) for spec in self.fold_specs(base)]

    def held_out(self, ctx: ScoreContext) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Each fold run's held-out samples and its stored final eval pass, in fold order: read
        once per score (a read loads and checksums every array of the pass)."""
        specs = self.fold_specs(ctx.base)
        held_out = stratified_folds(ctx.labels, len(specs), ctx.base.seed)
        return [(idx, ctx.arrays(EVAL_LAST, spec)) for spec, idx in zip(specs, held_out, strict=True)]

    def out_of_fold(self, ctx: ScoreContext, folds: list[tuple[np.ndarray, dict[str, np.ndarray]]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(pred_probs (N, C), source (N,)): each sample's final eval-mode softmax from the fold
        model that held it out, and that model's fold index."""
        pred_probs = np.full((len(ctx.labels), ctx.num_classes), np.nan)
        source = np.full(len(ctx.labels), -1, dtype=np.int64)
        for k, (idx, arrays) in enumerate(folds if folds is not None else self.held_out(ctx)):
            pred_probs[idx] = arrays["probs_last"][idx]
            source[idx] = k
        return pred_probs, source

    def out_of_fold_phi(self, ctx: ScoreContext, folds: list[tuple[np.ndarray, dict[str, np.ndarray]]] | None = None
                        ) -> np.ndarray | None:
        """Each sample's final phi from the fold model that held it out, or None if any fold run
        lacks it (stored before phi was recorded): then no sample gets it, so that one ranking
        never mixes exact values of some folds with rounded ones of others."""
        phi = np.full(len(ctx.labels), np.nan)
        for idx, arrays in folds if folds is not None else self.held_out(ctx):
            if "phi" not in arrays:
                return None
            phi[idx] = np.asarray(arrays["phi"][-1], dtype=np.float64)[idx]
        return phi

    def score(self, ctx: ScoreContext) -> np.ndarray:
        folds = self.held_out(ctx)
        pred_probs, source = self.out_of_fold(ctx, folds)
        diverged_folds(pred_probs, source, self.fold_specs(ctx.base))
        return confident_learning_scores(ctx.labels, pred_probs, self.out_of_fold_phi(ctx, folds))[0]


def diverged_folds(pred_probs: np.ndarray, source: np.ndarray, specs: list[RunSpec]) -> None:
    """A HarnessError naming the fold runs whose eval pass gave NaN probabilities (a diverged fold
    model): cleanlab's flags need every sample's, and the check below said only 'pred_probs must be
    a complete (N, C) array ... got (N, C)', which named neither the NaN nor the run."""
    bad = np.isnan(pred_probs).any(axis=1)
    if bad.any():
        folds = sorted({int(k) for k in source[bad] if k >= 0})
        raise HarnessError(f"{int(bad.sum())} of {len(bad)} samples have NaN held-out probabilities from fold "
                           f"run(s) {', '.join(specs[k].label() for k in folds)} (a diverged fold model); "
                           "lower --lr, or leave confident_learning out")
