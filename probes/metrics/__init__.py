"""Metrics of maps and models: localisation, faithfulness, truthfulness, ROC/DeLong."""
