"""A workflow for the kill -9 test of large results: run as ``python -m`` in a subprocess.

Task ``make`` returns a 4 MB array (so it is handed over through ``/dev/shm``); task
``wait`` blocks until the file named by argv[2] exists, so the test can kill the driver
while the array's file is there.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from flowforge import task, workflow


def build(state_dir: str, gate: str, autosave: bool):
    with workflow("handoff-kill", executor="process", max_workers=2, state_dir=state_dir,
                  autosave=autosave, log_dir=None, quiet=True) as wf:
        @task
        def make() -> np.ndarray:
            return np.arange(1 << 19, dtype=np.int64)

        @task
        def wait(make: np.ndarray) -> int:
            print("waiting", flush=True)
            while not os.path.exists(gate):
                time.sleep(0.02)
            return int(make.sum())

    return wf


if __name__ == "__main__":
    result = build(sys.argv[1], sys.argv[2], sys.argv[3] == "on").run()
    print("status", result.status.value, flush=True)
