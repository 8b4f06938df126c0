"""torch's intra-op threads sized to the CPUs Ray reserved for the process that runs it.

torch starts as many intra-op (OpenMP) threads as the machine has cores unless
OMP_NUM_THREADS says otherwise. Ray sets that variable to a worker's CPUs only where it is
unset (an exported OMP_NUM_THREADS reaches every worker as it is) and never in the driver,
which runs the local learner. Beside EnvRunners, the alignment task or a second run the
extra threads spin against each other: on a 2-core machine one SAC update of 256x256 MLPs
took 22.5 ms with 1 thread under load and over 0.2 s with 2. Every process that runs torch
here (the driver with its local learner, a remote learner, each EnvRunner, the alignment
task) therefore sets its thread count from its own allocation, unless the user names a
number (`torch_threads`).
"""

from __future__ import annotations

import math

AUTO = "auto"


def resolve_torch_threads(setting, allocation: float) -> int:
    """The thread count for a process holding `allocation` CPUs.

    `setting` is "auto" (the allocation, rounded down, at least 1: Ray's own rule for
    OMP_NUM_THREADS, so a GPU learner with 0 CPUs or a 0.5-CPU task still computes) or a
    positive int, taken as is. Anything else is a ValueError naming the value.
    """
    if setting == AUTO:
        if isinstance(allocation, bool) or not isinstance(allocation, (int, float)) or allocation < 0:
            raise ValueError(f"a CPU allocation must be a number >= 0, got {allocation!r}")
        return max(1, math.floor(allocation))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"torch_threads must be {AUTO!r} or a positive int, got {setting!r}")
    return setting


def apply_torch_threads(num_threads: int) -> int:
    """Sets this process's torch intra-op threads; returns the count torch now reports.

    torch is imported here, not at module level, so validating a config never imports it.
    """
    import torch

    torch.set_num_threads(num_threads)
    return torch.get_num_threads()

