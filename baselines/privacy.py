"""Per-sample membership-inference vulnerability and the LiRA attack, from the stability models.

The K stability models (model k trained on a random r-fraction of the training set) are exactly
the shadow models of LiRA (Carlini et al., "Membership Inference Attacks From First Principles",
S&P 2022), so the privacy task needs no training of its own. For model k and sample i:

- φ_ki = logit_y − logsumexp_{j≠y} logit_j of model k's final eval pass (= log p_y − log(1 − p_y),
  LiRA's logit-scaled confidence, computed stably; ``harness.recorders.eval_pass``).
- I_i = the models that trained on i, O_i = those that did not.
- Gaussians N(μ_in, σ_in²) and N(μ_out, σ_out²) fitted to φ over I_i and O_i: sample mean and
  sample standard deviation (ddof = 1), each σ raised to at least ``sigma_floor`` (default 0.1,
  in units of φ): with one model a group has no spread at all, and with a handful it can be
  arbitrarily small, which would make a sample look perfectly separable by chance.
  ``fixed_variance``: every sample shares one σ_in and one σ_out, the pooled within-sample
  standard deviation of its group over all samples (LiRA's "global variance" variant, for few
  shadow models), still floored.
- Vulnerability (``gaussian``, the default): v_i = the AUROC of telling an in-model's φ from an
  out-model's under those Gaussians = P(X_in > X_out) = Φ((μ_in − μ_out)/√(σ_in² + σ_out²)).
  ``empirical``: the Mann-Whitney AUROC of the observed in- against out-values (ties count ½):
  no Gaussian assumption, but it saturates at 1 once the groups separate.
  v = ½: membership is invisible; v → 1: the sample leaks. A sample that no model (or every
  model) trained on has no v (NaN) and is dropped from every metric.
- The attack as a whole, leave-one-model-out online LiRA: for each model k, the Gaussians of
  every sample are refitted without model k, and the pair (k, i) gets the log likelihood ratio
  log N(φ_ki; μ_in, σ_in²) − log N(φ_ki; μ_out, σ_out²). Over all pairs whose refit is defined,
  membership (i ∈ training set of k) is the label: attack AUROC and the TPR at 0.1 % and 1 % FPR
  (the largest TPR on the ROC curve, without interpolation, at FPR ≤ the target), the
  conventions of the MIA literature. Carlini et al. centre their Gaussians on the median and
  attack one held-out target model with 256 shadow models; ours use the mean and every model in
  turn, at the preset's scale, so the figures compare in kind, not in value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError

VULNERABILITIES = ("gaussian", "empirical")
#: −log of float32's smallest subnormal: the bound on |φ| from a stored float32 probability
#: vector, reached when every other class's probability (φ > 0) or the label's own (φ < 0)
#: underflowed to 0.
PHI_CAP = float(-np.log(np.finfo(np.float32).smallest_subnormal))
#: False-positive rates at which the attack's TPR is reported, and the metric names.
FPR_TARGETS = {0.001: "lira_tpr@0.001fpr", 0.01: "lira_tpr@0.01fpr"}


def phi_from_probs(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """φ from stored probabilities (..., N, C), for runs recorded before φ existed: log p_y −
    log Σ_{j≠y} p_j in float64. Summing the other classes (rather than 1 − p_y) keeps it exact
    while they stay representable in float32, i.e. for a margin below ~87 nats; beyond that
    the sum underflows to 0 and φ is capped at PHI_CAP (a lower bound of the true value). A
    confidently wrong model underflows p_y itself: φ is then floored at −PHI_CAP (an upper
    bound), not −inf, which the fit would take for a damaged run. NaN (a sample the pass never
    reached) stays NaN."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.broadcast_to(np.asarray(labels)[..., None], p.shape[:-1] + (1,))
    p_y = np.take_along_axis(p, y, -1)[..., 0]
    others = p.copy()
    np.put_along_axis(others, y, 0.0, -1)
    rest = others.sum(-1)
    with np.errstate(divide="ignore"):
        phi = np.log(p_y) - np.log(rest)
    return np.clip(phi, -PHI_CAP, PHI_CAP)


@dataclass(frozen=True)
class GaussianFit:
    """Per-sample Gaussians of φ over the in- and the out-models; NaN where a group is empty."""

    mu_in: np.ndarray
    sigma_in: np.ndarray
    mu_out: np.ndarray
    sigma_out: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray

    @property
    def defined(self) -> np.ndarray:
        return (self.n_in > 0) & (self.n_out > 0)


