"""The scheduler: jobs that run workflows on a cron schedule or once, in this process.

Every decision is taken against ``clock()``, an injected zero-argument callable that
returns an aware datetime, so tests drive a whole day, a DST change or a restart in
milliseconds with :meth:`Scheduler.run_pending`. :meth:`Scheduler.run` only adds the
waiting: it sleeps until the next due fire time (no polling), wakes early when asked to
stop, and logs a wall clock that jumps (a backward jump fires nothing until the clock
passes the last fire time again; a forward jump counts as missed fires).

A due job's fire times since its last handled one are *missed* when more than ``grace``
seconds old. ``catchup="latest"`` (default) runs once for the newest due fire time,
``"all"`` runs each in order (at most ``max_catchup``), ``"none"`` runs only a fire that
is on time. ``overlap`` says what happens when the job's previous run is still going:
``"skip"`` (default: the fire is dropped, with a :class:`JobSkipped` event and a log
line), ``"queue"`` (it runs when the previous run ends; at most one waits) or
``"allow"`` (it starts anyway: give such a workflow its own state folder per run, or
the workflow lock refuses the second run).

Runs are ordinary ``wf.run()`` calls in a thread of this process (``isolate=True``: a
forked child process, so a crashing run cannot take the scheduler down), saved with the
job's name. Each fire is its own run, keyed by its fire time (``ctx.scheduled_for``;
see :mod:`flowforge.persistence.runkey`): a fire never resumes another fire's run. A
fire that was running when the scheduler died is resumed when it starts again; a failed
fire runs again only as the job's ``retries=`` say (after ``retry_delay`` seconds),
resuming its own run. ``resume=False`` starts those again from scratch instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..bus import EventBus
from ..errors import ScheduleError
from ..events import Event
from .jobs import JobInfo, JobTable, as_info
from .lock import SchedulerLock
from .triggers import CronTrigger, OnceTrigger, Trigger

if TYPE_CHECKING:
    from .._workflow import Workflow

__all__ = ["JobFired", "JobSkipped", "Scheduler"]

UTC = timezone.utc
_log = logging.getLogger("flowforge")
_OVERLAP = ("skip", "queue", "allow")
_CATCHUP = ("latest", "all", "none")


@dataclass(frozen=True, kw_only=True, slots=True)
class JobFired(Event):
    """A job's run started for ``fire_time`` (UTC); ``run_id`` is filled in once known."""

    job: str
    fire_time: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSkipped(Event):
    """A fire time of ``job`` did not run, and ``reason`` says why."""

    job: str
    fire_time: datetime
    reason: str


@dataclass
class _ScheduledJob:
    name: str
    workflow: Workflow
    trigger: Trigger
    params: dict[str, Any]
    overlap: str
    catchup: str
    resume: bool
    isolate: bool
    anchor: datetime  # fires strictly after this are still to handle
    enabled: bool = True
    retries: int = 0  # how often a failed fire runs again
    retry_delay: float = 0.0
    interrupted: datetime | None = None  # a fire the last scheduler died running
    running: list[threading.Thread] = field(default_factory=list)
    queued: datetime | None = None


