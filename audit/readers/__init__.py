"""Reader-study statistics (index)."""

from audit.readers.study import *  # noqa: F401,F403
from audit.readers.study import __all__  # noqa: F401
