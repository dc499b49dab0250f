"""The one error the simulator raises for bad input: it names the file, the line and what is
allowed, so a person can fix the input without reading the code."""

from __future__ import annotations

from tide.api.errors import InvalidArgument

__all__ = ["InputError"]


class InputError(InvalidArgument):
    """Bad input: ``file:line: what is wrong; what is allowed``.  ``line`` 0 = the whole file."""

    def __init__(self, file: str, line: int, message: str) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
