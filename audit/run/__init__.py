"""One audit run from one config: config, instrument plug-ins, context, runner, result store."""

from audit.run.config import ConfigError, RunConfig, load_config, parse_config
from audit.run.plugin import INSTRUMENTS, Instrument, Params, Unit, register
from audit.run.runner import RunSummary, run_audit

__all__ = [
           "INSTRUMENTS",
           "ConfigError",
           "Instrument",
           "Params",
           "RunConfig",
           "RunSummary",
           "Unit",
           "load_config",
           "parse_config",
           "register",
           "run_audit",
]