class Scheduler:
    """Runs workflows on schedules; see the module docstring for the policies."""

    def __init__(
        self,
        state_dir: str = "state",
        *,
        clock: Callable[[], datetime] | None = None,
        grace: float = 60.0,
        max_catchup: int = 100,
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock or (lambda: datetime.now(UTC))
        self.grace = timedelta(seconds=grace)
        self.max_catchup = max_catchup
        self.events = EventBus()
        self._table = JobTable(state_dir)
        self._jobs: dict[str, _ScheduledJob] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._exclusive = SchedulerLock(state_dir)  # one scheduler per state folder

    # -- jobs ------------------------------------------------------------------------

    def add(
        self,
        wf: Workflow,
        *,
        cron: str | None = None,
        at: datetime | str | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        params: Mapping[str, Any] | None = None,
        overlap: str = "skip",
        catchup: str = "latest",
        resume: bool = True,
        isolate: bool = False,
        retries: int = 0,
        retry_delay: float = 0.0,
    ) -> JobInfo:
        """Schedule ``wf``: ``cron=`` (5 fields or an alias, in ``timezone``) or ``at=``
        (one time). A new job first fires at its next time after now; a job the state
        folder remembers (same name) goes on from the last fire time it handled, and
        first resumes a fire it was running when its scheduler died. A failed fire runs
        again up to ``retries`` times, ``retry_delay`` seconds apart."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            msg = f"retries must be a count >= 0, got {retries!r}"
            raise ScheduleError(msg, field="retries", value=retries)
        if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)) or (
            not retry_delay >= 0
        ):
            msg = f"retry_delay must be seconds >= 0, got {retry_delay!r}"
            raise ScheduleError(msg, field="retry_delay", value=retry_delay)
        if params:
            from .._params import check_given

            check_given(wf, params)
        if (cron is None) == (at is None):
            msg = "add() takes exactly one of cron= (recurring) or at= (one time)"
            raise ScheduleError(msg, field="cron")
        self._exclusive.check_free()  # another process schedules here: change nothing
        trigger: Trigger = CronTrigger(cron, timezone) if cron is not None else OnceTrigger(at)  # type: ignore[arg-type]
        if overlap not in _OVERLAP:
            msg = f"overlap must be one of {', '.join(_OVERLAP)}, got {overlap!r}"
            raise ScheduleError(msg, field="overlap", value=overlap)
        if catchup not in _CATCHUP:
            msg = f"catchup must be one of {', '.join(_CATCHUP)}, got {catchup!r}"
            raise ScheduleError(msg, field="catchup", value=catchup)
        job_name = name or wf.name
        now = self._now()
        row = self._table.get(job_name)
        schedule = trigger.describe()
        anchor = now
        if row.get("schedule") == schedule and isinstance(row.get("last_fire"), str):
            anchor = datetime.fromisoformat(row["last_fire"])
            if anchor > now + timedelta(days=1):  # it would not fire before then
                msg = (f"the scheduler's job table {self._table.path}: job {job_name!r}: "
                       f"last_fire {row['last_fire']} is in the future (now is "
                       f"{now.isoformat()}), so the job would not fire before then; fix "
                       "the clock, or remove the job's entry to schedule it afresh")
                raise ScheduleError(msg, field="last_fire", value=row["last_fire"])
        elif row.get("schedule") == schedule and isinstance(row.get("added"), str):
            anchor = datetime.fromisoformat(row["added"])
        job = _ScheduledJob(job_name, wf, trigger, dict(params or {}), overlap, catchup, resume,
                            isolate, anchor, enabled=bool(row.get("enabled", True)),
                            retries=retries, retry_delay=float(retry_delay))
        if row.get("schedule") == schedule and row.get("last_status") == "running" and (
            isinstance(row.get("last_fire"), str)
        ):  # the scheduler that ran this fire died: it resumes first
            job.interrupted = datetime.fromisoformat(row["last_fire"])
        with self._lock:
            self._jobs[job_name] = job
        self._table.update(
            job_name, name=job_name, workflow=wf.name, schedule=schedule, cron=cron,
            timezone=timezone,
            at=trigger.at.isoformat() if isinstance(trigger, OnceTrigger) else None,
            added=row.get("added") if row.get("schedule") == schedule else now.isoformat(),
            enabled=job.enabled,
        )
        self._wake.set()
        return self._info(job)

    def jobs(self) -> list[JobInfo]:
        """Every job: schedule, next run, last run and its status, enabled."""
        with self._lock:
            return [self._info(j) for j in self._jobs.values()]

    def pause(self, name: str) -> None:
        """Stop firing ``name`` (its fire times while paused are skipped)."""
        self._job(name).enabled = False
        self._table.update(name, enabled=False)

    def resume(self, name: str) -> None:
        """Fire ``name`` again from now on."""
        job = self._job(name)
        job.enabled = True
        job.anchor = max(job.anchor, self._now())
        self._table.update(name, enabled=True)
        self._wake.set()

    def remove(self, name: str) -> None:
        """Forget ``name`` (runs in flight finish)."""
        with self._lock:
            self._job(name)
            del self._jobs[name]
        self._table.remove(name)

    # -- running ---------------------------------------------------------------------

    def run_pending(self) -> None:
        """Start what is due at ``clock()`` and return when those runs have ended."""
        started = self._tick()
        for thread in started:
            thread.join()
        self._drain_queued()

    def claim(self) -> None:
        """Take this state folder's scheduler lock now (``run()`` takes it too); raises
        :class:`~flowforge.scheduler.lock.SchedulerLockedError` naming the holder's pid
        if another scheduler runs there (see :mod:`flowforge.scheduler.lock`)."""
        self._exclusive.acquire()

    def run(self) -> None:
        """Run the schedule until Ctrl-C or SIGTERM, then wait for the runs in flight.
        Only one scheduler runs on a state folder: see :meth:`claim`."""
        self._exclusive.acquire()
        try:
            self._run()
        finally:
            self._exclusive.release()

    def _run(self) -> None:
        restore = self._install_signals()
        last_wall, last_mono = time.time(), time.monotonic()
        try:
            while not self._stop.is_set():
                wall, mono = time.time(), time.monotonic()
                jump = (wall - last_wall) - (mono - last_mono)
                if abs(jump) > 5:
                    _log.warning("scheduler: the wall clock jumped %+.0f s", jump)
                last_wall, last_mono = wall, mono
                self._tick()
                self._wake.clear()
                delay = self._seconds_to_next()
                self._wake.wait(timeout=60.0 if delay is None else min(max(delay, 0.0), 60.0))
        finally:
            restore()
            self._join_all()

    def stop(self) -> None:
        """Ask :meth:`run` to return once the runs in flight end."""
        self._stop.set()
        self._wake.set()

    # -- inside ----------------------------------------------------------------------

    def _tick(self) -> list[threading.Thread]:
        now = self._now()
        started: list[threading.Thread] = []
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            fires = self._due(job, now)
            if job.interrupted is not None and not job.running:
                fires.insert(0, job.interrupted)
                job.interrupted = None
            if fires:
                thread = self._fire(job, fires)
                if thread is not None:
                    started.append(thread)
        return started

    def _due(self, job: _ScheduledJob, now: datetime) -> list[datetime]:
        """The fire times of ``job`` to run now, by its catch-up policy; all fire times up
        to ``now`` count as handled afterwards."""
        trigger = job.trigger
        first = trigger.next_after(job.anchor)
        if first is None or first > now:
            return []
        newest = self._newest(trigger, first, now)
        job.anchor = newest
        if not job.enabled:
            self._skipped(job, first, "the job is paused")
            self._table.update(job.name, last_fire=newest.isoformat())
            return []
        if job.catchup == "all":
            chosen = [first]
            while len(chosen) < self.max_catchup:
                t = trigger.next_after(chosen[-1])
                if t is None or t > now:
                    break
                chosen.append(t)
            if chosen[-1] != newest:
                self._skipped(job, newest, f"more than max_catchup={self.max_catchup} "
                              f"fire times were missed since {first.isoformat()}")
        elif job.catchup == "latest" or now - newest <= self.grace:
            chosen = [newest]
        else:
            chosen = []
        if first not in chosen and first != newest or not chosen:
            self._skipped(job, first, f"missed while the scheduler was down or busy "
                          f"(catchup={job.catchup!r}); the newest was {newest.isoformat()}")
        if not chosen:
            self._table.update(job.name, last_fire=newest.isoformat())
        return chosen

    @staticmethod
    def _newest(trigger: Trigger, first: datetime, now: datetime) -> datetime:
        """The newest fire time at or before ``now``, given the oldest due one, without
        walking every missed fire time of a long downtime."""
        window = timedelta(minutes=2)
        newest = first
        while now - window > first:
            t = trigger.next_after(now - window)
            if t is not None and t <= now:
                newest = t
                break
            window *= 4
        while True:
            t = trigger.next_after(newest)
            if t is None or t > now:
                return newest
            newest = t

    def _fire(self, job: _ScheduledJob, fires: list[datetime]) -> threading.Thread | None:
        """Start a thread running ``fires`` of ``job`` one after another (catch-up runs
        go in order), unless its overlap policy says otherwise."""
        job.running = [t for t in job.running if t.is_alive()]
        if job.running and job.overlap != "allow":
            if job.overlap == "queue":
                if job.queued is not None:
                    self._skipped(job, job.queued, "a newer fire time replaced it in the queue")
                job.queued = fires[-1]
            else:
                for fire in fires:
                    self._skipped(job, fire, "its previous run is still going")
            self._table.update(job.name, last_fire=fires[-1].isoformat())
            return None
        thread = threading.Thread(target=self._run_job, args=(job, fires),
                                  name=f"flowforge-job-{job.name}", daemon=True)
        job.running.append(thread)
        thread.start()
        return thread

    def _run_job(self, job: _ScheduledJob, fires: list[datetime]) -> None:
        for fire in fires:
            # The fire time is on disk before its run starts: a restart never repeats it,
            # and "running" there says, after a crash, that this fire is to resume.
            self._table.update(job.name, last_fire=fire.isoformat(), last_status="running")
            self.events.publish(JobFired(workflow=job.workflow.name, run_id="",
                                         timestamp=time.time(), job=job.name, fire_time=fire))
            for attempt in range(job.retries + 1):
                if attempt and self._stop.wait(job.retry_delay):
                    break  # the scheduler stops: the failed fire stays failed
                status, run_id = self._run_fire(job, fire)
                if status != "failed":
                    break
                if attempt < job.retries:
                    _log.info("scheduler: job %r (fire time %s) failed; retry %d of %d",
                              job.name, fire.isoformat(), attempt + 1, job.retries)
            self._table.update(job.name, last_status=status, last_run_id=run_id)
            _log.info("scheduler: job %r (fire time %s) ended %s", job.name, fire.isoformat(),
                      status)
            with self._lock:  # a fire queued behind this run (overlap="queue") goes next
                queued, job.queued = job.queued, None
            if queued is not None:
                fires.append(queued)

    def _run_fire(self, job: _ScheduledJob, fire: datetime) -> tuple[str, str | None]:
        """Run (or resume) the run of one fire time: its status and run id."""
        try:
            if job.isolate:
                return _run_isolated(job, fire)
            result = job.workflow.run(job.params, fresh=not job.resume, job=job.name,
                                      scheduled_for=fire)
            return result.status.value, result.run_id
        except Exception:
            _log.exception("scheduler: job %r could not run", job.name)
            return "failed", None

    def _drain_queued(self) -> None:
        """Run queued fire times whose blocking run has ended (run_pending only)."""
        while True:
            pending = []
            with self._lock:
                for job in self._jobs.values():
                    job.running = [t for t in job.running if t.is_alive()]
                    if job.queued is not None and not job.running:
                        fire, job.queued = job.queued, None
                        pending.append((job, fire))
            if not pending:
                return
            threads = [self._fire(job, [fire]) for job, fire in pending]
            for thread in threads:
                if thread is not None:
                    thread.join()

    def _skipped(self, job: _ScheduledJob, fire: datetime, reason: str) -> None:
        _log.warning("scheduler: job %r skipped fire time %s: %s", job.name,
                     fire.isoformat(), reason)
        self.events.publish(JobSkipped(workflow=job.workflow.name, run_id="",
                                       timestamp=time.time(), job=job.name, fire_time=fire,
                                       reason=reason))

    def _seconds_to_next(self) -> float | None:
        now = self._now()
        nexts = [
            t for j in self._jobs.values() if j.enabled
            for t in [j.trigger.next_after(j.anchor)] if t is not None
        ]
        return None if not nexts else (min(nexts) - now).total_seconds()

    def _join_all(self) -> None:
        for job in list(self._jobs.values()):
            for thread in job.running:
                thread.join()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            _log.info("scheduler: stopping (signal %d); runs in flight finish first", signum)
            self.stop()

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    def _info(self, job: _ScheduledJob) -> JobInfo:
        row = self._table.get(job.name)
        return as_info(
            row, enabled=job.enabled, next_run=job.trigger.next_after(job.anchor),
            running=any(t.is_alive() for t in job.running),
        )

    def _job(self, name: str) -> _ScheduledJob:
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._jobs) or "none"
            raise KeyError(f"no job named {name!r}; the jobs are {known}") from None

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            msg = "the scheduler's clock must return timezone-aware datetimes"
            raise ValueError(msg)
        return now.astimezone(UTC)


def _run_isolated(job: _ScheduledJob, fire: datetime) -> tuple[str, str | None]:
    """Run the job's workflow in a forked child: its status and run id, as the child
    reports them through a pipe, or from its exit code if it died first."""
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child,
        args=(job.workflow, job.params, not job.resume, job.name, fire, writer, os.getpid()),
    )
    proc.start()
    writer.close()  # the child's copy stays open: EOF means it ended without a report
    report: tuple[str, str | None] | None = None
    try:
        report = reader.recv()
    except EOFError:  # it died (a crash, the OOM killer) before reporting
        pass
    finally:
        reader.close()
    proc.join()
    if report is not None and proc.exitcode in (0, 1):
        return report
    code = proc.exitcode
    return {0: "succeeded", 1: "failed"}.get(code or 0, f"crashed ({code})"), None


def _child(
    wf: Workflow, params: dict[str, Any], fresh: bool, name: str, fire: datetime, report: Any,
    scheduler: int,
) -> None:
    _die_with(scheduler)  # an orphan would hold the run's lock against the resume
    result = wf.run(params, fresh=fresh, job=name, scheduled_for=fire)
    report.send((result.status.value, result.run_id))
    os._exit(0 if result.ok else 1)


def _die_with(parent: int) -> None:
    """End this isolated run when the scheduler that forked it dies (Linux: the kernel
    sends SIGKILL), so a restarted scheduler can resume the fire it was running."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)
