"""The dataset content fingerprint: by hand, layout-independent, and sensitive to any change of the rows."""

from __future__ import annotations

import hashlib

import numpy as np

from rllib_o2o.data.fingerprint import content_fingerprint
from rllib_o2o.data.schema import write_dataset
from rllib_o2o.data.validate import validate_dataset


def test_fingerprint_by_hand():
    tr = {"rewards": np.array([1.5, -2.0], dtype=np.float32), "terminateds": np.array([False, True])}
    digest = hashlib.sha256()
    # columns in name order: "rewards" < "terminateds"; header then little-endian values
    digest.update(b"rewards:<f4:(2,);" + np.float32(1.5).tobytes() + np.float32(-2.0).tobytes())
    digest.update(b"terminateds:|b1:(2,);\x00\x01")
    assert content_fingerprint(tr) == digest.hexdigest()[:16]
    assert len(content_fingerprint(tr)) == 16
    assert content_fingerprint(dict(reversed(tr.items()))) == digest.hexdigest()[:16]  # dict order does not matter


def test_fingerprint_ignores_the_parquet_layout_and_sees_any_change(tmp_path, pendulum_data):
    tr, meta = pendulum_data
    one_file = validate_dataset(write_dataset(tmp_path / "a", tr, meta, rows_per_file=1000)).fingerprint
    five_files = validate_dataset(write_dataset(tmp_path / "b", tr, meta, rows_per_file=100)).fingerprint
    assert one_file == five_files
    changed = {name: column.copy() for name, column in tr.items()}
    changed["rewards"][123] = np.nextafter(changed["rewards"][123], np.float32(np.inf))  # one ulp in one row
    assert validate_dataset(write_dataset(tmp_path / "c", changed, meta)).fingerprint != one_file
    fewer = {name: column[:449] for name, column in tr.items()}
    fewer["truncateds"] = fewer["truncateds"].copy()
    fewer["truncateds"][-1] = True  # still a valid dataset: the cut-off episode ends one row earlier
    assert validate_dataset(write_dataset(tmp_path / "d", fewer, meta)).fingerprint != one_file
