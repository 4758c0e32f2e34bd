"""Cases and cohorts, NIfTI manifests, 2-D image files, atlas ROIs."""

from audit.data.cohort import Case, Cohort, CohortDataset, EmptyMaskWarning, ManifestError, collate, slices_from_volumes
from audit.data.images import read_images
from audit.data.nifti import read_manifest, write_nifti

__all__ = ["Case", "Cohort", "CohortDataset", "EmptyMaskWarning", "ManifestError", "collate", "slices_from_volumes",
           "read_images", "read_manifest", "write_nifti"]
