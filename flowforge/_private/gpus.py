"""What GPUs the machine has, read through NVML (``pynvml`` from nvidia-ml-py).

No GPU, no driver or no library means 0 GPUs, silently: most machines running
workflows have none. Behind a small interface so that tests use a fake.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["GpuInventory", "NvmlInventory", "StaticInventory"]


class GpuInventory(Protocol):
    def count(self) -> int: ...

    def free_memory(self, index: int) -> int | None:
        """Free bytes on device ``index`` now, or None when unknown."""


class StaticInventory:
    """``n`` devices whose memory is unknown (declared with ``ResourceLimits(gpus=n)``)."""

    def __init__(self, n: int, free: dict[int, int] | None = None) -> None:
        self._n = n
        self._free = free or {}

    def count(self) -> int:
        return self._n

    def free_memory(self, index: int) -> int | None:
        return self._free.get(index)


class NvmlInventory:
    """The real devices, through NVML; initialised on first use."""

    def __init__(self) -> None:
        self._ok: bool | None = None

    def _init(self) -> bool:
        if self._ok is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._ok = True
            except Exception:  # no library, no driver, no device: no GPUs
                self._ok = False
        return self._ok

    def count(self) -> int:
        if not self._init():
            return 0
        import pynvml

        try:
            return int(pynvml.nvmlDeviceGetCount())
        except Exception:
            return 0

    def free_memory(self, index: int) -> int | None:
        if not self._init():
            return None
        import pynvml

        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
        except Exception:
            return None
