"""The scheduler, driven by an injected clock: cron next-fire times, DST in both
directions, catch-up after downtime, overlap, restarts, clock jumps, failures."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from flowforge import ScheduleError, Scheduler, task, workflow
from flowforge.persistence import PersistenceManager
from flowforge.scheduler import CronTrigger, JobFired, JobSkipped

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


class WallClock:
    """A settable aware clock for the scheduler."""

    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


def counting_workflow(opts, runs, name="job", fail=None, gate=None):
    with workflow(name, executor="sequential", **opts) as wf:

        @task
        def work(ctx):
            runs.append(ctx.run_id)
            if gate is not None:
                gate.wait(10)
            if fail is not None and fail():
                raise RuntimeError("scheduled run failed")
            return len(runs)

    return wf


def fired(sched):
    times = []
    sched.events.subscribe(JobFired, lambda e: times.append(e.fire_time))
    return times


# -- triggers -------------------------------------------------------------------------


def test_next_fire_times_of_the_readme_examples():
    """*/15 fires on the quarter hours; 0 9 * * 1-5 in Berlin skips the weekend."""
    every15 = CronTrigger("*/15 * * * *")
    t = every15.next_after(datetime(2026, 11, 23, 10, 7, tzinfo=UTC))
    assert t == datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    assert every15.next_after(t) == datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
    weekdays = CronTrigger("0 9 * * 1-5", "Europe/Berlin")
    friday_noon = datetime(2026, 11, 27, 12, 0, tzinfo=BERLIN)
    assert weekdays.next_after(friday_noon).astimezone(BERLIN) == datetime(
        2026, 11, 30, 9, 0, tzinfo=BERLIN
    )
    daily = CronTrigger("@daily", "UTC")
    assert daily.next_after(friday_noon) == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"cron": "61 * * * *"}, "minute", "its minute field '61' is not valid"),
        ({"cron": "0 0 31 2 *"}, "expression", "can never fire"),
        ({"cron": "* * *"}, "expression", "has 3 fields; it needs 5"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"at": "2026-12-01 10:00"}, "at", "needs a time with its UTC offset"),
        ({}, "cron", "exactly one of cron="),
    ],
)
def test_bad_schedules_are_clear_errors_at_add(opts, tmp_path, kwargs, field, text):
    """An invalid or never-firing expression, zone or time is a ValueError at add()
    naming the field."""
    sched = Scheduler(str(tmp_path / "state"), clock=WallClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with pytest.raises(ScheduleError, match=text) as info:
        sched.add(counting_workflow(opts, []), **kwargs)
    assert isinstance(info.value, ValueError) and info.value.field == field


# -- firing ---------------------------------------------------------------------------


def test_a_new_job_first_fires_at_its_next_time_after_it_was_added(opts):
    """Adding at 10:07 does not run at once; the 10:15 fire runs once."""
    clock = WallClock(datetime(2026, 11, 23, 10, 7, tzinfo=UTC))
    runs = []
    sched = Scheduler(clock=clock)
    sched.add(counting_workflow(opts, runs), cron="*/15 * * * *", name="q")
    sched.run_pending()
    assert runs == []
    clock.advance(minutes=8)
    sched.run_pending()
    sched.run_pending()
    assert len(runs) == 1
    (info,) = sched.jobs()
    assert info.last_status == "succeeded" and info.next_run == datetime(
        2026, 11, 23, 10, 30, tzinfo=UTC)
    assert PersistenceManager("state").runs("job")[0].job == "q"


@pytest.mark.parametrize(
    ("day", "cron", "local"),
    [
        (datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN), "30 2 * * *", (3, 0)),  # spring forward
        (datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN), "30 1 * * *", (1, 30)),  # fall back
    ],
)
def test_dst_days_fire_exactly_once(opts, day, cron, local):
    """A time in the spring-forward gap runs once at the gap's end; a time in the repeated
    fall-back hour runs once, not twice."""
    clock = WallClock(day.astimezone(UTC))
    runs = []
    sched = Scheduler(clock=clock)
    times = fired(sched)
    sched.add(counting_workflow(opts, runs), cron=cron, timezone="Europe/Berlin")
    for _ in range(6 * 6):  # six hours in ten-minute steps, crossing the change
        clock.advance(minutes=10)
        sched.run_pending()
    assert len(runs) == 1
    fire = times[0].astimezone(BERLIN)
    assert (fire.hour, fire.minute) == local and fire.date() == day.date()


@pytest.mark.parametrize(("catchup", "expected"), [("latest", 1), ("all", 5), ("none", 0)])
def test_catchup_after_downtime(opts, catchup, expected):
    """Down for five hourly fires: latest runs one (the newest), all runs five in order,
    none runs nothing; a skip is reported."""
    clock = WallClock(datetime(2026, 11, 23, 8, 30, tzinfo=UTC))
    runs = []
    sched = Scheduler(clock=clock)
    times = fired(sched)
    skips = []
    sched.events.subscribe(JobSkipped, skips.append)
    sched.add(counting_workflow(opts, runs), cron="0 * * * *", catchup=catchup)
    clock.advance(hours=5)  # 09:00 .. 13:00 were missed; it is 13:30
    sched.run_pending()
    assert len(runs) == expected
    hours = [t.hour for t in times]
    assert hours == {"latest": [13], "all": [9, 10, 11, 12, 13], "none": []}[catchup]
    assert bool(skips) is (catchup != "all")


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_overlap_with_a_slow_run(opts, overlap):
    """A fire while the previous run still goes is skipped, or queued to run after it."""
    clock = WallClock(datetime(2026, 11, 23, 9, 59, tzinfo=UTC))
    runs = []
    gate = threading.Event()
    sched = Scheduler(clock=clock)
    skips = []
    sched.events.subscribe(JobSkipped, skips.append)
    sched.add(counting_workflow(opts, runs, gate=gate), cron="* * * * *", overlap=overlap,
              resume=False)
    clock.advance(minutes=1)
    first = threading.Thread(target=sched.run_pending)
    first.start()
    deadline = time.monotonic() + 10
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runs) == 1  # the slow run has started and waits on the gate
    clock.advance(minutes=1)
    sched.run_pending()  # returns at once: nothing it may start
    gate.set()
    first.join(10)
    assert len(runs) == (1 if overlap == "skip" else 2)
    assert [s.reason for s in skips] == (
        ["its previous run is still going"] if overlap == "skip" else []
    )


def test_restart_neither_repeats_nor_forgets_a_fire(opts):
    """A new scheduler on the same state folder goes on from the last fire handled."""
    clock = WallClock(datetime(2026, 11, 23, 9, 50, tzinfo=UTC))
    runs = []
    first = Scheduler(clock=clock)
    first.add(counting_workflow(opts, runs), cron="0 * * * *", name="hourly")
    clock.advance(minutes=15)
    first.run_pending()
    assert len(runs) == 1
    second = Scheduler(clock=clock)  # the process restarted at 10:05
    second.add(counting_workflow(opts, runs), cron="0 * * * *", name="hourly")
    second.run_pending()
    assert len(runs) == 1  # 10:00 is not run again
    clock.advance(hours=2)  # down over 11:00 and 12:00: latest catch-up runs once
    second.run_pending()
    assert len(runs) == 2


def test_backward_clock_jump_fires_nothing_extra(opts):
    """A clock set back does not replay fire times already handled."""
    clock = WallClock(datetime(2026, 11, 23, 10, 14, tzinfo=UTC))
    runs = []
    sched = Scheduler(clock=clock)
    sched.add(counting_workflow(opts, runs), cron="*/15 * * * *")
    clock.advance(minutes=2)
    sched.run_pending()
    assert len(runs) == 1
    clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    sched.run_pending()
    clock.now = datetime(2026, 11, 23, 10, 20, tzinfo=UTC)
    sched.run_pending()
    assert len(runs) == 1
    clock.now = datetime(2026, 11, 23, 10, 31, tzinfo=UTC)
    sched.run_pending()
    assert len(runs) == 2


def test_each_fire_is_its_own_run_and_a_failed_one_is_retried_only_when_asked(opts):
    """A failure does not stop the schedule; the next fire is a run of its own (it never
    resumes another fire's run), and sees its fire time as ctx.scheduled_for. With
    retries=1 a failed fire runs again at once, resuming its own run."""
    clock = WallClock(datetime(2026, 11, 23, 9, 59, tzinfo=UTC))
    runs: list[str] = []
    seen: list[object] = []
    fail = [True]
    with workflow("job", executor="sequential", **opts) as wf:

        @task
        def work(ctx):
            runs.append(ctx.run_id)
            seen.append(ctx.scheduled_for)
            if fail[0]:
                raise RuntimeError("scheduled run failed")
            return len(runs)

    sched = Scheduler(clock=clock)
    sched.add(wf, cron="0 * * * *")
    clock.advance(minutes=2)
    sched.run_pending()
    assert sched.jobs()[0].last_status == "failed"
    fail[0] = False
    clock.advance(hours=1)
    sched.run_pending()
    assert sched.jobs()[0].last_status == "succeeded"
    saved = PersistenceManager("state").runs("job")
    assert len(saved) == 2 and runs[0] != runs[1] and all(r.resumes == 0 for r in saved)
    assert seen == [datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
                    datetime(2026, 11, 23, 11, 0, tzinfo=UTC)]
    assert {r.scheduled_for for r in saved} == {"2026-11-23T10:00:00+00:00",
                                                 "2026-11-23T11:00:00+00:00"}

    tries: list[int] = []
    with workflow("retry-job", executor="sequential", **opts) as flaky:

        @task
        def once():
            tries.append(1)
            if len(tries) == 1:
                raise RuntimeError("the fire's first attempt fails")
            return "ok"

    retried = Scheduler(clock=clock)
    retried.add(flaky, cron="30 * * * *", retries=1)
    clock.advance(minutes=30)
    retried.run_pending()
    assert retried.jobs()[0].last_status == "succeeded" and len(tries) == 2
    (run,) = PersistenceManager("state").runs("retry-job")
    assert run.status == "succeeded" and run.resumes == 1  # the retry resumed its run


def test_pause_resume_remove(opts):
    """A paused job skips its fires; resumed, it fires from then on; removed, it is gone."""
    clock = WallClock(datetime(2026, 11, 23, 9, 59, tzinfo=UTC))
    runs = []
    sched = Scheduler(clock=clock)
    sched.add(counting_workflow(opts, runs), cron="0 * * * *", name="h")
    sched.pause("h")
    clock.advance(minutes=2)
    sched.run_pending()
    assert runs == [] and not sched.jobs()[0].enabled
    sched.resume("h")
    clock.advance(hours=1)
    sched.run_pending()
    assert len(runs) == 1
    sched.remove("h")
    assert sched.jobs() == []
    with pytest.raises(KeyError, match="no job named 'h'"):
        sched.pause("h")


def test_run_sleeps_until_due_and_stops_cleanly(opts):
    """run() with the real clock starts a one-time job when due and returns on stop()."""
    runs = []
    sched = Scheduler()
    at = datetime.now(UTC) + timedelta(seconds=0.3)
    sched.add(counting_workflow(opts, runs), at=at)
    loop = threading.Thread(target=sched.run)
    loop.start()
    deadline = time.monotonic() + 10
    while not runs and time.monotonic() < deadline:
        time.sleep(0.02)
    sched.stop()
    loop.join(10)
    assert not loop.is_alive() and len(runs) == 1


def test_isolated_job_runs_in_a_child_process(opts, tmp_path):
    """isolate=True runs the workflow in a forked child; a crash there only fails the run."""
    import os

    clock = WallClock(datetime(2026, 11, 23, 9, 59, tzinfo=UTC))
    marker = tmp_path / "pid"
    with workflow("iso", executor="sequential", **opts) as wf:

        @task
        def where(crash):
            marker.write_text(str(os.getpid()))
            if crash:
                os._exit(9)
            return 1

    sched = Scheduler(clock=clock)
    sched.add(wf, cron="0 * * * *", isolate=True, params={"crash": False}, name="ok")
    clock.advance(minutes=2)
    sched.run_pending()
    assert sched.jobs()[0].last_status == "succeeded"
    assert int(marker.read_text()) != os.getpid()
    run_id = sched.jobs()[0].last_run_id  # reported by the child: it names the saved run
    assert run_id and PersistenceManager(wf.state_dir).load(run_id).status == "succeeded"
    sched.remove("ok")  # the same workflow: two jobs firing at once would meet its lock
    sched.add(wf, cron="0 * * * *", isolate=True, params={"crash": True}, name="crashes")
    clock.advance(hours=1)
    sched.run_pending()
    statuses = {j.name: j.last_status for j in sched.jobs()}
    assert statuses["crashes"] == "crashed (9)"
