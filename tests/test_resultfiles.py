"""Large results between process workers by reference (see flowforge/_resultfiles/)."""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowforge import PersistenceManager, task, workflow
from flowforge.errors import StateError
from flowforge.executors import ProcessExecutor
from flowforge.persistence.records import RESULT_FILE

N = 1 << 20  # int64 items: an 8 MB array, over the 1 MB default threshold


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


def _shm_files() -> set[str]:
    return set(glob.glob(f"/dev/shm/flowforge-{os.getpid()}-*"))


def _big_workflow(tmp_path: Path, autosave: bool, fail_b: bool = False, **options):
    with workflow("big", executor=ProcessExecutor(2), state_dir=str(tmp_path / "state"),
                  autosave=autosave, log_dir=None, quiet=True, **options) as wf:
        @task
        def a() -> np.ndarray:
            return np.arange(N, dtype=np.int64)

        @task
        def b(a: np.ndarray) -> tuple[str, bool, str]:
            if fail_b and not os.path.exists(str(tmp_path / "fixed")):
                raise RuntimeError("b fails until fixed")
            a[0] = 42  # copy-on-write: the producer's saved bytes stay as they were
            return _digest(a), bool(a.flags.writeable), type(a).__name__

        @task(executor="thread")
        def c(a: np.ndarray) -> str:
            return _digest(a)

    return wf


@pytest.mark.parametrize("autosave", [False, True], ids=["autosave-off", "autosave-on"])
def test_large_array_arrives_intact_and_leaves_no_shared_memory(tmp_path, autosave):
    """A large array reaches process and thread consumers intact, and /dev/shm is clean."""
    expected = np.arange(N, dtype=np.int64)
    modified = expected.copy()
    modified[0] = 42
    before = _shm_files()
    result = _big_workflow(tmp_path, autosave).run()
    assert result.ok, result.error
    assert result["b"] == (_digest(modified), True, "ndarray")
    assert result["c"] == _digest(expected)
    assert _digest(result["a"]) == _digest(expected)
    assert _shm_files() == before
    if autosave:
        shared = glob.glob(str(tmp_path / "state" / "*" / "*.blobs" / "s-*.shr"))
        assert len(shared) == 1 and not glob.glob(str(tmp_path / "state" / "*" / "*" / "*.tmp"))
        assert oct(os.stat(shared[0]).st_mode & 0o777) == "0o600"


def test_failed_run_leaves_no_shared_memory(tmp_path):
    """A run whose consumer fails still removes its /dev/shm files."""
    before = _shm_files()
    result = _big_workflow(tmp_path, autosave=False, fail_b=True).run()
    assert result.status.value == "failed"
    assert _shm_files() == before


def test_worker_crash_leaves_no_shared_memory(tmp_path):
    """A consumer whose worker dies (os._exit) fails the run; /dev/shm is still cleaned."""
    with workflow("crash", executor="process", max_workers=2, autosave=False, log_dir=None,
                  quiet=True) as wf:
        @task
        def a() -> np.ndarray:
            return np.ones(N)

        @task
        def b(a: np.ndarray) -> None:
            os._exit(3)

    before = _shm_files()
    result = wf.run()
    assert result.status.value == "failed"
    assert "exited with code 3" in str(result.tasks["b"].error)
    assert _shm_files() == before


def test_resume_loads_the_large_result_from_the_state_folder(tmp_path):
    """A resumed run restores the large result from its saved file, not by running again."""
    wf = _big_workflow(tmp_path, autosave=True, fail_b=True)
    first = wf.run()
    assert first.status.value == "failed"
    (tmp_path / "fixed").touch()
    second = wf.run()
    assert second.ok and second.resumed, second.error
    assert second.tasks["a"].restored
    modified = np.arange(N, dtype=np.int64)
    modified[0] = 42
    assert second["b"][0] == _digest(modified)
    saved = PersistenceManager(tmp_path / "state").load(second.run_id)
    assert _digest(saved.results["a"]) == _digest(np.arange(N, dtype=np.int64))


def test_altered_shared_file_is_refused(tmp_path):
    """A result file whose in-band part was altered is refused before unpickling."""
    result = _big_workflow(tmp_path, autosave=True).run()
    assert result.ok
    (path,) = glob.glob(str(tmp_path / "state" / "*" / "*.blobs" / "s-*.shr"))
    data = bytearray(Path(path).read_bytes())
    data[40] ^= 0xFF  # inside the marshalled header
    Path(path).write_bytes(bytes(data))
    saved = PersistenceManager(tmp_path / "state").load(result.run_id)
    with pytest.raises(StateError, match="not the file this run saved"):
        saved.results["a"]


def test_damaged_shared_data_is_refused_at_resume(tmp_path):
    """A saved large result whose array bytes changed fails its checksum on loading."""
    result = _big_workflow(tmp_path, autosave=True).run()
    assert result.ok
    (path,) = glob.glob(str(tmp_path / "state" / "*" / "*.blobs" / "s-*.shr"))
    with open(path, "r+b") as f:
        f.seek(-4096, os.SEEK_END)
        f.write(bytes(4096))
    saved = PersistenceManager(tmp_path / "state").load(result.run_id)
    with pytest.raises(StateError, match="fails its checksum"):
        saved.results["a"]


