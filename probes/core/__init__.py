"""The shared vocabulary of every instrument: validators and their error types, the model
interface and state, one ROI resizer, bootstrap indices and Dice, and the result protocol."""

from probes.core.errors import (AuditInputError, ClassIndexError, InputTypeError, LabelError, NonFiniteError,
                                OptionError, ShapeError, UndefinedValueWarning, warn_undefined)

from probes.core.model import (AuditAdapter, ModelInterface, ModelSnapshot, Output, UnsupportedModelError,
                               as_audit_model, class_probabilities, model_device, model_interface, model_state, output_probabilities)
from probes.core.resize import resize_mask
from probes.core.result import Result, Summary, TableResult, long_frame, render_summary, tidy
from probes.core.stats import bootstrap_indices, dice
from probes.core.validate import (Target, as_case_ids, as_input, as_labels, as_maps, as_mask, as_masks,
                                  as_targets, check_alpha, check_choice, check_class_range, check_int, to_numpy)

__all__ = ["AuditInputError", "ClassIndexError", "InputTypeError", "LabelError", "NonFiniteError", "OptionError",
           "ShapeError", "UndefinedValueWarning", "warn_undefined", "AuditAdapter", "ModelInterface", "ModelSnapshot", "Output", "UnsupportedModelError", "as_audit_model", "class_probabilities", "model_device",
           "model_interface", "model_state", "output_probabilities", "resize_mask", "Result", "Summary",
           "TableResult", "long_frame", "render_summary", "tidy", "bootstrap_indices", "dice", "Target",
           "as_case_ids", "as_input", "as_labels", "as_maps", "as_mask", "as_masks", "as_targets", "check_alpha",
           "check_choice", "check_class_range", "check_int", "to_numpy"]
