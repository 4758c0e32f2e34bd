"""The synthetic four-contrast cohort from the MNI152 template, with planted mechanisms."""

from audit.synthetic.generator import SyntheticConfig, draw_mechanisms, make_cohort, make_splits, to_nifti

__all__ = ["SyntheticConfig", "draw_mechanisms", "make_cohort", "make_splits", "to_nifti"]
