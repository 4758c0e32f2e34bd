"""Reader-study statistics: a reads table in (one row per reader × case × phase), frozen results out.

Every instrument takes ``(reads, columns=ReadColumns(), *, ...)`` and returns a
:class:`probes.core.Result` (``to_frame()`` tidy, ``tables()``, ``summary()``) that keeps its
native tables as attributes; the array-level functions take ``labels`` (0/1 per case) and scores.
"""

# the reads table: column names, validation, errors
from audit.readers.reads import ReadColumns, ReadsError, validate_reads
# everything the columns allow, in one call (tables written as CSV)
from audit.readers.study import ReaderStudyResult, analyze_reads
# odds ratio of a correct read per phase: binomial GEE clustered by patient
from audit.readers.gee import (GEEAssistance, GEEConvergenceError, GEEConvergenceWarning, GEEFit, fit_gee,
                               gee_assistance)
# patient (cluster) bootstrap of accuracy, sensitivity, specificity, AUC per phase; readers fixed
from audit.readers.bootstrap import BootstrapResult, OneClassResampleWarning, cluster_bootstrap
# MRMC ROC analysis, random readers and cases: Obuchowski–Rockette and Dorfman–Berbaum–Metz
from audit.readers.mrmc import mrmc_or
from audit.readers.dbm import mrmc_dbm
from audit.readers.mrmc_result import MRMCResult
# DeLong comparison of two AUCs (paired or unpaired)
from probes.metrics.roc import delong
# ROC curves per reader and phase, reader-averaged curve
from audit.readers.roc import ReaderROC, reader_roc, roc_points, vertical_average
# calibration: reliability curve, Brier, ECE, logistic recalibration
from audit.readers.calibration import (CalibrationFit, ReadsCalibration, brier_score, calibration_fit,
                                       expected_calibration_error, reads_calibration, reliability_curve)
# decision curves: net benefit against treat-all / treat-none
from audit.readers.decision import DecisionCurve, decision_curve, net_benefit, reads_decision_curve
# outcomes and decision changes between phases; McNemar, Cochran's Q
from audit.readers.outcomes import (cochran_q_correctness, decision_changes, mcnemar_correctness, outcome_counts,
                                    outcome_transitions)
# simulated studies with a known effect of AI assistance
from audit.readers.simulate import example_reads, simulate_reads, write_example_reads
# result base classes: native (wide) tables as attributes, tidy views
from audit.readers.result import ReaderResult, ReaderTable

__all__ = ["ReadColumns", "ReadsError", "validate_reads", "ReaderStudyResult", "analyze_reads", "GEEAssistance",
           "GEEConvergenceError", "GEEConvergenceWarning", "GEEFit", "fit_gee", "gee_assistance", "BootstrapResult",
           "OneClassResampleWarning", "cluster_bootstrap", "mrmc_or", "mrmc_dbm", "MRMCResult", "delong",
           "ReaderROC", "reader_roc", "roc_points", "vertical_average", "CalibrationFit", "ReadsCalibration",
           "brier_score", "calibration_fit", "expected_calibration_error", "reads_calibration", "reliability_curve",
           "DecisionCurve", "decision_curve", "net_benefit", "reads_decision_curve", "cochran_q_correctness",
           "decision_changes", "mcnemar_correctness", "outcome_counts", "outcome_transitions", "example_reads",
           "simulate_reads", "write_example_reads", "ReaderResult", "ReaderTable"]
