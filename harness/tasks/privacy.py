"""Privacy (beyond the paper): which samples leak membership, and which proxy predicts it.

Memorized samples are the ones a membership-inference attack finds. The K stability models of
the memorization reference (``--reference stability``; K, r and the architecture from
``--task-arg memorization.k|fraction|model``) are exactly the shadow models of LiRA (Carlini et
al., S&P 2022), so this task trains nothing of its own: beside ``memorization`` it plans the
very same runs (same specs, same ``eval_pass[epochs=last]`` recorder). On the clean setting of
each seed (shared with the memorization and theory tasks):

- Reference, per sample i: vulnerability v_i from the in/out Gaussians of φ = logit_y −
  logsumexp_{j≠y} logit_j over the models that did and did not train on i
  (``baselines.privacy``: definitions, the σ floor, the fixed-variance and empirical variants).
  Samples that no model or every model trained on have no v and are dropped.
- Rows under proxy ``reference``: the leave-one-model-out online LiRA attack over all
  (model, sample) pairs -- ``lira_auroc``, ``lira_tpr@0.001fpr``, ``lira_tpr@0.01fpr`` -- and
  ``mean_vulnerability``. Carlini et al. report theirs for CIFAR-10 at full scale with 256
  shadow models of a WideResNet; ours are at the preset's scale (data, model, epochs, K), so
  they compare in kind, not in value.
- Rows per proxy, against v: ``pearson``, ``spearman``, and ``auroc`` / ``auprc`` for flagging
  the ``top`` fraction (default 10 %) most vulnerable samples; when samples tied at the boundary
  value compete for the last places, both are their expected values under random tie-breaking
  (methods.md's rule for ties): the AUROC exactly, the AUPRC (not linear in the flags) as the
  mean over seeded draws, one draw per bootstrap resample (as the memorization task's top-k). Each
  carries ``boot``, its value on the B bootstrap resamples of the samples (``harness.bootstrap``),
  drawn once per (task, setting, seed) and shared by all proxies.
- With an output folder: ``figures/privacy_<proxy>_vs_vulnerability_seed<s>.png`` (bin means ±
  std of CSL and of the proxy with the best Spearman among the others, over equal-width bins of
  v), ``figures/privacy_attack_roc_seed<s>.png`` (log-log) and
  ``privacy/vulnerability_seed<s>.csv`` (per sample: v, the Gaussians, the model counts).

Parameters (``--task-arg privacy.NAME=VALUE``): ``top`` (0.1), ``vulnerability``
(``gaussian`` | ``empirical``), ``sigma_floor`` (0.1, in units of φ), ``fixed_variance``
(False), ``bins`` (20, for the figures).

Stored stability runs from before φ was recorded are not retrained: their eval pass kept the
final probabilities, and φ = log p_y − log Σ_{j≠y} p_j recomputed from them matches the logits'
value (to ~1e-5) until the other classes underflow float32 (a margin beyond ~87 nats, where it is
capped: ``baselines.privacy.phi_from_probs``). The cost is therefore zero training either way.
When ``memorization.model`` names another architecture, v measures that architecture's leakage.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from baselines.privacy import (
    FPR_TARGETS,
    VULNERABILITIES,
    attack_metrics,
    fit_gaussians,
    gaussian_auroc,
    lira_scores,
    phi_from_probs,
    vulnerability,
)
from baselines.stability import EVAL_LAST, subset_masks
from harness.bootstrap import Resamples
from harness.errors import HarnessError
from harness.metrics import weighted_detection
from harness.plots import plot_binned
from harness.privacy_plots import best_other, plot_attack_roc
from harness.similarity import MIN_SAMPLES, TIE_DRAWS, TIE_SEED, ReferenceSide, top_k_weights
from harness.tasks.base import EvalContext, Row, positive_int, register_task
from harness.tasks.memorization import ReferenceTask

METRICS = ("pearson", "spearman", "auroc", "auprc")


def stored_phi(run: Any, labels: np.ndarray) -> np.ndarray:
    """A stability run's φ over all samples: recorded, or from its stored final probabilities."""
    arrays = run.arrays(EVAL_LAST.key)
    if "phi" in arrays:
        return np.asarray(arrays["phi"][0], dtype=np.float64)
    return phi_from_probs(arrays["probs_last"], labels)


#: Flag weights (rows x samples) per block of tie-break draws for a point AUPRC (`drawn_auprc`).
_DRAW_ELEMENTS = 1 << 21


