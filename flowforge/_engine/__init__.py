"""The run: one loop over composed parts. Internal; users call ``Workflow.run()``.

The loop decides what starts and when; every other part is a plain object that owns its
own state and answers the loop's questions. None of them calls back into the loop.

Module map (each module owns one thing):

* ``loop.py``: :class:`Engine`, the one scheduling loop, with the design essay;
* ``spec.py``: :class:`RunSpec`, what one run is made of, as run assembly hands it over;
* ``lifecycle.py``: task records and :func:`move`, the only writer of a task's state;
* ``gate.py``: run, skip or fail a ready task (triggers, branches, conditions);
* ``admission.py``: CPU, memory, GPU, pool and rate limits; a null admission for runs
  that declare none;
* ``dispatch.py``: handing attempts to executors and turning futures into outcomes;
* ``timers.py``: attempt deadlines, retry delays, the run deadline, rate-limit tokens;
* ``fanout.py``: map items and loop iterations as units;
* ``arguments.py``: an attempt's keyword arguments from its binding;
* ``results.py``: results in memory, loaded back from state, or held as handles;
* ``ledger.py``: ending tasks: final state, save, event, and what becomes ready;
* ``recorder.py``: outcomes saved through the run session;
* ``report.py``: the run's status, its ``RunResult`` and start/finish events;
* ``cancel.py``: the cancel token, the one way to stop a run.
"""

from __future__ import annotations

from .loop import Engine
from .spec import RunSpec

__all__ = ["Engine", "RunSpec"]
