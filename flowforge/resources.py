"""What tasks need and what a run may use: CPU, memory and GPU requests, limits, rate
limits and concurrency pools.

``@task(resources=Resources(cpus=4, memory="16GiB", gpus=1))`` states a request;
``workflow(limits=ResourceLimits(...), rate_limits={"api": RateLimit("5/s")},
concurrency={"db": 3})`` states what the run may use. A ready task starts only when its
request fits in what is free, its tags' pools have room and its rate limits have a
token (see :mod:`flowforge._engine.admission`). Tasks that declare nothing request nothing: only
``max_concurrent_tasks`` and the executor's workers bound them.

Sizes are bytes (``int``) or strings such as ``"512MB"`` (powers of 1000) and
``"16GiB"`` (powers of 1024). Rates are ``"N/s"``, ``"N/m"`` or ``"N/h"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import WorkflowDefinitionError

__all__ = ["RateLimit", "ResourceLimits", "Resources", "parse_size"]

_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20,
    "g": 2**30, "t": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}


def parse_size(value: int | float | str | None, what: str = "memory") -> int | None:
    """Bytes from ``16GiB``-style strings or numbers; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "bad"  # a bool is never a size
    if isinstance(value, (int, float)):
        if value < 0:
            msg = f"{what} must not be negative, got {value!r}"
            raise WorkflowDefinitionError(msg, option=what)
        return int(value)
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        msg = (
            f"{what}={value!r} is not a size; use bytes or a string like '512MB' or '16GiB'"
        )
        raise WorkflowDefinitionError(msg, option=what)
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class RateLimit:
    """At most ``N`` starts per second, minute or hour: ``RateLimit("5/s")``. A token
    bucket refilled evenly and holding one token, so starts are spaced ``1/N`` apart
    (20 calls at ``"10/s"`` take about 1.9 s) and never come in a burst."""

    rate: str

    def __post_init__(self) -> None:
        self.per_second  # noqa: B018 - validates

    @property
    def per_second(self) -> float:
        match = _RATE.match(self.rate) if isinstance(self.rate, str) else None
        if match is None or float(match.group(1)) <= 0:
            msg = f"rate limit {self.rate!r} is not a rate; use 'N/s', 'N/m' or 'N/h'"
            raise WorkflowDefinitionError(msg, option="rate_limit")
        return float(match.group(1)) / _PER[match.group(2)]

    @property
    def burst(self) -> float:
        return 1.0


@dataclass(frozen=True)
class Resources:
    """What one attempt of a task needs while it runs. ``gpus`` may be a fraction (two
    tasks asking 0.5 share a device when their ``gpu_memory`` fits on it)."""

    cpus: float = 0
    memory: int | str | None = None
    gpus: float = 0
    gpu_memory: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                msg = f"Resources({name}=...) must be a number >= 0, got {value!r}"
                raise WorkflowDefinitionError(msg, option=name)
        if self.gpus > 1 and self.gpus != int(self.gpus):
            msg = f"Resources(gpus={self.gpus}) must be a whole number above 1, or a fraction"
            raise WorkflowDefinitionError(msg, option="gpus")
        object.__setattr__(self, "memory", parse_size(self.memory, "memory"))
        object.__setattr__(self, "gpu_memory", parse_size(self.gpu_memory, "gpu_memory"))

    @property
    def memory_bytes(self) -> int:
        return int(self.memory or 0)

    @property
    def gpu_memory_bytes(self) -> int:
        return int(self.gpu_memory or 0)


@dataclass(frozen=True)
class ResourceLimits:
    """What a run may use at once. Unset fields default to what the machine has (logical
    CPUs and total memory through psutil, GPUs through NVML; no GPU or no driver means 0).
    ``max_concurrent_tasks`` bounds running attempts whatever they request."""

    cpus: float | None = None
    memory: int | str | None = None
    gpus: int | None = None
    max_concurrent_tasks: int | None = None
    gpu_devices: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", parse_size(self.memory, "memory"))
        n = self.max_concurrent_tasks
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            msg = f"max_concurrent_tasks must be a whole number >= 1, got {n!r}"
            raise WorkflowDefinitionError(msg, option="max_concurrent_tasks")
