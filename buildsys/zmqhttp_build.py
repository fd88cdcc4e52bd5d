"""PEP 517 backend: setuptools, plus mypy when the hot path is to be compiled.

A wheel (``pip install .``, a release) compiles the modules listed in
``setup.py`` with mypyc when ``ZMQHTTP_COMPILE`` is ``auto`` (the default) or
``1``; an editable install (``pip install -e .``, development) stays pure
Python unless ``ZMQHTTP_COMPILE=1``, because compiled modules sitting next to
the sources would shadow every edit made to them. The source is the same
either way: mypyc compiles the type-checked Python as it is.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import build_sdist, get_requires_for_build_sdist

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

# mypyc ships inside mypy; the version range the project is type-checked with.
_COMPILER = "mypy>=1.10"


def _mode() -> str:
    return os.environ.get("ZMQHTTP_COMPILE", "auto").strip().lower() or "auto"


@contextlib.contextmanager
def _compiling(mode: str) -> Iterator[None]:
    """Run a setuptools hook with ``ZMQHTTP_COMPILE`` set to ``mode`` (setup.py reads it)."""
    saved = os.environ.get("ZMQHTTP_COMPILE")
    os.environ["ZMQHTTP_COMPILE"] = mode
    try:
        yield
    finally:
        if saved is None:
            del os.environ["ZMQHTTP_COMPILE"]
        else:
            os.environ["ZMQHTTP_COMPILE"] = saved


def _compile_requires() -> list[str]:
    """mypy, and the runtime dependencies: mypyc compiles against their types."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [_COMPILER, *project["dependencies"]]


# Finding requirements and metadata runs setup.py too: without compiling
# (mypy is not installed yet then, and the metadata does not depend on it).

def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    extra = _compile_requires() if _mode() != "0" else []
    with _compiling("0"):
        return [*_setuptools.get_requires_for_build_wheel(config_settings), *extra]


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    extra = _compile_requires() if _mode() == "1" else []
    with _compiling("0"):
        return [*_setuptools.get_requires_for_build_editable(config_settings), *extra]


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: Any = None) -> str:
    with _compiling("0"):
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: Any = None) -> str:
    with _compiling("0"):
        return _setuptools.prepare_metadata_for_build_editable(metadata_directory,
                                                               config_settings)


def build_wheel(wheel_directory: str, config_settings: Any = None,
                metadata_directory: str | None = None) -> str:
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory: str, config_settings: Any = None,
                   metadata_directory: str | None = None) -> str:
    mode = "1" if _mode() == "1" else "0"  # pure Python: edits take effect at once
    with _compiling(mode):
        return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
