"""The docs tests run what a user runs (README blocks, examples, notebooks) as the user
would: in a fresh interpreter, in an empty directory, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RunPython = Callable[..., subprocess.CompletedProcess[str]]


def user_env() -> dict[str, str]:
    """A user's environment: no model hub (the encoders ship with meshfl), no display."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.fixture
def run_python(tmp_path: Path) -> RunPython:
    """``run_python(*args, timeout=s)``: ``python *args`` in ``tmp_path``; a non-zero exit
    fails the test with the process's output."""

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, (
            f"python {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
        return proc

    return run
