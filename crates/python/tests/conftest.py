"""Fixtures shared by the suite: a real Pulsing actor system, and helpers to run a
Python program in a fresh process (for durability across processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

import persisting  # noqa: F401  (fails the whole suite early if the package is missing)


@pytest.fixture
async def system():
    """A standalone Pulsing actor system, shut down after the test."""
    import pulsing as pul

    sys_ = await pul.actor_system()
    try:
        yield sys_
    finally:
        await sys_.shutdown()
        # Pulsing 0.1.2 can crash at interpreter exit right after shutdown()
        await asyncio.sleep(0.2)


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with this one's import path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def spawn_python(code: str, *args: str) -> subprocess.Popen:
    """Starts `code` in a fresh interpreter; its stdout is a pipe of lines."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
