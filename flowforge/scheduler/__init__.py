"""Scheduling: cron and one-time triggers (:mod:`.triggers`), the job table kept in the
state folder (:mod:`.jobs`) and the scheduler itself (:mod:`.loop`)."""

from __future__ import annotations

from .jobs import JobInfo
from .lock import SchedulerLockedError
from .loop import JobFired, JobSkipped, Scheduler
from .triggers import CronTrigger, OnceTrigger

__all__ = [
    "CronTrigger", "JobFired", "JobInfo", "JobSkipped", "OnceTrigger", "Scheduler",
    "SchedulerLockedError",
]
