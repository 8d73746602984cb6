"""Run a multi-process (launcher + spawned ranks) command so that a hang fails fast and leaves no orphans."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest


def run_ranks(cmd: list[str], *, timeout: float = 300, **kwargs) -> tuple[int, str, str]:
    """Run `cmd` in its own process group; on timeout kill the whole group and fail the test."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank it spawned
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:3])}... hung for {timeout:.0f} s:\n{out[-2000:]}\n{err[-2000:]}")
    return proc.returncode, out, err
