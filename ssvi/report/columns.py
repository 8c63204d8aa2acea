"""The report's vocabulary: metric column names, their display labels, number formats and directions,
the verdict words, and the caption notes every table repeats. Imported by every other module of
``ssvi.report``; holds no logic.
"""

from __future__ import annotations

METRICS = ["acc_pct", "nll", "ece", "ece_ssvi", "brier"]
FLOPS = ["train_flops", "test_flops"]
TIME = ["train_time_s"]                       # measured training wall-clock per run (metrics.json provenance)
OOD_METRICS = ["auroc", "aupr", "fpr95"]
OOD_SCORES = ["max_prob", "neg_entropy", "neg_mutual_info"]  # ssvi/shift.py's order; unknown scores follow
CELL_KEYS = ["dataset", "arch", "method", "density"]
STAGES = ("start", "middle", "end")
SEVERITY_ALL = "all"  # the shift table's row: mean over every corruption and severity

LABELS = {
    "acc_pct": "acc (%)",
    "nll": "NLL",
    "ece": "ECE (top-label L1, 15 bins)",
    "ece_ssvi": "ECE (authors', uncertainty-calibration)",
    "brier": "Brier",
    "train_flops": "train FLOPs",
    "test_flops": "test FLOPs",
    "train_time_s": "train time (s)",
    "auroc": "AUROC",
    "aupr": "AUPR",
    "fpr95": "FPR95",
}
FORMATS = {"acc_pct": ".2f", "nll": ".4f", "ece": ".4f", "ece_ssvi": ".4f", "brier": ".4f",
           "train_flops": ".3g", "test_flops": ".3g", "train_time_s": ".3g", "auroc": ".4f", "aupr": ".4f",
           "fpr95": ".4f"}
SHORT = {"acc_pct": "acc", "nll": "NLL", "ece": "ECE", "ece_ssvi": "ECE (authors')", "brier": "Brier"}
HIGHER_IS_BETTER = {"acc_pct": True, "nll": False, "ece": False, "ece_ssvi": False, "brier": False,
                    "auroc": True, "aupr": True, "fpr95": False}

# claim verdicts (ssvi.report.claims) and paper-comparison verdicts (ssvi.report.paper)
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
NOT_ENOUGH, NOT_EVALUATED = "not enough runs", "not evaluated"
WITHIN, OUTSIDE, NOT_FILLED, NO_RUNS = "within tolerance", "outside tolerance", "paper value not filled", "no runs"

ECE_NOTE = ("ECE = top-label L1 ECE, 15 equal-width bins (Guo et al. 2017); ECE (authors') = "
            "uncertainty-calibration get_calibration_error defaults (class-wise, debiased L2, 15 equal-mass bins)")
FLOPS_NOTE = ("FLOPs are FLOPs (2 per multiply-add), not MACs; train FLOPs = whole training run (post-hoc "
              "includes its dense VI source), test FLOPs = one forward pass per image")
STD_NOTE = ("mean ± std over seeds (std with ddof = 1; '—' when n = 1); CSV: <metric>_ci_low/_ci_high = 95% "
            "t interval of the seed mean (scipy.stats.t, n − 1 degrees of freedom; empty when n = 1)")
TIME_NOTE = ("train time = measured training wall-clock of the run (metrics.json provenance.wall_time_s; "
             "post-hoc adds its dense VI source's), on the device named")
OOD_NOTE = ("OOD scores, higher score = more in-distribution: max_prob = maximum softmax probability of the "
            "posterior predictive, neg_entropy = negative predictive entropy, neg_mutual_info = negative mutual "
            "information between prediction and weights (epistemic); AUROC; AUPR = average precision with the "
            "in-distribution test set as the positive class; FPR95 = fraction of OOD inputs scored at or above "
            "the threshold where 95% of in-distribution inputs pass (FPR at 95% TPR, lower is better)")
