"""O2OSAC: RLlib's SAC with a flat replay path and the SAC+ML / ACA switches.

One algorithm serves three stages of the project: behaviour-policy SAC for
`collect`, offline SAC+ML (stage 1, data read through RLlib's offline API) and
ACA online fine-tuning (stage 3). The config subclasses `SACConfig`, so every
RLlib knob (env runners, evaluation, learners, resources) works as for SAC; its
settings are declared and documented in o2o_sac_config.py.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np
import pyarrow

from ray.rllib.algorithms.sac import SAC
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
)

from rllib_o2o.algorithms.o2o_sac.env_runner import O2OEnvRunner
from rllib_o2o.algorithms.o2o_sac.o2o_sac_config import O2OSACConfigBase
from rllib_o2o.algorithms.o2o_sac.o2o_sac_rl_module import handover_weights
from rllib_o2o.algorithms.o2o_sac.recorder import TransitionRecorder
from rllib_o2o.metrics import NUM_ENV_STEPS_SAMPLED, PRIORITIES
from rllib_o2o.policy import ActorPolicy
from rllib_o2o.replay import (
    BalancedReplayBuffer,
    FlatReplayBuffer,
    StreamingOfflineSampler,
    SymmetricReplayBuffer,
    normalize_actions,
    offline_chunk_arrays,
)
from rllib_o2o.threads import apply_torch_threads, resolve_torch_threads

# O2OEnvRunner too: configs pickled before it moved to env_runner.py name it in this module.
__all__ = ["O2OSAC", "O2OEnvRunner", "O2OSACConfig"]

logger = logging.getLogger(__name__)
ENV_RUNNER_RECOVERY_TIMEOUT_S = 300.0


class O2OSACConfig(O2OSACConfigBase):
    """SACConfig plus the family's settings (`o2o()`, o2o_sac_config.py), building O2OSAC."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or O2OSAC)


