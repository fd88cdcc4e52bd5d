"""A short run of each atheris harness in ``fuzz/``: any crash fails the test.

Each harness runs in its own process (libFuzzer owns the process and exits on
a crash) for a bounded number of executions, starting from the seed corpus in
``fuzz/corpus``. New corpus entries and crash artifacts go to a temporary
directory, never into the repository. Long runs are described in
``docs/fuzzing.md``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed (Linux, CPython < 3.13 only)")

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
RUNS = 20_000
MAX_SECONDS = 20
# libFuzzer stops at RUNS or MAX_SECONDS; start-up (instrumenting imports) and
# the seed corpus come on top. Past this the process is killed and the test fails.
PROCESS_TIMEOUT = 50


@pytest.mark.parametrize(
    ("harness", "corpus", "extra"),
    [
        ("fuzz_http_core.py", "http", ["-dict=" + str(FUZZ / "http.dict")]),
        ("fuzz_fabric_decoder.py", "fabric", []),
    ],
)
def test_harness_short_run(harness: str, corpus: str, extra: list[str],
                           tmp_path: Path) -> None:
    work = tmp_path / "corpus"
    work.mkdir()
    command = [
        sys.executable, str(FUZZ / harness),
        f"-runs={RUNS}", f"-max_total_time={MAX_SECONDS}", "-timeout=10",
        "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
        *extra, str(work), str(FUZZ / "corpus" / corpus),
    ]
    try:
        done = subprocess.run(command, cwd=FUZZ, capture_output=True, text=True,
                              timeout=PROCESS_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child
        pytest.fail(f"{harness} did not finish in {PROCESS_TIMEOUT} s: {exc.stderr!r:.2000}")
    # atheris prints the Python traceback on stdout, libFuzzer its report on stderr.
    tail = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                     if not line.startswith("INFO: Instrumenting"))[-6000:]
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert done.returncode == 0 and not crashes, (
        f"{harness} exited {done.returncode}, artifacts {crashes}:\n{tail}")
    assert "Done " in done.stderr, tail
