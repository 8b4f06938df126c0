"""Datasets from pyarrow filesystem URIs, and data paths that do not assume the driver's disk."""

from __future__ import annotations

import pytest

from rllib_o2o.data.schema import DatasetError, read_dataset
from rllib_o2o.context import resolve_dataset
from rllib_o2o.pipeline import PipelineConfig
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.data.location import fetch_dataset, is_uri, ray_data_path, ray_data_read_args


def test_uri_detection_and_ray_data_paths(tmp_path, monkeypatch):
    assert is_uri("s3://bucket/hopper-medium") and is_uri("file:///data/x") and not is_uri("/data/x")
    assert ray_data_path("gs://bucket/ds") == "gs://bucket/ds"
    monkeypatch.chdir(tmp_path)
    assert ray_data_path("ds") == str(tmp_path.resolve() / "ds")  # absolute, no deprecated local://
    assert ray_data_read_args("gs://bucket/ds") == {}  # any node reads a URI
    assert ray_data_read_args("ds") == {}  # Ray not started yet: it will be this node alone


def test_fetch_copies_a_dataset_from_a_uri_once(tmp_path, pendulum_dir):
    uri = pendulum_dir.resolve().as_uri()  # file:// goes through the same pyarrow code path as s3://
    copy = fetch_dataset(uri, tmp_path / "copy")
    original, _ = read_dataset(pendulum_dir)
    fetched, _ = read_dataset(copy)
    for key in original:
        assert (original[key] == fetched[key]).all(), key
    copied = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    assert fetch_dataset(uri, tmp_path / "copy") == copy  # a complete copy is there: not copied again
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()} == copied
    assert not list(tmp_path.glob("*.tmp-*"))


def test_fetch_refuses_what_is_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset.json"):
        fetch_dataset((tmp_path / "empty").as_uri(), tmp_path / "copy")
    with pytest.raises(DatasetError, match="cannot open"):
        fetch_dataset("nosuchscheme://bucket/data", tmp_path / "copy")
    assert not (tmp_path / "copy").exists() and not list(tmp_path.glob("*.tmp-*"))


def test_pipeline_resolves_a_uri_dataset_into_the_run_directory(tmp_path, pendulum_dir):
    cfg = PipelineConfig(dataset=pendulum_dir.resolve().as_uri(), env="Pendulum-v1", out=str(tmp_path / "run"))
    local = resolve_dataset(cfg, RunDir(tmp_path / "run"))
    assert local == tmp_path / "run" / "datasets" / "fetched" and (local / "dataset.json").exists()
