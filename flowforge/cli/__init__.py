"""The ``flowforge`` command (also ``python -m flowforge``): run workflows, read their
history from the state folder, schedule them, draw them.

Every command is a thin face over the Python API (:func:`flowforge.load`,
:meth:`Workflow.run`, :class:`PersistenceManager`, :class:`Scheduler`, the exports).
Exit codes: 0 success, 1 a run that failed, 2 a usage or definition error. Read commands
take ``--json`` for scripts.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
