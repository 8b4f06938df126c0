"""Starting Ray as a run does: joining the cluster of a `ray job submit`, or a local Ray of its own."""

from __future__ import annotations

import os

# The environment of the Ray processes a run starts on this node (the raylet and its workers
# inherit it; a variable already set wins). MIMALLOC_PURGE_DELAY=0: Arrow's allocator (mimalloc)
# gives freed memory back at once. Without it each of Ray Data's read workers keeps what it freed,
# about 0.6 GB after reading a 10M-row dataset, for the rest of the run (docs/benchmarks.md, "Big
# datasets"). On a cluster, start the nodes (`ray start`) with the same variable to get the same.
LOCAL_RAY_ENV = {"MIMALLOC_PURGE_DELAY": "0"}


def init_ray(quiet: bool = False) -> bool:
    """Joins the cluster when RAY_ADDRESS is set (ray job submit), else starts a local Ray without
    the dashboard, its processes given LOCAL_RAY_ENV. False when Ray was running already (its owner
    shuts it down). `quiet`: Ray's, Ray Data's, RLlib's and Tune's console noise off, from Ray's
    start-up on (`rllib_o2o.console`)."""
    import ray

    from rllib_o2o.console import quiet_libraries, ray_init_options

    quiet_libraries(verbose=not quiet)
    if ray.is_initialized():
        return False
    options = ray_init_options(verbose=not quiet)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", **options)
    else:
        for name, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(name, value)
        ray.init(include_dashboard=False, **options)
    return True
