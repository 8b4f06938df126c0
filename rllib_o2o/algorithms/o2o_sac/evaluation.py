"""Evaluation of the SAC family's mean-action policy: all episodes at once, one batched forward per step.

RLlib's default evaluation steps one env on the local EnvRunner, one module forward
through the connector pipelines per env step, episode after episode; at the paper's
10 episodes per 1k online steps that took a large share of the online stage's wall
time (docs/benchmarks.md, "Evaluation"). This one is RLlib's
`custom_evaluation_function` hook: it takes the actor from the learner, runs the
episodes side by side in the driver and reports what RLlib's evaluation reports.

Episode i of an evaluation of a run with seed s starts from
`env.reset(seed=evaluation_seed(s) + i)`: every evaluation of a run, and every method
run with that seed, is scored on the same start states, so two points of a curve (or
two methods) differ by their policies, not by their start states.
"""

from __future__ import annotations

import torch

from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_LEN_MEAN,
    EVALUATION_RESULTS,
    EPISODE_RETURN_MAX,
    EPISODE_RETURN_MEAN,
    EPISODE_RETURN_MIN,
    NUM_ENV_STEPS_SAMPLED,
    NUM_EPISODES,
)
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from rllib_o2o.data.rollouts import run_episodes

EVAL_SEED_STRIDE = 10_000


def evaluation_seed(run_seed: int) -> int:
    """Seed of evaluation episode 0 of a run seeded `run_seed`: 10_000 * (run_seed + 1)."""
    return EVAL_SEED_STRIDE * (int(run_seed) + 1)


def evaluate_policy_episodes(algo, make_policy) -> tuple:
    """Returns and lengths of the episodes of an evaluation of `algo` (its env, seed, duration and
    `eval_num_envs`) by the policy `make_policy()` builds. Building the policy (its network's
    initialisation) and running it leave torch's global generator as they found it."""
    config = algo.config
    episodes = int(config.evaluation_duration)
    with torch.random.fork_rng(devices=[]):
        return run_episodes(config.env, make_policy(), episodes, evaluation_seed(config.seed or 0),
                            (config.env_config or {}).get("max_episode_steps"),
                            num_envs=config.eval_num_envs or episodes)


def batched_evaluation(algo, eval_env_runner_group=None) -> tuple[dict, int, int]:
    """RLlib's `custom_evaluation_function`: `evaluation_duration` episodes of the learner's
    mean action (`algo.mean_action_policy()`), `eval_num_envs` (default: all of them) at once.

    Returns (results, env steps, agent steps) as RLlib's hook expects; results hold the
    keys of RLlib's own evaluation under "env_runners" (also logged to `algo.metrics`, where
    RLlib's new stack reads them). Evaluating leaves torch's global generator as it found
    it, so it does not change the training's random stream.
    """
    config = algo.config
    if config.evaluation_duration_unit != "episodes":
        raise ValueError("batched_evaluation counts episodes: set evaluation_duration_unit='episodes'")
    episodes = int(config.evaluation_duration)
    if not isinstance(config.env, str):
        raise ValueError(f"batched_evaluation makes envs with gymnasium.make: env must be a registered id, "
                         f"got {config.env!r}")
    returns, lengths = evaluate_policy_episodes(algo, algo.mean_action_policy)
    steps = int(lengths.sum())
    # RLlib's new stack reads evaluation results from the algorithm's metrics, not from the
    # hook's return value: log them as an (evaluation) EnvRunner would, one value each.
    runner = MetricsLogger()
    values = ((EPISODE_RETURN_MEAN, returns.mean(), "mean"), (EPISODE_RETURN_MIN, returns.min(), "min"),
              (EPISODE_RETURN_MAX, returns.max(), "max"), (EPISODE_LEN_MEAN, lengths.mean(), "mean"),
              (NUM_EPISODES, episodes, "mean"), (NUM_ENV_STEPS_SAMPLED, steps, "mean"))
    for key, value, reduce in values:
        runner.log_value(key, float(value), reduce=reduce, window=1)
    results = runner.reduce()
    algo.metrics.aggregate([results], key=(EVALUATION_RESULTS, ENV_RUNNER_RESULTS))
    return {ENV_RUNNER_RESULTS: results}, steps, steps
