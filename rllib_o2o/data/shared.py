"""The offline dataset read once per run and shared through Ray's object store.

The alignment task (on any node) and the online stage's replay seeding read the same copy,
zero-copy; Ray Data's read for the offline stage is RLlib's own and stays apart.
"""

from __future__ import annotations

import os

import ray

from rllib_o2o.data.schema import DatasetMeta, Transitions, read_columns, read_meta


class SharedDataset:
    """A validated dataset directory, read into the object store on first use, one column at a time.

    Column by column (`read_columns`), so the driver holds one column besides the store's copy,
    never a second copy of the dataset. Its values are not checked again: the run validated the
    directory before anything trained. `release()` drops the store's copy.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._columns: dict[str, ray.ObjectRef] | None = None
        self._meta: DatasetMeta | None = None

    def refs(self) -> tuple[dict[str, ray.ObjectRef], DatasetMeta]:
        """The columns' object refs and the dataset's meta (what a Ray task is handed)."""
        if self._columns is None:
            self._meta = read_meta(self.path)
            self._columns = {}
            for name, column in read_columns(self.path, self._meta):
                self._columns[name] = ray.put(column)
                del column  # freed before the next column is read
        return self._columns, self._meta

    def arrays(self) -> Transitions:
        """The columns as read-only numpy arrays backed by the object store (no copy)."""
        return resolve_columns(self.refs()[0])

    def release(self) -> None:
        self._columns = None


def resolve_columns(columns: dict) -> Transitions:
    """Columns given as object refs (a SharedDataset's) or as arrays, as arrays."""
    return {name: ray.get(col) if isinstance(col, ray.ObjectRef) else col for name, col in columns.items()}
