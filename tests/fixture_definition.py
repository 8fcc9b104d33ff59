"""Module-level functions for definition tests (YAML points at them by name)."""

from __future__ import annotations


def numbers(n: int) -> list[int]:
    return list(range(n))


def total(numbers: list[int]) -> int:
    return sum(numbers)


def double(x: int) -> int:
    return x * 2


def describe(total: int, label: str = "total") -> str:
    return f"{label}={total}"


def open_store(prefix: str):
    """A generator resource: what it yields is the resource; after yield, tear-down."""
    store = {"prefix": prefix, "open": True}
    yield store
    store["open"] = False


def tag(store: dict, value: int) -> str:
    return f"{store['prefix']}{value}"


def add(a: int, b: int) -> int:
    return a + b


failures: list[str] = []


def remember_failure(event) -> None:
    failures.append(event.task)


def boom() -> None:
    raise RuntimeError("boom")


def square(numbers: int) -> int:
    """Mapped over ``numbers``: gets one item under the upstream's name."""
    return numbers * numbers


def plus_one(x: int | None) -> int:
    return (x or 0) + 1
