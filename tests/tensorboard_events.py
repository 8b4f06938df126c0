"""Reads TensorBoard event files back as TensorBoard shows them (tensorboard itself is not installed)."""

from __future__ import annotations

import struct
from pathlib import Path

from tensorboardX.proto.event_pb2 import Event, SessionLog


def records(path: Path):
    """The records of one TFRecord file: u64 length, u32 masked CRC of it, the data, u32 masked CRC."""
    data, pos = Path(path).read_bytes(), 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        yield data[pos + 12:pos + 12 + length]
        pos += 12 + length + 4


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] over the directory's event files in TensorBoard's order (by name).

    A session START at step s (a resumed writer's purge_step) drops the points earlier
    files logged at steps >= s, as TensorBoard does.
    """
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for raw in records(path):
            event = Event.FromString(raw)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                out = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in out.items()}
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
