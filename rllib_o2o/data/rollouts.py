"""Running gymnasium envs: collecting transitions in the dataset schema, and evaluation.

Termination and truncation stay separate (a time limit is a truncation, which
a critic must bootstrap through), so data collected here trains correctly.
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from rllib_o2o.data.schema import DatasetError, DatasetMeta, Transitions
from rllib_o2o.suggest import UnknownNameError

# obs -> action in env units; evaluation calls it on a batch [k, obs_dim] and expects [k, act_dim].
Policy = Callable[[np.ndarray], np.ndarray]


def is_registered(env_id: str | None) -> bool:
    """Whether gymnasium knows `env_id` (D4RL names such as "hopper-medium-v2" are not envs)."""
    if not env_id:
        return False
    try:
        gym.spec(env_id)
    except gym.error.Error:
        return False
    return True


def check_registered(env_id: str | None) -> None:
    """Raises UnknownNameError, naming the nearest registered id, unless gymnasium knows `env_id`."""
    if not is_registered(env_id):
        raise UnknownNameError("gymnasium env", [env_id], gym.registry, hint="; pass --env with a registered id")


def make_env(env_id: str, max_episode_steps: int | None = None) -> gym.Env:
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise DatasetError(f"{env_id}: cannot create gymnasium env ({err})") from None


def env_meta(env_id: str, source: str = "user") -> DatasetMeta:
    """Shapes and action bounds of a registered Box/Box env, as an (empty) DatasetMeta."""
    env = make_env(env_id)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(f"{env_id}: only Box observation and action spaces are supported "
                           f"(got {obs_space}, {act_space})")
    return DatasetMeta(
        env_id=env_id, obs_shape=tuple(obs_space.shape), action_shape=tuple(act_space.shape),
        action_low=act_space.low.astype(np.float64).ravel().tolist(),
        action_high=act_space.high.astype(np.float64).ravel().tolist(), source=source)


def _act(env: gym.Env, policy: Policy | None, obs: np.ndarray) -> np.ndarray:
    """The executed action: the policy's (or a random one), clipped to the action space
    so that what is stored is what the env ran."""
    space = env.action_space
    if policy is None:
        return np.asarray(space.sample(), dtype=np.float32)
    action = np.asarray(policy(obs), dtype=np.float32).reshape(space.shape)
    return np.clip(action, space.low, space.high)


def collect_transitions(env_id: str, num_transitions: int, policy: Policy | None = None,
                        seed: int = 0, max_episode_steps: int | None = None,
                        progress: Callable[[str], None] | None = None) -> Transitions:
    """Exactly `num_transitions` steps of `policy` (None: uniform random, seeded) in `env_id`.

    Episodes are numbered from 0, `t` counts steps within an episode, and the
    last, possibly unfinished, episode ends with truncateds=True.
    """
    if num_transitions < 1:
        raise ValueError("num_transitions must be >= 1")
    env = make_env(env_id, max_episode_steps)
    try:
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        obs = np.asarray(obs, dtype=np.float32).ravel()
        act_dim = int(np.prod(env.action_space.shape))
        tr = {
            "obs": np.empty((num_transitions, obs.size), np.float32),
            "actions": np.empty((num_transitions, act_dim), np.float32),
            "rewards": np.empty(num_transitions, np.float32),
            "new_obs": np.empty((num_transitions, obs.size), np.float32),
            "terminateds": np.zeros(num_transitions, bool),
            "truncateds": np.zeros(num_transitions, bool),
            "eps_id": np.empty(num_transitions, np.int64),
            "t": np.empty(num_transitions, np.int64),
        }
        eps, t = 0, 0
        report_every = max(1, num_transitions // 10)
        for i in range(num_transitions):
            action = _act(env, policy, obs)
            new_obs, reward, terminated, truncated, _ = env.step(action)
            new_obs = np.asarray(new_obs, dtype=np.float32).ravel()
            tr["obs"][i], tr["actions"][i], tr["rewards"][i] = obs, action.ravel(), reward
            tr["new_obs"][i], tr["eps_id"][i], tr["t"][i] = new_obs, eps, t
            tr["terminateds"][i], tr["truncateds"][i] = terminated, truncated
            if terminated or truncated:
                eps, t = eps + 1, 0
                obs = np.asarray(env.reset()[0], dtype=np.float32).ravel()
            else:
                obs, t = new_obs, t + 1
            if progress and (i + 1) % report_every == 0:
                progress(f"{env_id}: {i + 1}/{num_transitions} transitions, {eps} episodes done")
        tr["truncateds"][-1] |= ~tr["terminateds"][-1]
        return tr
    finally:
        env.close()


def evaluate_policy(env_id: str, policy: Policy, num_episodes: int, seed: int,
                    max_episode_steps: int | None = None, num_envs: int = 1) -> np.ndarray:
    """Undiscounted returns of `num_episodes` full episodes (episode i reset with seed + i)."""
    return run_episodes(env_id, policy, num_episodes, seed, max_episode_steps, num_envs)[0]


def run_episodes(env_id: str, policy: Policy, num_episodes: int, seed: int,
                 max_episode_steps: int | None = None, num_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of `num_episodes` full episodes, episode i reset with seed + i.

    Up to `num_envs` episodes run side by side with one policy call per step on the
    batch [k, obs_dim] of their observations (a free env takes the next episode), so
    a deterministic policy gets the same returns whatever `num_envs` is: each
    episode's start state comes from its own seed, not from the episodes before it.
    """
    if num_episodes < 1 or num_envs < 1:
        raise ValueError(f"num_episodes and num_envs must be >= 1, got {num_episodes}, {num_envs}")
    envs = [make_env(env_id, max_episode_steps) for _ in range(min(num_envs, num_episodes))]
    returns = np.zeros(num_episodes, dtype=np.float64)
    lengths = np.zeros(num_episodes, dtype=np.int64)
    try:
        space = envs[0].action_space
        episode_of = list(range(len(envs)))  # the episode each env runs, None once there is none left
        obs = [np.asarray(env.reset(seed=seed + ep)[0], np.float32) for env, ep in zip(envs, episode_of)]
        next_episode = len(envs)
        while True:
            live = [i for i, ep in enumerate(episode_of) if ep is not None]
            if not live:
                break
            batch = np.stack([obs[i].ravel() for i in live])
            actions = np.asarray(policy(batch), dtype=np.float32).reshape(len(live), *space.shape)
            actions = np.clip(actions, space.low, space.high)  # what is counted is what the env ran
            for i, action in zip(live, actions):
                ob, reward, terminated, truncated, _ = envs[i].step(action)
                ep = episode_of[i]
                returns[ep] += float(reward)
                lengths[ep] += 1
                if not (terminated or truncated):
                    obs[i] = np.asarray(ob, np.float32)
                elif next_episode < num_episodes:
                    episode_of[i] = next_episode
                    obs[i] = np.asarray(envs[i].reset(seed=seed + next_episode)[0], np.float32)
                    next_episode += 1
                else:
                    episode_of[i] = None
    finally:
        for env in envs:
            env.close()
    return returns, lengths
