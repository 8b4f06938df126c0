"""Outputs are as readable as the user's umask allows (tempfile alone would make them 0600/0700)."""

from __future__ import annotations

import os
import stat

import pytest

from rllib_o2o.checkpoints import atomic_dir, commit_dir, save_module_checkpoint, write_json_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_json_and_stage_dirs_follow_the_umask(tmp_path, umask_022):
    write_json_atomic(tmp_path / "results.json", {"a": 1})
    assert mode(tmp_path / "results.json") == 0o644
    tmp = atomic_dir(tmp_path / "stage")
    commit_dir(tmp, tmp_path / "stage")
    assert mode(tmp_path / "stage") == 0o755
    ckpt = save_module_checkpoint(tmp_path / "module", {"w": [1.0, 2.0]}, {"stage": "offline"})
    assert mode(ckpt) == 0o755 and all(mode(p) == 0o644 for p in ckpt.iterdir())


def test_a_private_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert mode(tmp_path / "results.json") == 0o600