class VulnerabilitySide:
    """v's side of `proxy_metrics` under one weight matrix (b, N), computed once and paired with
    every proxy: its moments and mid-ranks, and the flag weights of its `top` fraction.

    `ties` (whole-number weights): where samples tied at the boundary share the last places, the
    AUPRC comes from one random tie-break per row (`top_k_weights` with a generator): the AUROC of
    the fractional flags is its expectation exactly, the AUPRC of the fractional flags is not."""

    def __init__(self, v: np.ndarray, weights: np.ndarray, top: float,
                 ties: np.random.Generator | None = None) -> None:
        k = np.maximum(1.0, np.round(top * weights.sum(1, keepdims=True)))
        self.corr = ReferenceSide(v, weights, k, top_k=False)
        flag = top_k_weights(v, weights, k)
        self.positives = np.r_[np.ones(len(v), dtype=bool), np.zeros(len(v), dtype=bool)]
        # column-major: the detection gathers samples (columns) in each proxy's score order
        self.detect_weights = np.asfortranarray(np.hstack([flag, weights - flag]))
        self.live = (self.detect_weights != 0).any(axis=0)  # most flag copies weigh 0 in every row
        #: a boundary tie shares places fractionally in some row (a sample drawn m times alone at the
        #: boundary takes a whole number of them, up to rounding: no tie between samples)
        self.tied = bool((np.abs(flag - np.round(flag)) > 1e-9).any())
        self.drawn_weights = None
        if ties is not None and self.tied:
            hard = top_k_weights(v, weights, k, ties)
            self.drawn_weights = np.asfortranarray(np.hstack([hard, weights - hard]))

    def metrics(self, score: np.ndarray) -> dict[str, np.ndarray]:
        """A row where v is constant flags an arbitrary `top` fraction: its AUROC and AUPRC are NaN,
        as its correlations are, not the 0.5 and `top` that any proxy would get against no ranking."""
        corr = self.corr.metrics(score, ("pearson", "spearman"))
        detect = weighted_detection(self.positives, np.r_[score, score], self.detect_weights, live=self.live)
        flat = self.corr.flat
        return {"pearson": corr["pearson"], "spearman": corr["spearman"],
                "auroc": np.where(flat, np.nan, detect["auroc"]),
                "auprc": np.where(flat, np.nan, self.auprc(score) if self.drawn_weights is not None else
                                  detect["auprc"])}

    def auprc(self, score: np.ndarray) -> np.ndarray:
        """Per row, the AUPRC of the drawn (whole) flags; without draws, of the fractional ones."""
        weights = self.detect_weights if self.drawn_weights is None else self.drawn_weights
        return weighted_detection(self.positives, np.r_[score, score], weights, live=self.live)["auprc"]


