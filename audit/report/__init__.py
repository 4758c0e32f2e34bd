"""Findings and the audit report, computed from the tables an audit run wrote (never from the model)."""

from audit.report.findings import Evidence, Finding, Findings, evaluate_findings
from audit.report.tables import RunTables

__all__ = ["Evidence", "Finding", "Findings", "RunTables", "evaluate_findings"]
