"""The Z fit as its own Ray task: a resource request and retries, its curve points streamed to the driver."""

from __future__ import annotations

from collections.abc import Callable

import ray

from rllib_o2o.algorithms.alignment.z_fit import AlignSettings, align
from rllib_o2o.nonfinite import NonFiniteError


def align_remote(num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3):
    """The alignment task with its own resource request; call `.remote(...)` on the result.

    Pass the same `num_cpus` in its AlignSettings: the task sizes torch's threads by it.
    """
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(align)


def align_in_task(actor_state: dict, data, hidden: tuple, settings: AlignSettings, num_gpus: float,
                  on_point: Callable[[dict], None], offline_critic: dict | None = None) -> dict:
    """`align` as its Ray task (`settings.num_cpus`, `num_gpus`), each curve point handed to `on_point`
    on the driver while the fit runs. The points travel through a Ray queue, so the task may run
    on any node; a retried task (a dead worker) sends its points again from the start."""
    from ray.exceptions import RayTaskError
    from ray.util.queue import Queue

    queue = Queue(actor_options={"num_cpus": 0})
    try:
        task = align_remote(num_cpus=settings.num_cpus, num_gpus=num_gpus)
        result = task.remote(actor_state, data, hidden, settings, progress=queue.put, offline_critic=offline_critic)
        while True:
            finished = ray.wait([result], timeout=1.0)[0]
            waiting = queue.qsize()  # all points are queued before the task returns (`put` blocks)
            for point in queue.get_nowait_batch(waiting) if waiting else ():
                on_point(point)
            if finished:
                try:
                    return ray.get(result)
                except RayTaskError as err:
                    if isinstance(err.cause, NonFiniteError):  # its one-line message, not the task's traceback
                        raise err.cause from None
                    raise
    finally:
        queue.shutdown(force=True)
