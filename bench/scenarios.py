"""The benchmark scenarios: what wrk sends, to which route, over how many connections."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

__all__ = ["SCENARIOS", "Scenario", "select"]

MIB = 1024 * 1024
LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua")


@dataclass(frozen=True, slots=True)
class Scenario:
    #: One letter, as in the issue: a..f.
    key: str
    name: str
    title: str
    path: str
    connections: int
    #: Extra request header fields for wrk (``-H``).
    headers: tuple[str, ...] = ()
    #: A wrk Lua script (method and body), or None for GET.
    lua: str | None = None
    #: Idle keep-alive connections held open (after one request each) during the load.
    idle: int = 0
    #: Body bytes moved per request (upload or download), to report MiB/s; 0: not reported.
    bulk_bytes: int = 0

    @property
    def label(self) -> str:
        return f"({self.key}) {self.title}"


def _lua(name: str) -> str:
    return os.path.join(LUA_DIR, name)


SCENARIOS: dict[str, Scenario] = {s.key: s for s in [
    Scenario("a", "hello", "GET hello world, keep-alive, 50 connections", "/", 50),
    Scenario("b", "hello-close", "GET hello world, Connection: close, 50 connections", "/", 50,
             headers=("Connection: close",)),
    Scenario("c", "echo-1k", "POST 1 KiB echo, keep-alive, 50 connections", "/echo", 50,
             lua=_lua("echo_1k.lua")),
    Scenario("d", "upload-1m", "POST 1 MiB upload, 4 connections", "/upload", 4,
             lua=_lua("upload_1m.lua"), bulk_bytes=MIB),
    Scenario("e", "download-10m", "GET 10 MiB streamed download, 4 connections", "/download",
             4, bulk_bytes=10 * MIB),
    Scenario("f", "idle-2000", "(a) with 2,000 idle keep-alive connections held open", "/",
             50, idle=2000),
]}


def select(spec: str, idle: int | None = None) -> list[Scenario]:
    """Scenarios from a comma list of keys or names (``a,b`` or ``hello,echo-1k``)."""
    by_name = {s.name: s for s in SCENARIOS.values()}
    chosen = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        scenario = SCENARIOS.get(item) or by_name.get(item)
        if scenario is None:
            raise ValueError(f"unknown scenario {item!r}: choose from "
                             + ", ".join(f"{s.key}/{s.name}" for s in SCENARIOS.values()))
        if scenario.idle and idle is not None:
            scenario = dataclasses.replace(scenario, idle=idle)
        chosen.append(scenario)
    return chosen

