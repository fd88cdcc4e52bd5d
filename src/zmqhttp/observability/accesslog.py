"""Access log lines in gunicorn's atom syntax.

Strategy: atoms are computed lazily from a request cycle by a mapping object,
so ``%(h)s %(r)s`` costs only the atoms it names. Every value that came from
the client is escaped (control characters, quotes, backslashes) so a request
cannot forge log lines (log injection).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zmqhttp.server.cycle import RequestCycle

__all__ = ["AccessLogger", "escape"]

access_log = logging.getLogger("zmqhttp.access")

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')


def escape(value: str) -> str:
    """Escape control characters, ``"`` and ``\\`` as ``\\xNN``."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def _text(value: bytes) -> str:
    return escape(value.decode("latin-1"))


class _Atoms(Mapping[str, str]):
    """The atoms of one request, computed on demand."""

    # Declared: the module-level lambdas below read them before mypy reaches
    # __init__ when it checks an import cycle in another order (mypyc builds).
    _cycle: RequestCycle
    _elapsed: float

    def __init__(self, cycle: RequestCycle, now_mono: float) -> None:
        self._cycle = cycle
        self._elapsed = max(0.0, now_mono - cycle.started_mono)

    def __getitem__(self, key: str) -> str:
        if key.startswith("{") and len(key) > 3 and key[-2] == "}" and key[-1] in "io":
            return self._header(key[1:-2].lower().encode("latin-1"), key[-1])
        getter = _ATOMS.get(key)
        if getter is None:
            return "-"
        return str(getter(self))

    def __iter__(self) -> Iterator[str]:
        return iter(_ATOMS)

    def __len__(self) -> int:
        return len(_ATOMS)

    def _header(self, name: bytes, direction: str) -> str:
        cycle = self._cycle
        fields = cycle.request.headers if direction == "i" else cycle.response_headers
        for key, value in fields:
            if key.lower() == name:
                return _text(value)
        return "-"

    def request_line(self) -> str:
        req = self._cycle.request
        return _text(b"%s %s HTTP/%s" % (req.method, req.target, req.http_version.encode()))


def _timestamp(atoms: _Atoms) -> str:
    return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(atoms._cycle.started))


_ATOMS: dict[str, Callable[[_Atoms], str]] = {
    "h": lambda a: a._cycle.client[0] or "-",
    "l": lambda a: "-",
    "u": lambda a: "-",
    "t": _timestamp,
    "r": _Atoms.request_line,
    "s": lambda a: str(a._cycle.status or "-"),
    "m": lambda a: _text(a._cycle.request.method),
    "U": lambda a: _text(a._cycle.request.path),
    "q": lambda a: _text(a._cycle.request.query),
    "H": lambda a: f"HTTP/{a._cycle.request.http_version}",
    "b": lambda a: str(a._cycle.bytes_sent) if a._cycle.bytes_sent else "-",
    "B": lambda a: str(a._cycle.bytes_sent),
    "f": lambda a: a._header(b"referer", "i"),
    "a": lambda a: a._header(b"user-agent", "i"),
    "T": lambda a: str(int(a._elapsed)),
    "D": lambda a: str(int(a._elapsed * 1_000_000)),
    "M": lambda a: str(int(a._elapsed * 1000)),
    "L": lambda a: f"{a._elapsed:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
}


class AccessLogger:
    """Writes one line per completed request to the ``zmqhttp.access`` logger."""

    def __init__(self, fmt: str, enabled: bool = True) -> None:
        self._format = fmt
        self._enabled = enabled

    def log(self, cycle: RequestCycle, now_mono: float) -> None:
        if not self._enabled or not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info(self._format % _Atoms(cycle, now_mono))
