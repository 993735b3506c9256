"""Reading a declared list of choices (`[2, 4]`, or one value for a list of one): each one checked, a
problem one `SpaceError` naming where it was declared."""

from __future__ import annotations

from typing import Any

from search_space.errors import SpaceError


def choices(values: Any, where: str) -> tuple:
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise SpaceError(f"{where}: empty choice list")
    for value in values:
        if not isinstance(value, (int, float, str)):  # bool is an int: refused by the typed checks after
            raise SpaceError(f"{where}: {_short(value)} is not a number or a name; expected a list of choices")
    if len(set(values)) != len(values):
        raise SpaceError(f"{where}: duplicate choices in {values}")
    return tuple(values)


def int_choices(values: Any, where: str, positive: bool = True) -> tuple[int, ...]:
    values = choices(values, where)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpaceError(f"{where}: {v!r} is not an integer")
        if positive and v <= 0:
            raise SpaceError(f"{where}: {v} is not a positive size")
    return values


def positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpaceError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
