"""Offline data: the Parquet transition schema, importers, rollouts, validation, scores.

The schema and scores are re-exported here; importers and rollouts (which pull
in h5py, gymnasium, minari) are imported from their own modules.
"""

from rllib_o2o.data.schema import (
    COLUMNS,
    DatasetError,
    DatasetMeta,
    Transitions,
    check_transitions,
    dataset_files,
    episode_returns,
    read_dataset,
    read_meta,
    top_k_episodes,
    write_dataset,
)
from rllib_o2o.data.scores import normalized_score, reference_scores

__all__ = [
    "COLUMNS",
    "DatasetError",
    "DatasetMeta",
    "Transitions",
    "check_transitions",
    "dataset_files",
    "episode_returns",
    "normalized_score",
    "read_dataset",
    "read_meta",
    "reference_scores",
    "top_k_episodes",
    "write_dataset",
]
