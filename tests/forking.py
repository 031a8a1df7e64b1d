"""Scripts that fork in a fresh interpreter: the child's own checks give the test's verdict.

A fork copies a process with whatever its other threads held at that moment,
so fork-safety tests build the parent's state, fork, check in the child and
report through the child's exit code. :func:`run_forked` runs such a script
and fails the test with the child's exit code and the script's stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_forked(before: str, child: str, after: str = "", timeout: float = 60) -> None:
    """Run ``before`` in a fresh interpreter, fork, run ``child`` in the child, wait, then ``after`` in the parent.

    ``child`` must end the child with ``os._exit(code)``: 0 passes. ``after``
    runs in the parent once the child is gone (to release what ``before``
    held). The script's exit code is the child's. Skips where there is no fork.
    """
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    code = (
        "import os\n"
        + before
        + "pid = os.fork()\nif pid == 0:\n"
        + textwrap.indent(child, "    ")
        + "_, status = os.waitpid(pid, 0)\n"
        + after
        + "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], timeout=timeout, capture_output=True, text=True)
    assert res.returncode == 0, f"the forked child exited with {res.returncode}: {res.stderr}"
