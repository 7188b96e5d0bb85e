"""The ``adamergex`` console script: ``main``'s exit status and output, exit handlers run, no slow teardown."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys, threading, time
atexit.register(lambda: print("exit handler ran", flush=True))
done = []
threading.Thread(target=lambda: (time.sleep(0.3), done.append(1), print("thread finished"))).start()
sys.argv = ["adamergex", *sys.argv[1:]]
from adamergex.cli import console
console()
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=120)


def test_console_keeps_status_output_threads_and_exit_handlers() -> None:
    ok = _run("strategies")
    assert ok.returncode == 0, ok.stderr
    assert "adamergex" in ok.stdout and "madx_stack" in ok.stdout  # the command's buffered output arrived
    assert "thread finished" in ok.stdout and ok.stdout.rstrip().endswith("exit handler ran")
    bad = _run("no-such-command")
    assert bad.returncode == 2
    assert "unknown command 'no-such-command'" in bad.stderr and "exit handler ran" in bad.stdout
