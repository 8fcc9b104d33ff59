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
