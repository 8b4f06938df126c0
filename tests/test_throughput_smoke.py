"""benchmarks/throughput.py runs end to end at tiny sizes and writes the promised JSON keys.

Smoke test only: no timing assertions (timings belong in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODES = ("sac", "sacml_offline", "aca_online", "balanced_replay")


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_throughput_json_has_every_figure(tmp_path):
    out = tmp_path / "throughput.json"
    tiny = ["--rounds", "1", "--block", "4", "--stock-block", "2", "--dataset-rows", "600",
            "--offline-updates", "4", "--e2e-env-steps", "60", "--sample-steps", "60", "--runners", "0", "1",
            "--vector-envs", "2", "--z-steps", "4", "--raw-env-steps", "200", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), *tiny],
                          cwd=REPO, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    keys = ["reference_ms_per_update", "stock_rllib_sac_ms_per_update", "stock_rllib_sac_ratio",
            "online_e2e_ratio", "online_e2e_ms_per_update", "sacml_offline_train_ms_per_update",
            "sacml_offline_train_ratio", "raw_env_steps_per_s", "vector_env_steps_per_s", "z_steps_per_s",
            "parquet_rows_per_s_ray_data", "parquet_rows_per_s_pyarrow", "torch_threads"]
    keys += [f"{mode}_{what}" for mode in MODES for what in ("ms_per_update", "ratio")]
    for key in keys:
        assert key in result, key
        assert positive(result[key]), (key, result[key])
    assert set(result["env_steps_per_s"]) == {"0", "1"}
    assert all(positive(v) for v in result["env_steps_per_s"].values())
    assert set(result["online_e2e"]) == {"0", "1"}
    assert all(isinstance(v["met"], bool) for v in result["targets"].values())
    assert "targets:" in proc.stdout  # the readable table was printed


@pytest.mark.slow
def test_device_check_runs_on_the_cpu_and_writes_its_figures(tmp_path):
    """benchmarks/device_check.py is meant for a GPU; its code path is the same with --device cpu.

    With --compile (dynamo's "eager" backend here: no C++ compilation) it also times the compiled
    losses of the learner and of the reference."""
    out = tmp_path / "device.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--device", "cpu",
                           "--updates", "4", "--warmup", "2", "--rows", "300", "--threads", "1",
                           "--compile", "--compile-backend", "eager", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu"
    assert (result["settings"]["compile_backend"], result["settings"]["compile_mode"]) == ("eager", "default")
    for name in ("reference", "sac", "aca"):
        keys = [f"{name}_ms_per_update", f"{name}_compiled_ms_per_update", f"{name}_compile_speedup"]
        keys += [] if name == "reference" else [f"{name}_ratio", f"{name}_compiled_ratio"]
        for key in keys:
            assert positive(result[key]), (key, result[key])
