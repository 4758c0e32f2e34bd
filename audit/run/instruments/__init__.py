"""The built-in instruments; importing this package registers each of them (one module each).

The import order is the run order (cheap checks first, then maps, then internals, then the
interventions whose tables other instruments read).
"""
# isort: skip_file
# ruff: noqa: F401
import audit.run.instruments.predictions
import audit.run.instruments.metrics
import audit.run.instruments.verify
import audit.run.instruments.gradcam
import audit.run.instruments.lrp
import audit.run.instruments.attribution
import audit.run.instruments.probes
import audit.run.instruments.patching
import audit.run.instruments.geometry
import audit.run.instruments.ablation
import audit.run.instruments.shapley
import audit.run.instruments.truthfulness