class O2OSAC(SAC):
    @classmethod
    def get_default_config(cls) -> O2OSACConfig:
        return O2OSACConfig()

    def setup(self, config) -> None:
        super().setup(config)
        self._size_torch_threads()
        obs_space, act_space = self._spaces()
        self._action_low = act_space.low.astype(np.float32)
        self._action_high = act_space.high.astype(np.float32)
        obs_dim, act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
        if self.config.is_offline:
            self.replay = self._load_offline_data(obs_dim, act_dim)
        elif self.config.update_class.uses_density_ratio:
            self.replay = BalancedReplayBuffer(
                self.config.replay_capacity, obs_dim, act_dim, seed=self.config.seed or 0,
                initial_online_fraction=self.config.balanced_replay_online_fraction)
        elif self.config.update_class.offline_batch_fraction:
            self.replay = SymmetricReplayBuffer(self.config.replay_capacity, obs_dim, act_dim,
                                                seed=self.config.seed or 0,
                                                offline_fraction=self.config.update_class.offline_batch_fraction)
        else:
            self.replay = FlatReplayBuffer(self.config.replay_capacity, obs_dim, act_dim, seed=self.config.seed or 0)
        self._env_steps_sampled = 0
        self._held_back: tuple[np.ndarray, ...] | None = None  # sampled past an iteration's end
        self._recorder: TransitionRecorder | None = None

    @override(SAC)
    def _setup_logdir(self) -> None:
        """A Tune trial keeps Tune's trial directory; otherwise `log_dir` or no directory, instead of
        RLlib's empty ~/ray_results/<timestamp> per build (nothing of this family writes there)."""
        if self._storage is not None:
            super()._setup_logdir()
            return
        self._logdir = self.config.log_dir
        if self._logdir:
            os.makedirs(self._logdir, exist_ok=True)

    def _size_torch_threads(self) -> None:
        """torch threads of the driver and a remote learner from their allocations (rllib_o2o/threads.py).

        The driver runs the local learner, the local EnvRunner and a local evaluation runner, so
        it takes the main-process allocation; a remote learner is asked through Ray to take
        `learner_cpus()`. Remote EnvRunners size themselves (O2OEnvRunner).
        """
        config = self.config
        apply_torch_threads(resolve_torch_threads(config.torch_threads, config.main_process_cpus()))
        if config.num_learners > 0:
            learner_threads = resolve_torch_threads(config.torch_threads, config.learner_cpus())
            self.call_learner(lambda learner: apply_torch_threads(learner_threads))

    def get_state(self, *args, **kwargs):
        """Adds the env-step counter and (online) the flat replay buffer to RLlib's state."""
        state = super().get_state(*args, **kwargs)
        state["o2o"] = {
            "env_steps_sampled": self._env_steps_sampled,
            "replay": None if self.config.is_offline else self.replay.get_state(),
        }
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        if "o2o" in state:
            self._env_steps_sampled = state["o2o"]["env_steps_sampled"]
            if state["o2o"]["replay"] is not None:
                self.replay.set_state(state["o2o"]["replay"])

    @property
    def env_steps_sampled(self) -> int:
        return self._env_steps_sampled

    def lifetime_updates(self) -> int:
        """Gradient updates the learner's module has made (restored with it from a checkpoint)."""
        return self.call_learner(lambda learner: int(learner.module[DEFAULT_MODULE_ID].unwrapped().num_updates))

    def start_recording(self) -> None:
        """Keeps every sampled transition in the dataset schema (for medium-replay data)."""
        self._recorder = TransitionRecorder()

    def recorded_transitions(self) -> dict[str, np.ndarray]:
        """What was sampled since `start_recording`; unfinished episodes end truncated."""
        return self._recorder.transitions()

    def _spaces(self):
        return self.call_learner(
            lambda learner: (learner.module["default_policy"].observation_space,
                             learner.module["default_policy"].action_space)
        )

    def mean_action_policy(self) -> ActorPolicy:
        """The learner's current policy as a numpy policy (mean action, env units), for evaluation: its
        actor, or the actor's moving average when it keeps one (`actor_ema`, `handover_weights`)."""
        return self.actor_policy(handover_weights(self.call_learner(lambda learner: learner.get_module_weights())))

    def actor_policy(self, weights: dict) -> ActorPolicy:
        """The mean-action numpy policy of the actor in module `weights`."""
        obs_space, _ = self._spaces()
        return ActorPolicy.from_module_weights(
            weights, obs_dim=int(np.prod(obs_space.shape)), act_dim=int(self._action_low.size),
            hidden=self.config.hidden, low=self._action_low, high=self._action_high, seed=None,
            activation=self.config.actor_activation)

    def call_learner(self, func):
        """Runs `func(learner)` on the (single) learner and returns its result."""
        results = list(self.learner_group.foreach_learner(func))
        for result in results:
            if not result.ok:
                raise result.get()
        return results[0].get()

    def dataset_states(self, num_states: int) -> np.ndarray | None:
        """`num_states` of the offline data's states, evenly spaced over its rows (the same ones at every
        call), on which the critic's value of the policy is estimated; None when the rows are streamed
        (above `offline_buffer_max_rows`) or the algorithm is not offline."""
        if not self.config.is_offline or not isinstance(self.replay, FlatReplayBuffer) or not len(self.replay):
            return None
        return self.replay.obs[np.linspace(0, len(self.replay) - 1, min(num_states, len(self.replay))).astype(int)]

    def _load_offline_data(self, obs_dim: int, act_dim: int):
        """Streams the Parquet dataset once through Ray Data into the flat buffer (or, above
        `offline_buffer_max_rows`, samples by streaming it every epoch)."""
        dataset = self.offline_data.data
        num_rows = dataset.count()
        to_arrays = functools.partial(offline_chunk_arrays, low=self._action_low, high=self._action_high)
        if num_rows > self.config.offline_buffer_max_rows:
            logger.info("%d offline rows > offline_buffer_max_rows: streaming them", num_rows)
            return StreamingOfflineSampler(dataset, to_arrays, seed=self.config.seed or 0)
        replay = FlatReplayBuffer(num_rows, obs_dim, act_dim, seed=self.config.seed or 0)
        start = time.perf_counter()
        for chunk in dataset.iter_batches(batch_size=65536, batch_format="numpy"):
            replay.add(*to_arrays(chunk))
        pyarrow.default_memory_pool().release_unused()  # Arrow's allocator would keep the blocks' memory
        logger.info("loaded %d offline transitions in %.1fs", num_rows, time.perf_counter() - start)
        return replay

    # -- training ----------------------------------------------------------------
    def training_step(self) -> None:
        if self.config.is_offline:
            num_updates = self.config.updates_per_iteration
            if self.config.max_updates is not None:
                num_updates = min(num_updates, self.config.max_updates - self.lifetime_updates())
            if num_updates > 0:
                self._learn(num_updates)
            return
        target = self._env_steps_sampled + self.config.env_steps_per_iteration
        if self.config.max_env_steps is not None:
            target = min(target, self.config.max_env_steps)
        owed_updates = 0.0
        while self._env_steps_sampled < target:
            num_new = self._sample_into_replay(limit=target - self._env_steps_sampled)
            if num_new == 0:
                self._recover_env_runners()
            if len(self.replay) < self.config.num_steps_sampled_before_learning_starts:
                continue
            # Steps of the warm-up owe no updates: the first is owed by the step after it.
            num_new = min(num_new, self._env_steps_sampled - self.config.warmup_env_steps)
            if num_new <= 0:
                continue
            owed_updates += num_new * self.config.updates_per_env_step
            if owed_updates >= 1:
                self._learn(int(owed_updates))
                owed_updates -= int(owed_updates)
                self.env_runner_group.sync_weights(
                    from_worker_or_learner_group=self.learner_group, inference_only=True
                )

    def _recover_env_runners(self, timeout_s: float = ENV_RUNNER_RECOVERY_TIMEOUT_S) -> None:
        """Every remote EnvRunner failed mid-iteration: bring them back now.

        RLlib restores failed EnvRunners only between `training_step` calls; this loop
        samples until it has its env steps, so without this it would spin forever.
        """
        group = self.env_runner_group
        if (group is None or group.num_remote_workers() == 0 or group.num_healthy_remote_workers() > 0
                or not self.config.restart_failed_env_runners):
            return
        deadline = time.monotonic() + timeout_s
        while not self.restore_env_runners(group):
            if time.monotonic() > deadline:
                raise RuntimeError(f"all {group.num_remote_workers()} EnvRunners failed and none was "
                                   f"restarted within {timeout_s:.0f}s")
            time.sleep(1.0)
        logger.warning("restarted failed EnvRunner(s) mid-iteration; sampling continues")

    def _sample_into_replay(self, limit: int | None = None) -> int:
        """Samples a fragment from every EnvRunner into the replay buffer; returns the env steps added.

        Vectorised envs step in lockstep and a reset step counts no env step, so a call can
        return a few steps more than `limit` (the env steps left in the iteration). Those wait
        in `_held_back` and are the first rows of the next call, so each iteration adds, and
        counts, exactly its env steps (a resumed run loses the few held back, never counted).
        """
        rows = [self._held_back] if self._held_back is not None else []
        if limit is None or self._held_back is None or len(self._held_back[2]) < limit:
            rows += self._sample_transitions()
        self._held_back = None
        if not rows:
            return 0
        columns = [np.concatenate(parts) for parts in zip(*rows)]
        num_new = len(columns[2]) if limit is None else min(len(columns[2]), limit)
        if num_new < len(columns[2]):
            self._held_back = tuple(c[num_new:] for c in columns)
        self.replay.add(*(c[:num_new] for c in columns))
        self._env_steps_sampled += num_new
        return num_new

    def _sample_transitions(self) -> list[tuple[np.ndarray, ...]]:
        """One fragment from every EnvRunner as (obs, normalised actions, rewards, new_obs,
        terminateds) per episode chunk, in the replay buffer's units."""
        random = self._env_steps_sampled < self.config.random_warmup_steps
        episodes, runner_metrics = synchronous_parallel_sample(
            worker_set=self.env_runner_group,
            concat=True,
            sample_timeout_s=self.config.sample_timeout_s,
            random_actions=random,
            _uses_new_env_runners=True,
            _return_metrics=True,
        )
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        chunks = []
        for episode in episodes:
            n = len(episode)
            if n == 0:
                continue
            observations = np.asarray(episode.get_observations(slice(0, n + 1)), np.float32)
            terminateds = np.zeros(n, np.float32)
            terminateds[-1] = float(episode.is_terminated)
            chunks.append((
                observations[:-1].reshape(n, -1),
                normalize_actions(
                    np.asarray(episode.get_actions(slice(0, n)), np.float32).reshape(n, -1),
                    self._action_low, self._action_high,
                ),
                np.asarray(episode.get_rewards(slice(0, n)), np.float32),
                observations[1:].reshape(n, -1),
                terminateds,
            ))
            if self._recorder is not None:
                self._recorder.add(episode, observations, n)
        return chunks

    def _learn(self, num_updates: int) -> None:
        batch = self.replay.sample(num_updates, self.config.train_batch_size_per_learner)
        indices = batch.pop("indices", None)  # prioritised replay: rows whose priority comes back
        results = self.call_learner(lambda learner: learner.o2o_update(batch))
        if PRIORITIES in results:
            self.replay.update_priorities(indices, results.pop(PRIORITIES))
        self.metrics.log_dict(results, key=(LEARNER_RESULTS, "default_policy"), window=1)
        self.metrics.log_value((LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED), self._env_steps_sampled, window=1)