def test_the_state_key_never_travels_to_workers(tmp_path):
    """Attempts sent to process workers carry no secret of the state folder."""
    from flowforge._private import remote

    wf = _big_workflow(tmp_path, autosave=True)
    sent: list[bytes] = []
    original = remote.pack_batch

    def spy(calls):
        data = original(calls)
        sent.append(data)
        return data

    remote.pack_batch = spy
    try:
        assert wf.run().ok
    finally:
        remote.pack_batch = original
    key = (tmp_path / "state" / ".flowforge-key").read_bytes()
    assert sent and not any(key in data for data in sent)


def test_mapped_large_results_and_bytes(tmp_path):
    """Each map item's large result is shared; large bytes and bytearray come back as such."""
    with workflow("mapped", executor="process", max_workers=2, autosave=False, log_dir=None,
                  quiet=True) as wf:
        @task
        def sizes() -> list[int]:
            return [1, 2, 3]

        @task(map="sizes")
        def arrays(sizes: int) -> np.ndarray:
            return np.full(N, sizes, dtype=np.int64)

        @task
        def total(arrays: list[np.ndarray]) -> list[int]:
            return [int(a[-1]) for a in arrays]

        @task
        def blob() -> bytes:
            return b"x" * (2 << 20)

        @task
        def buffer() -> bytearray:
            return bytearray(b"y" * (2 << 20))

        @task
        def check(blob: bytes, buffer: bytearray) -> tuple[str, str, int]:
            return type(blob).__name__, type(buffer).__name__, len(blob) + len(buffer)

    before = _shm_files()
    result = wf.run()
    assert result.ok, result.error
    assert result["total"] == [1, 2, 3]
    assert result["check"] == ("bytes", "bytearray", 4 << 20)
    assert result["blob"] == b"x" * (2 << 20)
    assert _shm_files() == before


def test_threshold_none_sends_results_through_the_pipe(tmp_path):
    """share_threshold=None keeps the old path: no file anywhere."""
    with workflow("pipe", executor=ProcessExecutor(2, share_threshold=None),
                  state_dir=str(tmp_path / "state"), log_dir=None, quiet=True) as wf:
        @task
        def a() -> np.ndarray:
            return np.ones(N)

        @task
        def b(a: np.ndarray) -> float:
            return float(a.sum())

    assert wf.run()["b"] == N
    assert not glob.glob(str(tmp_path / "state" / "*" / "*.blobs" / "*.shr"))


def test_bad_threshold_is_refused():
    """A negative or non-integer share_threshold is a clear error."""
    with pytest.raises(ValueError, match="share_threshold"):
        ProcessExecutor(2, share_threshold=-1)


def test_kill_9_driver_then_next_run_cleans_shared_memory(tmp_path):
    """Files of a SIGKILLed driver are removed by the next run that shares results."""
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixture_resultfiles", str(tmp_path / "state"), str(gate),
         "off"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed by the worker running 'wait'
        assert line.strip() == "waiting", line
        left = glob.glob(f"/dev/shm/flowforge-{proc.pid}-*")
        assert left, "the array should be in /dev/shm while its consumer runs"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    gate.touch()  # the orphaned worker exits on its own once it sees its driver gone
    assert glob.glob(f"/dev/shm/flowforge-{proc.pid}-*"), "a kill -9 leaves the file behind"
    result = _big_workflow(tmp_path, autosave=False).run()
    assert result.ok
    assert not glob.glob(f"/dev/shm/flowforge-{proc.pid}-*")


def test_shared_record_kind_is_written(tmp_path):
    """With autosave the large result is journalled as RESULT_FILE, not pickled again."""
    result = _big_workflow(tmp_path, autosave=True).run()
    saved = PersistenceManager(tmp_path / "state").load(result.run_id)
    assert saved.info.status == "succeeded"
    from flowforge.persistence.journal import read_journal

    store = PersistenceManager(tmp_path / "state").store
    journal = read_journal(store, "big", result.run_id)
    assert journal.slots["a"][1] == RESULT_FILE
    assert not glob.glob(str(tmp_path / "state" / "*" / "*.blobs" / "*.pkl"))


def test_sweep_trusts_the_run_lock_not_the_pid(tmp_path):
    """Files of a run whose lock is held survive a sweep even when their pid means
    nothing here (another PID namespace); once the holder dies they are swept."""
    from flowforge._resultfiles import sweep_stale

    folder = tmp_path / "shm"
    folder.mkdir()
    prefix = "flowforge-999999999-20260101T000000-abcdef-"
    (folder / (prefix + "0123.shr")).write_bytes(b"data")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(folder / (prefix + 'lock'))!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert sweep_stale(str(folder)) == 0
        assert (folder / (prefix + "0123.shr")).exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert sweep_stale(str(folder)) == 2  # the file and the lock
    assert not list(folder.iterdir())
