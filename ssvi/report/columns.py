"""The report's vocabulary: metric column names, their display labels, number formats and directions,
the verdict words, and the caption notes every table repeats. Imported by every other module of
``ssvi.report``; holds no logic.
"""

from __future__ import annotations

METRICS = ["acc_pct", "nll", "ece", "ece_ssvi", "brier"]  # the paper's set (also the shift tables')
VIEWS = ["ace", "aurc", "augrc"]              # adaptive ECE and selective prediction (ssvi.metrics, ssvi.selective)
MAIN_METRICS = METRICS + VIEWS                # main table and density sweep
CALIBRATED = ["t_nll", "t_ece", "t_ace", "t_brier"]  # after cross-fitted temperature scaling (ssvi.temperature)
TEMPERATURE = "temperature"                   # per run: the mean of its two fitted temperatures
FLOPS = ["train_flops", "test_flops"]
TIME = ["train_time_s"]                       # measured training wall-clock per run (metrics.json provenance)
OOD_METRICS = ["auroc", "aupr_in", "aupr_out", "fpr95"]
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
    "ace": "adaptive ECE (15 equal-mass bins)",
    "aurc": "AURC",
    "augrc": "AUGRC",
    "t_nll": "NLL, T-scaled",
    "t_ece": "ECE, T-scaled",
    "t_ace": "adaptive ECE, T-scaled",
    "t_brier": "Brier, T-scaled",
    "temperature": "T (fitted)",
    "train_flops": "train FLOPs",
    "test_flops": "test FLOPs",
    "train_time_s": "train time (s)",
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "fpr95": "FPR95",
}
FORMATS = {"acc_pct": ".2f", "nll": ".4f", "ece": ".4f", "ece_ssvi": ".4f", "brier": ".4f", "ace": ".4f",
           "aurc": ".4f", "augrc": ".4f", "t_nll": ".4f", "t_ece": ".4f", "t_ace": ".4f", "t_brier": ".4f",
           "temperature": ".3f", "train_flops": ".3g", "test_flops": ".3g", "train_time_s": ".3g", "auroc": ".4f",
           "aupr_in": ".4f", "aupr_out": ".4f", "fpr95": ".4f"}
SHORT = {"acc_pct": "acc", "nll": "NLL", "ece": "ECE", "ece_ssvi": "ECE (authors')", "brier": "Brier",
         "ace": "adaptive ECE", "aurc": "AURC", "augrc": "AUGRC", "t_nll": "NLL (T-scaled)", "t_ece": "ECE (T-scaled)",
         "t_ace": "adaptive ECE (T-scaled)", "t_brier": "Brier (T-scaled)", "auroc": "AUROC"}
HIGHER_IS_BETTER = {"acc_pct": True, "nll": False, "ece": False, "ece_ssvi": False, "brier": False, "ace": False,
                    "aurc": False, "augrc": False, "t_nll": False, "t_ece": False, "t_ace": False, "t_brier": False,
                    "auroc": True, "aupr_in": True, "aupr_out": True, "fpr95": False}

# claim verdicts (ssvi.report.claims) and paper-comparison verdicts (ssvi.report.paper)
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
NOT_ENOUGH, NOT_EVALUATED, NOT_TESTED = "not enough runs", "not evaluated", "not tested"
NOT_AVAILABLE = "not available"  # a view a run's files predate (caption: which runs, and how to get it)
WITHIN, OUTSIDE, NOT_FILLED, NO_RUNS = "within tolerance", "outside tolerance", "paper value not filled", "no runs"

ECE_NOTE = ("ECE = top-label L1 ECE, 15 equal-width bins (Guo et al. 2017); ECE (authors') = "
            "uncertainty-calibration get_calibration_error defaults (class-wise, debiased L2, 15 equal-mass bins)")
FLOPS_NOTE = ("FLOPs are FLOPs (2 per multiply-add), not MACs; train FLOPs = whole training run (post-hoc "
              "includes its dense VI source), test FLOPs = one forward pass per image; FLOPs are counts: no interval")
STD_NOTE = ("mean ± std [95% interval] over seeds (std with ddof = 1; '—' when n = 1): the interval is the Student-t "
            "interval of the seed mean (n − 1 degrees of freedom) intersected with the metric's range, also in the "
            "CSV as <metric>_ci_low/_ci_high (empty when n = 1)")
TIME_NOTE = ("train time = measured training wall-clock of the run (metrics.json provenance.wall_time_s; "
             "post-hoc adds its dense VI source's), on the device named")
OOD_NOTE = ("OOD scores, higher score = more in-distribution: max_prob = maximum softmax probability of the "
            "posterior predictive, neg_entropy = negative predictive entropy, neg_mutual_info = negative mutual "
            "information between prediction and weights (epistemic; none for point estimates, for ensembles over "
            "every member's samples); AUROC; AUPR-In = average precision with the in-distribution test set as the "
            "positive class; AUPR-Out = average precision with the OOD set as the positive class, ranked by the "
            "negated score; FPR95 = fraction of OOD inputs scored at or above the threshold where 95% of "
            "in-distribution inputs pass (FPR at 95% TPR, lower is better)")
VIEWS_NOTE = ("adaptive ECE = top-label L1 ECE over 15 equal-mass bins (torch-uncertainty's AdaptiveCalibrationError); "
              "AURC / AUGRC = area under the (generalized) risk-coverage curve of the max-probability ranking, ties "
              "averaged (torch-uncertainty's AURC / AUGRC), lower is better")
