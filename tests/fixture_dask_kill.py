"""A workflow on a Dask LocalCluster for the driver-kill test: run as ``python -m``.

``make`` returns an 8 MB array (held on its worker, saved by the worker into the state
folder) and appends a line to ``<tmp>/made``; ``wait`` writes ``<tmp>/waiting``, then
blocks until ``<tmp>/gate`` exists.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from flowforge import DaskExecutor, task, workflow


def build(tmp: str):
    with workflow("dask-kill", state_dir=os.path.join(tmp, "state"), log_dir=None,
                  quiet=True, progress=False) as wf:
        @task
        def make() -> np.ndarray:
            with open(os.path.join(tmp, "made"), "a") as f:
                f.write("made\n")
            return np.arange(1 << 20, dtype=np.int64)

        @task
        def wait(make: np.ndarray) -> int:
            open(os.path.join(tmp, "waiting"), "w").close()
            while not os.path.exists(os.path.join(tmp, "gate")):
                time.sleep(0.02)
            return int(make.sum())

    return wf


def executor() -> DaskExecutor:
    return DaskExecutor(n_workers=2, threads_per_worker=1, processes=True)


if __name__ == "__main__":
    result = build(sys.argv[1]).run(executor=executor())
    print("status", result.status.value, flush=True)
