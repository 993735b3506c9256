"""Reading a YAML file a user wrote (a space, a study config): safely, and refused in one line when it is
unreadable, oversized, malformed, or a bomb of aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search_space.errors import InputError

MAX_YAML_BYTES = 16 << 20  # a space or a study config is a few kB: anything this large is not one
MAX_YAML_VALUES = 1_000_000  # values of a document once its aliases are expanded


def read_yaml(path: Path, error: type[InputError] = InputError) -> Any:
    """`safe_load` of a UTF-8 file; unreadable, oversized or malformed input raises `error` naming the file."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise error(f"{path}: larger than {MAX_YAML_BYTES >> 20} MiB; not a space or a study config")
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise error(f"{path}: YAML nested too deeply") from None
    if _expanded_size(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise error(f"{path}: expands to more than {MAX_YAML_VALUES:,} values (YAML aliases?)")
    return data


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with shared (aliased) nodes counted each time; stops past `limit`."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count