def drawn_auprc(v: np.ndarray, scores: dict[str, np.ndarray], top: float) -> dict[str, float]:
    """Each proxy's flag AUPRC averaged over TIE_DRAWS seeded random tie-breaks of the flag boundary
    (all samples weighted 1): its expected value, the point estimate when the boundary is tied."""
    ties = np.random.default_rng(TIE_SEED)
    step = max(1, _DRAW_ELEMENTS // (2 * len(v)))
    sums = dict.fromkeys(scores, 0.0)
    for start in range(0, TIE_DRAWS, step):
        rows = min(step, TIE_DRAWS - start)
        side = VulnerabilitySide(v, np.ones((rows, len(v))), top, ties)
        for proxy, s in scores.items():
            sums[proxy] += float(side.auprc(s).sum())
    return {proxy: total / TIE_DRAWS for proxy, total in sums.items()}


def proxy_metrics(v: np.ndarray, score: np.ndarray, weights: np.ndarray, top: float) -> dict[str, np.ndarray]:
    """Pearson, Spearman and flag AUROC/AUPRC of one proxy against v, per row of weights (b, N)
    (all ones: the point estimate; bootstrap counts: the replicates). The flag is the `top`
    fraction of each row's weight (rounded, at least 1) with the highest v, tied boundary values
    sharing the last places; a sample's flag weight w_top and the rest w − w_top enter the
    detection metrics as a positive and a negative copy. The AUROC is then exactly its expected
    value under random tie-breaking: within a tied group every unordered pair contributes 1/2 in
    expectation, which is what the copies' cross and self pairs add up to. The AUPRC here is that of
    the fractional flags; `all_proxy_metrics` reports its expectation over tie-breaks instead (equal
    without a boundary tie). For many proxies, build one `VulnerabilitySide` per weight matrix."""
    return VulnerabilitySide(v, weights, top).metrics(score)


def all_proxy_metrics(v: np.ndarray, scores: dict[str, np.ndarray], top: float,
                      resamples: Resamples | None) -> tuple[dict[str, dict[str, np.ndarray]],
                                                            dict[str, dict[str, np.ndarray]]]:
    """Every proxy's `proxy_metrics` against v (finite entries only): the point estimates (1,)
    and, with resamples, the (B,) replicates; v's side is computed once per weight matrix."""
    keep = np.isfinite(v)
    vk = v[keep]
    side = VulnerabilitySide(vk, np.ones((1, int(keep.sum()))), top)
    points = {proxy: side.metrics(s[keep]) for proxy, s in scores.items()}
    if side.tied:  # samples tied at the flag boundary share its last places: the AUPRC over tie-breaks
        for proxy, auprc in drawn_auprc(vk, {p: s[keep] for p, s in scores.items()}, top).items():
            points[proxy]["auprc"] = np.where(side.corr.flat, np.nan, auprc)
    reps: dict[str, dict[str, np.ndarray]] = {proxy: {} for proxy in scores}
    if resamples is not None and scores:
        parts: dict[str, dict[str, list[np.ndarray]]] = {proxy: {} for proxy in scores}
        ties = np.random.default_rng(TIE_SEED)  # one tie-break per resample, drawn in resample order
        for w in resamples.chunks():
            side = VulnerabilitySide(vk, w[:, keep], top, ties)
            for proxy, s in scores.items():
                for metric, x in side.metrics(s[keep]).items():
                    parts[proxy].setdefault(metric, []).append(np.asarray(x, dtype=np.float64))
        reps = {proxy: {m: np.concatenate(x) for m, x in d.items()} for proxy, d in parts.items()}
    return points, reps


def few_vulnerabilities_warning(v: np.ndarray) -> None:
    """Say why every proxy's privacy metrics are NaN: fewer than 3 samples with a vulnerability (the
    others never in or never out of a model) give correlations of +-1 whatever the proxy, and a
    constant v has no most vulnerable samples to flag."""
    finite = v[np.isfinite(v)]
    if len(finite) < MIN_SAMPLES["pearson"]:
        warnings.warn(f"privacy: only {len(finite)} samples have a vulnerability (the others were never held out, "
                      "or never trained on), too few to correlate: every proxy's privacy metrics are NaN; raise "
                      "memorization.k or use more samples", stacklevel=3)
    elif np.ptp(finite) == 0:
        warnings.warn(f"privacy: every sample has the same vulnerability ({finite[0]:.3g}): nothing to rank or "
                      "flag, every proxy's privacy metrics are NaN", stacklevel=3)


def few_negatives_warning(lira: np.ndarray, members: np.ndarray) -> None:
    """Say when a TPR at a low FPR is the TPR at zero false positives: with fewer non-member (model,
    sample) pairs than 1/FPR (1,000 for 0.1 %), no threshold allows even one false positive, so
    `lira_tpr@0.001fpr` reads the strictest threshold's TPR, a far noisier figure than its name."""
    negatives = int((~members & np.isfinite(lira)).sum())
    short = [name for fpr, name in FPR_TARGETS.items() if negatives * fpr < 1]
    if short:
        which = "each is" if len(short) > 1 else "it is"
        warnings.warn(f"privacy: the LiRA attack has {negatives} non-member (model, sample) pairs, too few for "
                      f"{' and '.join(short)} to allow one false positive: {which} the TPR at zero false "
                      f"positives; raise memorization.k or use more samples (>= {math.ceil(1 / min(FPR_TARGETS))} "
                      "pairs)", stacklevel=3)


def file_part(label: str) -> str:
    """A proxy label as part of one file name: a parameter value holding a path
    (`x(weights=/tmp/w.npy)`) put the figure into folders named after its pieces."""
    return re.sub(r"[^\w().,=+-]", "_", label)


@register_task
class Privacy(ReferenceTask):
    name = "privacy"
    folders = ("privacy", "figures")
    headline = "spearman"
    description = "per-sample membership-inference vulnerability (LiRA on the stability models) vs each proxy"
    defaults: ClassVar[dict[str, Any]] = {"top": 0.1, "vulnerability": "gaussian", "sigma_floor": 0.1,
                                          "fixed_variance": False, "bins": 20}
    reference_params = ("k", "fraction", "model")  # the attack reads the K models' phi, not `variant`

    def validate(self) -> None:
        p = self.params
        top = p["top"]
        if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top < 1:
            raise HarnessError(f"privacy.top must be a fraction in (0, 1) (e.g. 0.1 for the 10% most "
                               f"vulnerable samples), got {top!r}")
        if p["vulnerability"] not in VULNERABILITIES:
            raise HarnessError(f"privacy.vulnerability must be one of {', '.join(VULNERABILITIES)}, "
                               f"got {p['vulnerability']!r}")
        floor = p["sigma_floor"]
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 < floor < math.inf:
            raise HarnessError(f"privacy.sigma_floor must be a finite number > 0, got {floor!r}")
        if not isinstance(p["fixed_variance"], bool):
            raise HarnessError(f"privacy.fixed_variance must be True or False, got {p['fixed_variance']!r}")
        positive_int(self.name, "bins", p["bins"])
        rc = self.reference
        if rc.kind != "stability":
            raise HarnessError(f"privacy needs --reference stability (its K models are the attack's shadow "
                               f"models); --reference {rc.label()} trains none")
        if rc.k < 3:
            raise HarnessError(f"privacy needs memorization.k >= 3 models (leave-one-model-out attack), "
                               f"got {rc.k}")

    def check_coverage(self, estimated: int) -> None:
        """`top` of the samples with a vulnerability (the samples with an estimate) must leave some
        unflagged, or AUROC and AUPRC have no negatives: known before anything trains."""
        top = self.params["top"]
        if max(1, round(top * estimated)) >= estimated:
            raise HarnessError(f"privacy.top {top:g} flags all {estimated} samples with a vulnerability (a sample "
                               "needs a model that trained on it and one that left it out): AUROC and AUPRC would "
                               "have no negatives; lower privacy.top, or raise memorization.k")

    def evaluate(self, ctx: EvalContext, scores: dict[str, np.ndarray]) -> list[Row]:
        p, rc = self.params, self.reference
        ref_base = rc.base(ctx.base)
        phi = np.stack([stored_phi(ctx.runs[s], ctx.data.labels) for s in rc.specs(ctx.base)])
        members = subset_masks(phi.shape[1], rc.k, rc.fraction, ref_base.seed)
        fit = fit_gaussians(phi, members, p["sigma_floor"], p["fixed_variance"])
        if p["vulnerability"] == "gaussian":
            v = gaussian_auroc(fit)
        else:
            v = vulnerability(phi, members, p["vulnerability"])
        lira = lira_scores(phi, members, p["sigma_floor"], p["fixed_variance"])
        few_negatives_warning(lira, members)
        attack = attack_metrics(lira, members)
        rows: list[Row] = [{"proxy": "reference", "metric": m, "value": x} for m, x in attack.rows().items()]
        rows.append({"proxy": "reference", "metric": "mean_vulnerability", "value": float(np.nanmean(v))})

        scored = int(np.isfinite(v).sum())
        few_vulnerabilities_warning(v)
        if max(1, round(p["top"] * scored)) >= scored:
            warnings.warn(f"privacy.top {p['top']:g} flags all {scored} samples with a vulnerability: their AUROC "
                          "and AUPRC have no negatives and are NaN; lower privacy.top", stacklevel=2)
        points, replicates = all_proxy_metrics(v, scores, p["top"], ctx.resamples())
        spearman: dict[str, float] = {}
        for proxy in scores:
            point, reps = points[proxy], replicates[proxy]
            for metric in METRICS:
                row: Row = {"proxy": proxy, "metric": metric, "value": float(point[metric][0])}
                if metric in reps:
                    row["boot"] = reps[metric]
                rows.append(row)
            spearman[proxy] = float(point["spearman"][0])
        table = pd.DataFrame({"index": np.arange(len(v)), "vulnerability": v,
                              "mu_in": fit.mu_in, "sigma_in": fit.sigma_in, "n_in": fit.n_in,
                              "mu_out": fit.mu_out, "sigma_out": fit.sigma_out, "n_out": fit.n_out})
        ctx.keep_table("privacy", f"privacy/vulnerability_seed{ctx.setting.seed}.csv", table)
        if ctx.out is not None:
            self._plot(ctx, v, attack, scores, spearman)
        return rows

    def _plot(self, ctx: EvalContext, v, attack, scores: dict[str, np.ndarray], spearman: dict[str, float]) -> None:
        assert ctx.out is not None  # figures exist only in an out folder
        out, seed, bins = Path(ctx.out), ctx.setting.seed, self.params["bins"]
        written: list[Path] = []
        xlabel = f"vulnerability v ({self.params['vulnerability']} in/out AUROC)"
        title = f"seed {seed}: bin means over {bins} equal-width bins of v"
        for proxy in ("csl", best_other(spearman)):
            if proxy in scores:
                path = out / "figures" / f"privacy_{file_part(proxy)}_vs_vulnerability_seed{seed}.png"
                written.append(plot_binned(v, scores[proxy], xlabel, proxy, path, bins=bins, title=title))
        written.append(plot_attack_roc(attack, out / "figures" / f"privacy_attack_roc_seed{seed}.png",
                                       title=f"LiRA on the stability models, seed {seed}"))
        ctx.artifacts.setdefault("figures", []).extend(str(f.relative_to(out)) for f in written)
