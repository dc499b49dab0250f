"""Versioned, strict TOML config files: the one loader both daemons use.

A file decodes into a msgspec Struct tree with unknown keys forbidden; errors
name the file and the key's full path (``unknown key `$.jobs.claim-grace```).
``version`` is optional (the current one); an older file is upgraded step by
step through the caller's migrations, a newer one is refused.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from tide.api.errors import InvalidArgument

__all__ = ["Migration", "StrictConfig", "describe_validation_error", "load_toml_config"]

T = TypeVar("T")
Migration = Callable[[dict[str, Any]], dict[str, Any]]


class StrictConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """The base of every config file section: unknown keys are errors, keys are kebab-case.

    msgspec does not pass ``kw_only`` on to subclasses and mypy does not see an inherited
    ``frozen``, so each section restates the same class keywords."""


def load_toml_config(
    path: str,
    type_: type[T],
    *,
    version: int,
    migrations: Mapping[int, Migration],
    program: str,
) -> T:
    """Read, upgrade and validate ``path``; InvalidArgument names the file and the key."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"{path}: {exc}") from None
    try:
        return msgspec.convert(_migrate(raw, path, version, migrations, program), type_)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"{path}: {describe_validation_error(exc)}") from None


def _migrate(
    raw: dict[str, Any], path: str, current: int, migrations: Mapping[int, Migration], program: str
) -> dict[str, Any]:
    version = raw.get("version", current)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidArgument(f"{path}: `$.version` must be an integer, got {version!r}")
    if version > current:
        raise InvalidArgument(
            f"{path}: config version {version} is newer than this {program} reads "
            f"({current}); upgrade Tide or write a version {current} file"
        )
    while version < current:
        step = migrations.get(version)
        if step is None:
            raise InvalidArgument(
                f"{path}: config version {version} is not supported (this {program} reads version {current})"
            )
        version += 1
        raw = {**step(raw), "version": version}
    return raw


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")


def describe_validation_error(exc: msgspec.ValidationError) -> str:
    """msgspec's message with the full key path first: unknown key `$.jobs.claim-grace`."""
    m = _AT.match(str(exc))
    msg, at = (m["msg"], m["path"] or "$") if m else (str(exc), "$")
    if unknown := _UNKNOWN.match(msg):
        return f"unknown key `{at}.{unknown['key']}`"
    return f"`{at}`: {msg[:1].lower()}{msg[1:]}"
