"""What the model needs: anatomical and intensity ablations, contrast Shapley values and rankings.

* :func:`ablation_study` (``AblationStudy``) — ROC of the model with ROIs or the brightest voxels
  removed, with DeLong tests against the unablated ROC; :func:`ablate`, :func:`ablation_mask`,
  :func:`parse_spec` for the spec language.
* :func:`contrast_shapley` (``ContrastShapley``) — exact Shapley values of the input contrasts;
  :func:`exact_shapley` for any game over up to 12 players; with the marginal fill it reports
  how well donors align with recipients (``MisalignedDonorsWarning`` below ``ALIGNMENT_MIN_DICE``).
* :func:`contrast_ranking`, :func:`normalized_spearman_footrule`, :func:`ranking_variance`
  (``RankingVariance``), :func:`baseline_disagreement` (``BaselineDisagreement``).
"""

from probes.interventions.ablation import (FILLS, KNOWN_ROIS, AblationSpec, AblationStudy, ablate, ablation_mask,
                                           ablation_study, parse_spec)
from probes.interventions.alignment import ALIGNMENT_MIN_DICE, MisalignedDonorsWarning
from probes.interventions.shapley import (ContrastShapley, EfficiencyWarning, coalition_masks, contrast_shapley,
                                          exact_shapley, shapley_from_values)
from probes.interventions.shapley_rank import (BaselineDisagreement, RankingVariance, baseline_disagreement,
                                               contrast_ranking, footrule_max, normalized_spearman_footrule,
                                               ranking_variance)

__all__ = ["AblationSpec", "AblationStudy", "KNOWN_ROIS", "FILLS", "parse_spec", "ablation_mask", "ablate",
           "ablation_study", "ContrastShapley", "EfficiencyWarning", "coalition_masks", "contrast_shapley",
           "exact_shapley", "shapley_from_values", "BaselineDisagreement", "RankingVariance",
           "baseline_disagreement", "contrast_ranking", "footrule_max", "normalized_spearman_footrule",
           "ranking_variance", "ALIGNMENT_MIN_DICE", "MisalignedDonorsWarning"]
