"""The search space of a tune run: its config-file form and Tune's domains.

`ray.tune` is imported inside `domain` only: the CLI reads KNOBS and DEFAULT_SPACE to build
`rllib-o2o --help`, which must not import Ray.
"""

from __future__ import annotations

import math

KNOBS = ("clip_beta", "w0", "w_T", "w_min", "actor_lr", "critic_lr", "alpha_lr", "entropy_scale",
         "seed_episodes", "seed")

# Around the spec's per-dataset table; knobs left out keep the run's preset / defaults.
DEFAULT_SPACE = {
    "clip_beta": {"uniform": [3.0, 15.0]},
    "w_T": [10, 40, 100],
    "w_min": [0.0, 0.5, 1.0],
    "actor_lr": {"loguniform": [1e-4, 1e-3]},
    "critic_lr": {"loguniform": [1e-4, 1e-3]},
    "entropy_scale": [0.5, 1.0],
    "seed_episodes": [0, 50],
}


def domain(name: str, spec):
    """A Tune domain from a config-file spec: [a, b, ...] = choice, {"uniform": [lo, hi]},
    {"loguniform": [lo, hi]}, {"randint": [lo, hi]} (hi exclusive), or a constant."""
    from ray import tune

    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"search space {name}: empty choice list")
        return tune.choice(list(spec))
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError(f"search space {name}: one of uniform/loguniform/randint/choice, got {spec}")
        (kind, args), = spec.items()
        makers = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint,
                  "choice": lambda *values: tune.choice(list(values))}
        if kind not in makers or not isinstance(args, (list, tuple)):
            raise ValueError(f"search space {name}: unknown spec {spec}")
        if kind != "choice" and (len(args) != 2 or not args[0] < args[1]):
            raise ValueError(f"search space {name}: {kind} needs [low, high] with low < high, got {args}")
        if kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"search space {name}: loguniform needs low > 0, got {args}")
        return makers[kind](*args)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return spec
    raise ValueError(f"search space {name}: cannot read {spec!r}")


def param_space(space: dict) -> dict:
    return {name: domain(name, spec) for name, spec in space.items()}


def max_seed_episodes(space: dict, preset_value: int) -> int:
    """The largest K a trial may seed, so the driver ships just those episodes."""
    spec = space.get("seed_episodes")
    if spec is None:
        return int(preset_value)
    if isinstance(spec, (list, tuple)):
        return int(max(spec))
    if isinstance(spec, dict):
        (kind, args), = spec.items()
        return int(max(args)) if kind in ("randint", "choice") else int(math.ceil(max(args)))
    return int(spec)
