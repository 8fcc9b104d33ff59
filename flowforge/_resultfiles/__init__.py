"""Result files: large results handed between workers by reference, not by copy.

One concept, three modules:

* ``format.py``: the file (layout, writing, mapping back, checking) and
  :class:`ResultFile`, the handle to one; :class:`FilePolicy` says where and from what
  size a worker writes one;
* ``handles.py``: :class:`Handle`, what the driver holds instead of a large value (a
  result file, or a result kept on a Dask worker), and bringing values back;
* ``scratch.py``: where a run's files go (the state folder, or ``/dev/shm``), and
  removing them (at the run's end, or left by a driver that died).
"""

from __future__ import annotations

from .format import FilePolicy, ResultFile, dump_outcome, header_digest, load_file, write_file
from .handles import Handle, hold_all, holds_handles, map_inputs, materialize, materialize_inputs
from .scratch import plan_files, remove_files, scratch_folder, sweep_stale

__all__ = [
    "FilePolicy", "Handle", "ResultFile", "dump_outcome", "header_digest", "hold_all",
    "holds_handles", "load_file", "map_inputs", "materialize", "materialize_inputs",
    "plan_files", "remove_files", "scratch_folder", "sweep_stale", "write_file",
]
