"""Admission: may a ready task start now, within the run's limits?

One :class:`Admission` per run holds what is in use (CPUs, memory, GPU shares per
device, running attempts per pool, the run's running attempts) and the token buckets of
the rate limits. The engine asks :meth:`Admission.acquire` for a ready attempt; a
:class:`Grant` says it may start (and on which GPU devices), a :class:`Wait` says why not.
:meth:`Admission.release` gives it all back when the attempt ends. :class:`RunAdmission`
keeps the engine's side (each attempt's grant, how long it waited); a run that declares
no limits or requests gets :class:`NullAdmission`, which grants everything at once.

Fairness: tasks that fit may pass one that does not, but a task passed over
``MAX_PASSES`` times reserves the run: from then on nothing that needs CPUs, memory or
GPUs starts before it, so a big task always gets its turn once the small ones drain.

A request that can never fit is a definition error raised by :meth:`Admission.check`
before anything runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .._private.gpus import GpuInventory
from ..errors import WorkflowDefinitionError
from ..resources import RateLimit, ResourceLimits, Resources

if TYPE_CHECKING:
    from ..result import TaskRun

__all__ = [
    "GRANTED", "Admission", "Grant", "NullAdmission", "Request", "RunAdmission", "Wait",
    "admission_for",
]

MAX_PASSES = 32
_EPS = 1e-9  # float sums of rates and GPU fractions are compared with this slack


@dataclass(frozen=True)
class Request:
    """What one attempt of a task asks for."""

    cpus: float = 0.0
    memory: int = 0
    gpus: float = 0.0
    gpu_memory: int = 0
    tags: tuple[str, ...] = ()
    rate: RateLimit | None = None

    @classmethod
    def of(cls, resources: Resources | None, tags: Iterable[str], rate: RateLimit | None
           ) -> Request:
        r = resources or Resources()
        return cls(float(r.cpus), r.memory_bytes, float(r.gpus), r.gpu_memory_bytes,
                   tuple(tags), rate)

    @property
    def sized(self) -> bool:
        return bool(self.cpus or self.memory or self.gpus)


@dataclass
class Grant:
    """Permission for one attempt to start; ``gpus`` are its device indices."""

    request: Request
    gpus: tuple[int, ...] = ()
    shares: dict[int, tuple[float, int]] = field(default_factory=dict)


class Wait(NamedTuple):
    """An attempt may not start yet: ``reason`` says what it waits for."""

    reason: str
    rate_limited: bool = False  # it waits for a rate limit's next token
    first: bool = False  # set by RunAdmission on the first refusal of a wait


GRANTED = Grant(Request())  # what NullAdmission gives every attempt


class _Bucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.per_second
        self.burst = limit.burst
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self) -> float:
        """Seconds until one token is there (0 if it is); never a float-dust wait that a
        clock cannot advance by."""
        if self.tokens >= 1 - _EPS:
            return 0.0
        return max((1 - self.tokens) / self.rate, 1e-6)


class Admission:
    """What is free and what is taken, for one run (see the module docstring)."""

    def __init__(
        self,
        limits: ResourceLimits,
        *,
        gpus: GpuInventory,
        machine_memory: int,
        machine_cpus: float,
        rate_limits: Mapping[str, RateLimit] | None = None,
        concurrency: Mapping[str, int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpus = float(limits.cpus if limits.cpus is not None else machine_cpus)
        self.memory = int(limits.memory if limits.memory is not None else machine_memory)
        devices = limits.gpu_devices or tuple(
            range(limits.gpus if limits.gpus is not None else gpus.count())
        )
        if limits.gpus is not None:
            devices = devices[: limits.gpus]
        self.devices = tuple(devices)
        self.max_running = limits.max_concurrent_tasks
        self.concurrency = dict(concurrency or {})
        self._inventory = gpus
        self._monotonic = monotonic
        now = monotonic()
        self._named = {n: _Bucket(r, now) for n, r in (rate_limits or {}).items()}
        self._own: dict[str, _Bucket] = {}
        self.used_cpus = 0.0
        self.used_memory = 0
        self.running = 0
        self.in_pool: dict[str, int] = {}
        self.gpu_share: dict[int, float] = {d: 0.0 for d in self.devices}
        self.gpu_mem: dict[int, int] = {d: 0 for d in self.devices}
        self.peak: dict[str, float] = {"cpus": 0.0, "memory": 0.0, "gpus": 0.0, "tasks": 0.0}
        self._passes: dict[str, int] = {}
        self._reserved: str | None = None

    # -- before the run --------------------------------------------------------------

    def check(self, requests: Mapping[str, Request]) -> None:
        """Refuse any request that could never fit, naming the task and the fix."""
        for name, req in requests.items():
            problem = None
            if req.cpus > self.cpus:
                problem = f"{req.cpus:g} CPUs, but the run may use {self.cpus:g}"
            elif req.memory > self.memory:
                problem = f"{req.memory} bytes of memory, but the run may use {self.memory}"
            elif req.gpus > len(self.devices):
                problem = f"{req.gpus:g} GPUs, but the run has {len(self.devices)}"
            if problem:
                msg = (
                    f"task {name!r} asks for {problem}; lower its Resources(...) or raise "
                    "workflow(limits=ResourceLimits(...))"
                )
                raise WorkflowDefinitionError(msg, task=name, option="resources")

    # -- while it runs ---------------------------------------------------------------

    def acquire(self, name: str, req: Request) -> Grant | Wait:
        """A :class:`Grant` if the attempt may start now, else a :class:`Wait`."""
        if self.max_running is not None and self.running >= self.max_running:
            return Wait(f"max_concurrent_tasks={self.max_running} are running")
        for tag in req.tags:
            cap = self.concurrency.get(tag)
            if cap is not None and self.in_pool.get(tag, 0) >= cap:
                return Wait(f"the {tag!r} pool is full ({cap} running)")
        if req.sized and self._reserved not in (None, name):
            return Wait(f"waiting behind {self._reserved!r}, which has waited longest")
        if self.used_cpus + req.cpus > self.cpus + 1e-9:
            return self._pass(name, f"{req.cpus:g} CPUs (free: {self.cpus - self.used_cpus:g})")
        if self.used_memory + req.memory > self.memory:
            return self._pass(name, f"{req.memory} bytes of memory "
                                    f"(free: {self.memory - self.used_memory})")
        shares = self._gpu_shares(req) if req.gpus else {}
        if shares is None:
            return self._pass(name, f"{req.gpus:g} GPUs")
        buckets = self._buckets(name, req)
        now = self._monotonic()
        for bucket in buckets:
            bucket.refill(now)
            if bucket.tokens < 1 - _EPS:
                return Wait(f"a rate limit ({bucket.wait():.2f}s to its next start)", True)
        for bucket in buckets:
            bucket.tokens = max(0.0, bucket.tokens - 1)
        self.used_cpus += req.cpus
        self.used_memory += req.memory
        self.running += 1
        for tag in req.tags:
            self.in_pool[tag] = self.in_pool.get(tag, 0) + 1
        for device, (share, mem) in shares.items():
            self.gpu_share[device] += share
            self.gpu_mem[device] += mem
        if self._reserved == name:
            self._reserved = None
        self._passes.pop(name, None)
        self._note_peak()
        return Grant(req, tuple(sorted(shares)), shares)

    def release(self, grant: Grant) -> None:
        req = grant.request
        self.used_cpus -= req.cpus
        self.used_memory -= req.memory
        self.running -= 1
        for tag in req.tags:
            self.in_pool[tag] -= 1
        for device, (share, mem) in grant.shares.items():
            left = self.gpu_share[device] - share
            self.gpu_share[device] = 0.0 if left < _EPS else left  # no float dust
            self.gpu_mem[device] -= mem

    def next_token_in(self, names: Iterable[tuple[str, Request]]) -> float | None:
        """Seconds until a rate-limited waiting task could have its token."""
        now = self._monotonic()
        waits = []
        for name, req in names:
            buckets = self._buckets(name, req)
            for b in buckets:
                b.refill(now)
            if buckets:
                waits.append(max(b.wait() for b in buckets))
        return min(waits) if waits else None

    # -- inside ----------------------------------------------------------------------

    def _pass(self, name: str, what: str) -> Wait:
        passes = self._passes[name] = self._passes.get(name, 0) + 1
        if passes >= MAX_PASSES and self._reserved is None:
            self._reserved = name
        return Wait(f"{what} to be free")

    def _buckets(self, name: str, req: Request) -> list[_Bucket]:
        found = [self._named[t] for t in req.tags if t in self._named]
        if req.rate is not None:
            own = self._own.get(name)
            if own is None:
                own = self._own[name] = _Bucket(req.rate, self._monotonic())
            found.append(own)
        return found

    def _gpu_shares(self, req: Request) -> dict[int, tuple[float, int]] | None:
        """Devices for a GPU request: whole free devices, or one device with room for a
        fraction (and its memory); None if it does not fit now."""
        if req.gpus >= 1:
            free = [d for d in self.devices if self.gpu_share[d] <= _EPS and self._has_memory(
                d, req.gpu_memory)]
            want = int(req.gpus)
            if len(free) < want:
                return None
            return {d: (1.0, req.gpu_memory) for d in free[:want]}
        for d in self.devices:
            if self.gpu_share[d] + req.gpus <= 1.0 + 1e-9 and self._has_memory(
                d, req.gpu_memory
            ):
                return {d: (req.gpus, req.gpu_memory)}
        return None

    def _has_memory(self, device: int, wanted: int) -> bool:
        if not wanted:
            return True
        free = self._inventory.free_memory(device)
        if free is None:  # unknown (no NVML): count what this run has handed out
            return True
        return free - self.gpu_mem[device] >= wanted

    def _note_peak(self) -> None:
        peak = self.peak
        peak["cpus"] = max(peak["cpus"], self.used_cpus)
        peak["memory"] = max(peak["memory"], float(self.used_memory))
        peak["gpus"] = max(peak["gpus"], sum(self.gpu_share.values()))
        peak["tasks"] = max(peak["tasks"], float(self.running))


def stuck_error(name: str, reason: str) -> WorkflowDefinitionError:
    msg = (
        f"task {name!r} cannot start although nothing else runs: it waits for {reason}; "
        "lower its Resources(...) or free what it needs"
    )
    return WorkflowDefinitionError(msg, task=name)


class RunAdmission:
    """The engine's side of admission for one run: each attempt's grant, keyed by
    ``(task, index)`` (index -1 for a task, else a map item or loop iteration), and how
    long each waiting attempt has waited and why."""

    def __init__(
        self, admission: Admission, requests: Mapping[str, Request],
        tasks: Mapping[str, TaskRun],
    ) -> None:
        self.admission = admission
        self.requests = dict(requests)
        self._tasks = tasks
        self._grants: dict[tuple[str, int], Grant] = {}
        self._since: dict[tuple[str, int], float] = {}
        self._reasons: dict[tuple[str, int], str] = {}
        self._rate_waits: list[tuple[str, Request]] = []

    @property
    def peak(self) -> dict[str, float] | None:
        return self.admission.peak

    def admit(self, name: str, index: int) -> Grant | Wait:
        """A grant for this attempt, or why it waits (``first`` on the first refusal)."""
        key = (name, index)
        req = self.requests[name]
        answer = self.admission.acquire(name, req)
        if answer.__class__ is Wait:
            assert isinstance(answer, Wait)
            if answer.rate_limited:
                self._rate_waits.append((name, req))
            self._reasons[key] = answer.reason
            if key in self._since:
                return answer
            self._since[key] = time.perf_counter()
            return answer._replace(first=True)
        assert isinstance(answer, Grant)
        self._grants[key] = answer
        since = self._since.pop(key, None)
        if since is not None:
            self._tasks[name].waited += time.perf_counter() - since
        return answer

    def token_delay(self) -> float | None:
        """Seconds until one of the rate-limited attempts refused since the last call may
        have its token (None: none was refused for a rate limit)."""
        waits, self._rate_waits = self._rate_waits, []
        return self.admission.next_token_in(waits) if waits else None

    def release(self, name: str, index: int) -> None:
        """An attempt ended: give back what it was granted (idempotent)."""
        grant = self._grants.pop((name, index), None)
        if grant is not None:
            self.admission.release(grant)

    def stuck_error(self, name: str, index: int) -> WorkflowDefinitionError:
        """The error of an attempt that can never start: nothing else runs, and it still
        waits."""
        return stuck_error(name, self._reasons.get((name, index), "resources"))

    def gpus_of(self, name: str, index: int) -> list[int] | None:
        """The GPU devices granted to an attempt that asked for GPUs, else None."""
        grant = self._grants.get((name, index))
        return None if grant is None or not grant.request.gpus else list(grant.gpus)

    def memory_of(self, name: str, index: int) -> int:
        """The memory (bytes) granted to an attempt; 0 when it asked for none."""
        grant = self._grants.get((name, index))
        return 0 if grant is None else grant.request.memory


class NullAdmission:
    """Admission for a run that declares no limits or requests: every attempt may start
    at once, nothing is counted, nothing waits."""

    peak = None

    def admit(self, name: str, index: int) -> Grant:
        return GRANTED

    def token_delay(self) -> None:
        return None

    def release(self, name: str, index: int) -> None:
        return None

    def stuck_error(self, name: str, index: int) -> WorkflowDefinitionError:
        return stuck_error(name, "resources")

    def gpus_of(self, name: str, index: int) -> None:
        return None

    def memory_of(self, name: str, index: int) -> int:
        return 0


def admission_for(
    tasks: Mapping[str, Any],
    limits: ResourceLimits | None,
    rate_limits: Mapping[str, RateLimit],
    concurrency: Mapping[str, int],
    clock: Any,
    *,
    sized: bool = True,
) -> tuple[Admission | None, dict[str, Request]]:
    """The admission control a run needs (None when nothing asks for any), with every
    task's request checked against the limits before anything runs."""
    declared = any(
        (sized and t.resources is not None) or t.tags or t.rate_limit for t in tasks.values()
    )
    if not (declared or limits or rate_limits or concurrency):
        return None, {}
    import psutil

    from .._private.gpus import NvmlInventory

    admission = Admission(
        limits or ResourceLimits(),
        gpus=NvmlInventory(),
        machine_memory=psutil.virtual_memory().total,
        machine_cpus=float(psutil.cpu_count(logical=True) or 1),
        rate_limits=rate_limits,
        concurrency=concurrency,
        monotonic=clock.monotonic,
    )
    requests = {
        n: Request.of(t.resources if sized else None, t.tags, t.rate_limit)
        for n, t in tasks.items()
    }
    admission.check(requests)
    return admission, requests
