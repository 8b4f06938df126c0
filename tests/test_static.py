"""Static checks that catch what unit tests miss: names that only fail when a rarely-run line executes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_no_undefined_names_or_unused_imports():
    pytest.importorskip("ruff")
    targets = [str(REPO / d) for d in ("rllib_o2o", "pipelines", "benchmarks", "cluster", "tests")
               if (REPO / d).exists()]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", *targets],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
