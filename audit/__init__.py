"""Composition around the probes: loading, data, config, running, statistics, report and CLI."""
