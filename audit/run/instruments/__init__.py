"""The built-in instruments; importing this package registers each of them (one module each).

The import order is the run order (cheap checks first, then maps, then internals, then the
interventions whose tables other instruments read).
"""
# isort: skip_file
# ruff: noqa: F401
from audit.run.instruments import predictions
from audit.run.instruments import metrics
from audit.run.instruments import verify
from audit.run.instruments import gradcam
from audit.run.instruments import lrp
from audit.run.instruments import attribution
from audit.run.instruments import probes
from audit.run.instruments import patching
from audit.run.instruments import geometry
from audit.run.instruments import ablation
from audit.run.instruments import shapley
from audit.run.instruments import truthfulness
