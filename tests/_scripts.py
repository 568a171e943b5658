"""Run the repository's scripts as a user would (shared by the tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python <args>`` in the repository root and capture its output."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def run_main(script: str, *args: str) -> subprocess.CompletedProcess:
    """Call ``<script>.main(args)`` in this process, capturing what it prints; return it as :func:`run_script` would.

    For the many checks that end before any work (bad inputs, one-line errors): the same ``main`` as the script, without
    the 3 s start-up of a fresh interpreter each time. Anything ``main`` does not catch propagates (a traceback fails
    the test), as it would reach the user's terminal."""
    import contextlib
    import importlib.util
    import io
    import os

    spec = importlib.util.spec_from_file_location(f"_script_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = module.main(list(args))
            except SystemExit as e:  # argparse's errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
