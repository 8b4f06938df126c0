"""Reference returns and the D4RL normalised score.

score = 100 * (R - R_random) / (R_expert - R_random): 0 is a uniform-random
policy, 100 the D4RL expert. Minari datasets carry their own references in
their metadata; the importers prefer those over this table.
"""

from __future__ import annotations

import numpy as np

# D4RL reference returns (random, expert), from d4rl/infos.py.
D4RL_REFERENCES = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

# Project-defined, NOT D4RL: Pendulum-v1 is the embedded default env. The
# minimum is the measured mean return of uniform-random actions (50 episodes,
# seeds 0-49: -1228 +- 270), the maximum a return a trained SAC reaches.
PROJECT_REFERENCES = {
    "pendulum": (-1230.0, -150.0),
}


def reference_scores(env_id: str | None) -> tuple[float, float] | None:
    """(ref_min, ref_max) for a gymnasium id ("Hopper-v5"), a D4RL name
    ("hopper-medium-v2") or a Minari id ("mujoco/hopper/medium-v0"); None if unknown."""
    if not env_id:
        return None
    tokens = env_id.lower().replace("/", "-").split("-")
    for token in tokens:
        if token in D4RL_REFERENCES:
            return D4RL_REFERENCES[token]
        if token in PROJECT_REFERENCES:
            return PROJECT_REFERENCES[token]
    return None


def normalized_score(ret, ref_min: float, ref_max: float):
    """100 * (ret - ref_min) / (ref_max - ref_min); a float for a scalar, an array for an array."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores must differ (both {ref_min})")
    score = 100.0 * (np.asarray(ret, dtype=np.float64) - ref_min) / (ref_max - ref_min)
    return float(score) if score.ndim == 0 else score
