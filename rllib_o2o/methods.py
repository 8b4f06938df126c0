"""The methods the pipeline can run: ACA, its ablations and the baselines.

Every method is the same three-stage harness with one thing changed, so a
comparison differs only in the method: which offline stage feeds it, which
weights start the online stage, and which ACA switches are on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    offline: str | None  # "sacml" (stage 1), "cql" (SAC with CQL's penalty) or None (no offline stage)
    start: str  # online start: "aligned" critic, the "offline" module as is, or "scratch"
    online_mode: str  # O2OSAC mode online: "aca" or "sac"
    fresh_critic: bool = False  # ACA without alignment: R is a freshly initialised network
    use_log_prob_clip: bool = True
    fixed_w: bool = False  # w stays at w0
    seed_episodes: int | None = None  # None: the preset's
    balanced_replay: bool = False  # whole offline dataset online, density-ratio-prioritised replay
    description: str = ""


METHODS = {
    "aca": Method("sacml", "aligned", "aca", description="ACA with the dataset's preset"),
    "aca-seeded": Method("sacml", "aligned", "aca", seed_episodes=50,
                         description="ACA, buffer seeded with the 50 highest-return offline episodes"),
    "aca-unseeded": Method("sacml", "aligned", "aca", seed_episodes=0,
                           description="ACA, no offline data online"),
    "aca-no-align": Method("sacml", "aligned", "aca", fresh_critic=True,
                           description="ablation: R from a random initialisation instead of Z"),
    "aca-no-clip": Method("sacml", "aligned", "aca", use_log_prob_clip=False,
                          description="ablation: raw log pi0, no lower clip"),
    "aca-fixed-w": Method("sacml", "aligned", "aca", fixed_w=True, description="ablation: w fixed at w0"),
    "naive": Method("sacml", "offline", "sac",
                    description="offline SAC+ML actor, critic and temperature, then plain SAC"),
    "cql-sac": Method("cql", "offline", "sac", description="CQL offline, then plain SAC from its weights"),
    "balanced-replay": Method("cql", "offline", "sac", seed_episodes=0, balanced_replay=True,
                              description="Balanced Replay (Lee et al. 2022): CQL offline, then SAC replaying "
                                          "offline and online rows by a learned density ratio; needs the "
                                          "offline data online"),
    "sac-scratch": Method(None, "scratch", "sac", description="plain SAC from a random initialisation"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def needs_alignment(name: str) -> bool:
    return get_method(name).start == "aligned"
