"""Benchmark profiles: which datasets, methods, seeds and budgets a comparison runs.

`smoke` checks the harness in minutes; `small` is the committed comparison
(Hopper-v5 medium, 3 seeds, reduced budgets, well under an hour of training on
2 cores once the dataset exists); `paper` is the reference protocol of the spec
(500k offline updates, 100k online steps, 3 MuJoCo tasks x 3 datasets, 5 seeds),
meant for a GPU node or a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The whole catalogue (methods.METHODS), in the order reports list it.
ALL_METHODS = ("aca", "aca-td", "naive", "cql-sac", "sac-scratch", "aca-no-align", "aca-no-clip",
               "aca-fixed-w", "balanced-replay", "aca-paper", "wsrl", "rlpd")

# The repository's committed benchmark datasets: <name>/ (Parquet + dataset.json), made once by `collect`.
COMMITTED_DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets"

ENV_IDS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5",
           "pendulum": "Pendulum-v1"}


@dataclass(frozen=True)
class Profile:
    datasets: tuple[str, ...]  # "<task>-<kind>", e.g. "hopper-medium"
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    pipeline: dict  # PipelineConfig values shared by every run
    collect: dict = field(default_factory=dict)  # CollectSettings values for generated datasets
    # True: the datasets are the repository's committed rows (COMMITTED_DATASETS_DIR), never generated;
    # `collect` with `collect`'s settings is the recipe that made them.
    committed_data: bool = False


PROFILES = {
    "smoke": Profile(
        datasets=("pendulum-medium",), methods=ALL_METHODS, seeds=(0,),
        pipeline=dict(offline_steps=300, offline_eval_every=300, align_steps=200, online_steps=600,
                      eval_every=200, eval_episodes=1, batch_size=64, hidden=[64, 64], replay_capacity=10_000,
                      online_warmup_steps=200),
        collect=dict(num_transitions=2_000, train_env_steps=2_000, env_steps_per_iteration=500,
                     random_warmup_steps=500, medium_target_score=20.0, eval_episodes=2),
    ),
    "small": Profile(
        datasets=("hopper-medium",), methods=ALL_METHODS, seeds=(0, 1, 2),
        pipeline=dict(offline_steps=5_000, offline_eval_every=2_500, align_steps=2_000, online_steps=5_000,
                      eval_every=500, eval_episodes=5, replay_capacity=100_000, online_warmup_steps=1_000),
        collect=dict(num_transitions=20_000, train_env_steps=30_000, env_steps_per_iteration=1_000,
                     random_warmup_steps=1_000, medium_target_score=20.0, eval_episodes=5),
    ),
    # The quality profile: D4RL-style medium data (behaviour SAC stopped at a third of the expert score,
    # 100k stochastic transitions), committed to the repository; 50k offline updates, 20k online steps.
    "medium": Profile(
        datasets=("hopper-medium", "halfcheetah-medium", "walker2d-medium"),
        methods=("aca", "naive", "aca-td", "aca-paper", "sac-scratch", "cql-sac", "wsrl", "rlpd", "balanced-replay"),
        seeds=(0, 1, 2),
        pipeline=dict(offline_steps=50_000, offline_eval_every=10_000, align_steps=50_000,
                      align_plateau_patience=10, online_steps=20_000, eval_every=1_000, eval_episodes=10,
                      replay_capacity=200_000),
        collect=dict(num_transitions=100_000, train_env_steps=150_000, env_steps_per_iteration=1_000,
                     random_warmup_steps=5_000, medium_target_score=100.0 / 3.0, eval_episodes=5),
        committed_data=True,
    ),
    "paper": Profile(
        datasets=tuple(f"{task}-{kind}" for task in ("halfcheetah", "hopper", "walker2d")
                       for kind in ("medium", "medium-replay", "medium-expert")),
        methods=ALL_METHODS, seeds=(0, 1, 2, 3, 4),
        pipeline=dict(offline_steps=500_000, offline_eval_every=10_000, align_steps=100_000, online_steps=100_000,
                      eval_every=1_000, eval_episodes=10, replay_capacity=1_000_000),
        collect=dict(num_transitions=1_000_000, train_env_steps=1_000_000, env_steps_per_iteration=1_000,
                     random_warmup_steps=10_000, eval_episodes=10),
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def split_dataset_name(name: str) -> tuple[str, str]:
    """'hopper-medium-replay' -> ('Hopper-v5', 'medium-replay')."""
    task, _, kind = name.partition("-")
    if task not in ENV_IDS or not kind:
        raise ValueError(f"dataset name {name!r} must be <task>-<kind> with task in {sorted(ENV_IDS)}")
    return ENV_IDS[task], kind