def _check(phi: np.ndarray, trained_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    phi = np.asarray(phi, dtype=np.float64)
    trained_on = np.asarray(trained_on)
    if phi.ndim != 2 or phi.shape != trained_on.shape:
        raise HarnessError(f"phi and trained_on must both be (K, N) arrays of the same shape, got "
                           f"{phi.shape} and {trained_on.shape}")
    if trained_on.dtype != bool:
        raise HarnessError("trained_on must be a boolean (K, N) membership mask")
    if not np.isfinite(phi).all():
        raise HarnessError("phi holds non-finite values; the stability runs' eval pass is damaged, "
                           "rerun them (delete their store entries)")
    return phi, trained_on


def _group(phi: np.ndarray, mask: np.ndarray, floor: float, fixed: bool) -> tuple[np.ndarray, ...]:
    """Count, mean (NaN for an empty group) and floored standard deviation of φ over the masked
    models of each sample; sums over masks rather than nan-reductions, which warn on empty groups."""
    count = mask.sum(0)
    mean = np.where(mask, phi, 0.0).sum(0) / np.maximum(count, 1)
    squares = np.where(mask, (phi - mean) ** 2, 0.0).sum(0)
    if fixed:  # pooled within-sample deviation: one sigma shared by every sample
        dof = np.maximum(count - 1, 0).sum()
        sd = np.full(phi.shape[1], np.sqrt(squares.sum() / dof) if dof > 0 else 0.0)
    else:  # ddof = 1; a single model gives 0, i.e. the floor
        sd = np.sqrt(squares / np.maximum(count - 1, 1))
    return count, np.where(count > 0, mean, np.nan), np.maximum(sd, floor)


def fit_gaussians(phi: np.ndarray, trained_on: np.ndarray, sigma_floor: float = 0.1,
                  fixed_variance: bool = False) -> GaussianFit:
    """LiRA's per-sample in/out Gaussians of φ from (K, N) values and (K, N) membership."""
    phi, trained_on = _check(phi, trained_on)
    if not sigma_floor > 0:
        raise HarnessError(f"sigma_floor must be > 0, got {sigma_floor!r}")
    n_in, mu_in, sd_in = _group(phi, trained_on, sigma_floor, fixed_variance)
    n_out, mu_out, sd_out = _group(phi, ~trained_on, sigma_floor, fixed_variance)
    return GaussianFit(mu_in, sd_in, mu_out, sd_out, n_in, n_out)


def gaussian_auroc(fit: GaussianFit) -> np.ndarray:
    """Φ((μ_in − μ_out)/√(σ_in² + σ_out²)) per sample, NaN where a group is empty."""
    from scipy import stats  # scipy.stats and sklearn.metrics are imported where used: ~1 s a CLI need not pay

    z = (fit.mu_in - fit.mu_out) / np.sqrt(fit.sigma_in**2 + fit.sigma_out**2)
    return np.where(fit.defined, stats.norm.cdf(z), np.nan)


def empirical_auroc(phi: np.ndarray, trained_on: np.ndarray) -> np.ndarray:
    """Per-sample Mann-Whitney AUROC of in- against out-values (ties ½), NaN where a group is
    empty: each column's ranks (average over ties) summed over its in-models give U."""
    from scipy import stats

    phi, trained_on = _check(phi, trained_on)
    ranks = stats.rankdata(phi, axis=0)
    n_in = trained_on.sum(0)
    n_out = phi.shape[0] - n_in
    u = np.where(trained_on, ranks, 0.0).sum(0) - n_in * (n_in + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n_in * n_out)
    return np.where((n_in > 0) & (n_out > 0), auc, np.nan)


def vulnerability(phi: np.ndarray, trained_on: np.ndarray, method: str = "gaussian",
                  sigma_floor: float = 0.1, fixed_variance: bool = False) -> np.ndarray:
    """v_i (see the module docstring): NaN for samples that no model or every model trained on."""
    if method == "gaussian":
        return gaussian_auroc(fit_gaussians(phi, trained_on, sigma_floor, fixed_variance))
    if method == "empirical":
        return empirical_auroc(phi, trained_on)
    raise HarnessError(f"unknown vulnerability {method!r}; valid: {', '.join(VULNERABILITIES)}")


def lira_scores(phi: np.ndarray, trained_on: np.ndarray, sigma_floor: float = 0.1,
                fixed_variance: bool = False) -> np.ndarray:
    """(K, N) leave-one-model-out online LiRA scores (log likelihood ratio in/out, higher = more
    likely a member); NaN where the refit without model k leaves a group empty."""
    from scipy import stats

    phi, trained_on = _check(phi, trained_on)
    k = phi.shape[0]
    if k < 3:
        raise HarnessError(f"leave-one-model-out LiRA needs at least 3 models, got {k}")
    scores = np.full(phi.shape, np.nan)
    for j in range(k):
        rest = np.arange(k) != j
        fit = fit_gaussians(phi[rest], trained_on[rest], sigma_floor, fixed_variance)
        llr = (stats.norm.logpdf(phi[j], fit.mu_in, fit.sigma_in)
               - stats.norm.logpdf(phi[j], fit.mu_out, fit.sigma_out))
        scores[j] = np.where(fit.defined, llr, np.nan)
    return scores


@dataclass(frozen=True)
class AttackResult:
    """The attack over all defined (model, sample) pairs: ROC curve and its summary figures."""

    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    tpr_at: dict[float, float]
    pairs: int

    def rows(self) -> dict[str, float]:
        return {"lira_auroc": self.auroc, **{FPR_TARGETS[a]: t for a, t in self.tpr_at.items()}}


def attack_metrics(scores: np.ndarray, members: np.ndarray) -> AttackResult:
    """AUROC and TPR at each of FPR_TARGETS of scores against membership; NaN scores dropped."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.asarray(scores, dtype=np.float64).ravel()
    members = np.asarray(members, dtype=bool).ravel()
    keep = np.isfinite(scores)
    scores, members = scores[keep], members[keep]
    if members.all() or not members.any():
        nan = float("nan")
        return AttackResult(np.array([]), np.array([]), nan, dict.fromkeys(FPR_TARGETS, nan), int(keep.sum()))
    # every threshold kept: dropping collinear points could drop the best TPR below a target FPR
    fpr, tpr, _ = roc_curve(members, scores, drop_intermediate=False)
    tpr_at = {a: float(tpr[fpr <= a].max()) for a in FPR_TARGETS}
    return AttackResult(fpr, tpr, float(roc_auc_score(members, scores)), tpr_at, int(keep.sum()))
