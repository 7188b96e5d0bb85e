"""Merge strategies, one module each, registered in ``STRATEGIES`` on import (see ``adamergex.strategy``)."""

from . import adamergex  # noqa: F401
from . import dare  # noqa: F401
from . import dare_ties  # noqa: F401
from . import madx_stack  # noqa: F401
from . import source_only  # noqa: F401
from . import structure_adaptive  # noqa: F401
from . import task_arithmetic  # noqa: F401
from . import ties  # noqa: F401
