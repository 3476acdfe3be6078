"""What the code uses of CPython 3.11, for CPython 3.10 (the python3 of Ubuntu 22.04, under Azure
ML's images and most attached VMs). One module, so that dropping 3.10 is deleting it and its
imports (and config.load's tomli, 3.10's tomllib, imported where the one TOML file is parsed).
It imports no asyncio: `plan` and `rules` never load it.

- StrEnum, IntEnum: str() and format() give the value on every version, as 3.11's do (3.10's
  str() of a str- or int-mixin enum is "Class.NAME").
- timeout(): asyncio.timeout; on 3.10 async-timeout's, whose expiry raises the builtin
  TimeoutError as 3.11's does (3.10's asyncio.TimeoutError is another class, which an
  `except TimeoutError` misses). The engine still owns the clock: this is only its context manager.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

if sys.version_info >= (3, 11):
    from enum import IntEnum, StrEnum  # noqa: TID251 (the one place)

    def timeout(delay: float | None) -> AbstractAsyncContextManager[object]:
        import asyncio

        return asyncio.timeout(delay)  # noqa: TID251 (the one place)
else:
    import contextlib
    from collections.abc import AsyncIterator
    from enum import Enum

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str.__str__(self)

        def __format__(self, format_spec: str) -> str:
            return str.__format__(self, format_spec)

    class IntEnum(int, Enum):
        def __str__(self) -> str:
            return int.__repr__(self)  # int has no __str__ of its own: 3.11's takes its __repr__ too

        def __format__(self, format_spec: str) -> str:
            return int.__format__(self, format_spec)

    @contextlib.asynccontextmanager
    async def timeout(delay: float | None) -> AsyncIterator[None]:
        import asyncio

        import async_timeout

        try:
            async with async_timeout.timeout(delay):
                yield
        except asyncio.TimeoutError as exc:
            raise TimeoutError from exc

__all__ = ["IntEnum", "StrEnum", "timeout"]
