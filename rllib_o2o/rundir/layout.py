"""A run directory as an object: where each stage, results file and dataset copy lives, and its storage.

One run directory holds the shared offline and alignment stages and one online stage
and results file per method (`names`). `RunDir` joins those names to its path and
hands its `Mirror` (None: no storage) to each `StageDir`, so what a stage writes is
uploaded without any registry of mirrored directories.
"""

from __future__ import annotations

from pathlib import Path

from rllib_o2o.methods import Variants
from rllib_o2o.rundir.lock import RunLock
from rllib_o2o.rundir.mirror import Mirror
from rllib_o2o.rundir.names import (
    DATASETS_DIR,
    FETCHED_DATASET_DIR,
    IMPORTED_DATASET_DIR,
    RUN_CONFIG_FILE,
    RUN_DATA_FILE,
    TUNE_DIR,
    alignment_stage_name,
    offline_stage_name,
    online_stage_name,
    results_file_name,
    tune_summary_file_name,
)
from rllib_o2o.rundir.stage import StageDir


class RunDir:
    """The run directory at `path`, mirrored to storage through `mirror` (None: not mirrored)."""

    def __init__(self, path: str | Path, mirror: Mirror | None = None):
        self.path = Path(path)
        self.mirror = mirror

    @classmethod
    def open(cls, out: str | Path, storage_path: str | None = None) -> RunDir:
        """The run directory `out`, mirrored to STORAGE_PATH/<its name> when a storage path is given
        (opening the storage raises StorageError; nothing is written)."""
        return cls(out, None if storage_path is None else Mirror(storage_path, out))

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, {self.mirror!r})"

    # -- what it holds ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / RUN_CONFIG_FILE

    @property
    def data_fingerprint_path(self) -> Path:
        return self.path / RUN_DATA_FILE

    @property
    def datasets_path(self) -> Path:
        """Where the embedded default dataset is generated."""
        return self.path / DATASETS_DIR

    @property
    def imported_dataset_path(self) -> Path:
        return self.path / IMPORTED_DATASET_DIR

    @property
    def fetched_dataset_path(self) -> Path:
        return self.path / FETCHED_DATASET_DIR

    @property
    def tune_path(self) -> Path:
        return self.path / TUNE_DIR

    def tune_summary_path(self, experiment: str) -> Path:
        return self.path / tune_summary_file_name(experiment)

    def results_path(self, method: str) -> Path:
        return self.path / results_file_name(method)

    def stage(self, name: str) -> StageDir:
        return StageDir(self.path / name, self.mirror)

    def offline_stage(self, method: str, variants: Variants | None = None) -> StageDir | None:
        """The offline stage `method` starts from; None for a method without one. `variants`: the run's
        named variants (`PipelineConfig.variants`), when `method` may be one."""
        name = offline_stage_name(method, variants)
        return None if name is None else self.stage(name)

    def alignment_stage(self, method: str, variants: Variants | None = None) -> StageDir:
        return self.stage(alignment_stage_name(method, variants))

    def online_stage(self, method: str) -> StageDir:
        return self.stage(online_stage_name(method))

    # -- storage and exclusive use -----------------------------------------------------------

    def push_file(self, path: Path) -> None:
        """Uploads one file of the run (config, results) when the run has storage."""
        if self.mirror is not None:
            self.mirror.push_file(path)

    def stored_json(self, name: str):
        """A JSON file of the run as stored (None without storage, or if it is not there)."""
        return None if self.mirror is None else self.mirror.read_json(name)

    def sync(self) -> None:
        """With storage: what the run dir lacks comes down, what storage lacks goes up (`Mirror.sync`)."""
        if self.mirror is not None:
            self.mirror.sync()

    def lock(self, stage: str | None = None) -> RunLock:
        """This process's exclusive use of the directory and of its storage run, or with `stage`, of that
        stage (beside other processes' stages: a benchmark's stage tasks) (a context manager)."""
        return RunLock(self.path, self.mirror, stage=stage)
