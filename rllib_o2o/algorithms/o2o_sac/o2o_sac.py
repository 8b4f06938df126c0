"""O2OSAC: RLlib's SAC with a flat replay path and the SAC+ML / ACA switches.

One algorithm serves three stages of the project: behaviour-policy SAC for
`collect`, offline SAC+ML (stage 1, data read through RLlib's offline API) and
ACA online fine-tuning (stage 3). The config subclasses `SACConfig`, so every
RLlib knob (env runners, evaluation, learners, resources) works as for SAC.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np
import pyarrow

from ray.rllib.algorithms.algorithm_config import NotProvided, TorchCompileWhatToCompile
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
)

from rllib_o2o.algorithms.o2o_sac.o2o_sac_learner import ACTOR_Q_REDUCTIONS
from rllib_o2o.algorithms.o2o_sac.o2o_sac_rl_module import handover_weights
from rllib_o2o.algorithms.o2o_sac.updates import SACUpdate
from rllib_o2o.metrics import NUM_ENV_STEPS_SAMPLED, PRIORITIES
from rllib_o2o.policy import ActorPolicy
from rllib_o2o.replay import (
    BATCH_KEYS,
    BalancedReplayBuffer,
    FlatReplayBuffer,
    SymmetricReplayBuffer,
    normalize_actions,
)
from rllib_o2o.threads import AUTO, apply_torch_threads, resolve_torch_threads

logger = logging.getLogger(__name__)
ENV_RUNNER_RECOVERY_TIMEOUT_S = 300.0


def offline_chunk_arrays(chunk: dict, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, ...]:
    """A Ray Data batch of the dataset schema as the learner's arrays (actions in [-1, 1])."""
    return (
        np.stack(chunk["obs"]).astype(np.float32),
        normalize_actions(np.stack(chunk["actions"]).astype(np.float32), low, high),
        chunk["rewards"].astype(np.float32),
        np.stack(chunk["new_obs"]).astype(np.float32),
        chunk["terminateds"].astype(np.float32),
    )


class StreamingOfflineSampler:
    """`FlatReplayBuffer.sample` for datasets larger than memory: epochs streamed from Ray Data.

    Batches come from `iter_batches` with a local shuffle buffer, restarting the stream at the
    end of each epoch, so memory holds the shuffle buffer, not the dataset.
    """

    def __init__(self, dataset, to_arrays, seed: int = 0, shuffle_rows: int = 100_000):
        self._dataset, self._to_arrays, self._seed, self._shuffle_rows = dataset, to_arrays, seed, shuffle_rows
        self._epoch, self._batches, self._batch_size = 0, None, None

    def _next_batch(self, batch_size: int) -> dict:
        while True:
            if self._batches is None or batch_size != self._batch_size:
                self._batch_size = batch_size
                self._batches = iter(self._dataset.iter_batches(
                    batch_size=batch_size, batch_format="numpy", drop_last=True,
                    local_shuffle_buffer_size=max(self._shuffle_rows, batch_size),
                    local_shuffle_seed=self._seed + self._epoch))
            try:
                return dict(zip(BATCH_KEYS, self._to_arrays(next(self._batches))))
            except StopIteration:
                self._epoch, self._batches = self._epoch + 1, None

    def sample(self, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        batches = [self._next_batch(batch_size) for _ in range(num_batches)]
        return {k: np.stack([b[k] for b in batches]) for k in BATCH_KEYS}


class O2OEnvRunner(SingleAgentEnvRunner):
    """RLlib's SingleAgentEnvRunner that first sizes torch's threads to its own allocation, and
    seeds its env's action space.

    Sizing in the constructor reaches every EnvRunner process however it appears: built with
    the algorithm, restarted by Ray after a crash (whether or not RLlib noticed), added with
    `add_workers`, or an evaluation runner (whose config is the evaluation config). The local
    EnvRunner (worker_index 0) shares the driver's process, which O2OSAC.setup sizes.
    """

    def __init__(self, *, config, **kwargs):
        if kwargs.get("worker_index"):
            apply_torch_threads(resolve_torch_threads(config.torch_threads, config.num_cpus_per_env_runner))
        super().__init__(config=config, **kwargs)

    @override(SingleAgentEnvRunner)
    def make_env(self) -> None:
        """RLlib's env, its action space seeded from the config's seed and this runner's index.

        RLlib seeds the env's resets but not its action space, whose `sample()` gives the random
        warm-up actions (`random_warmup_steps`): unseeded, they came from OS entropy, and the
        same command made different data (the behaviour SAC of `collect`) on every run.
        """
        super().make_env()
        if self.config.seed is not None:
            self.env.action_space.seed(self.config.seed + self.worker_index)


class O2OSACConfig(SACConfig):
    """SACConfig plus the family's settings (`o2o`).

    RLlib's `framework(torch_compile_learner=True, torch_compile_learner_dynamo_backend=...,
    torch_compile_learner_dynamo_mode=...)` compiles the learner's per-update critic and actor
    losses (with their backward passes) with `torch.compile(backend=..., mode=...)`; mode
    "reduce-overhead" runs them as CUDA graphs on a GPU. The optimizer steps stay eager, so
    `torch_compile_learner_what_to_compile` must stay "forward_train". Off by default (eager).
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or O2OSAC)
        self.update_class = SACUpdate
        self.alpha_bc = 30.0
        self.cql_weight = 5.0
        self.cql_num_actions = 10
        self.cql_temperature = 1.0
        self.iql_expectile = 0.7
        self.iql_temperature = 3.0
        self.iql_max_weight = 100.0
        self.iql_advantage_scale = 1.0
        self.actor_ema = 0.0
        self.actor_lr_decay_updates = None
        self.clip_beta = 7.0
        self.use_log_prob_clip = True
        self.critic_includes_reference = True
        self.w_schedule = (1.0, 40.0, 0.5)
        self.entropy_scale = 1.0
        self.reference_entropy_target = False
        self.path_only_log_prob = False
        self.actor_warmup_updates = 0
        self.offline_entropy_bonus = 0.0
        self.actor_grad_clip = None
        self.num_critics = 2
        self.critic_target_members = None
        self.actor_q_reduction = "min"
        self.critic_layer_norm = False
        self.updates_per_env_step = 1.0
        self.policy_update_interval = 1
        self.warmup_env_steps = 0
        self.updates_per_iteration = 1000
        self.env_steps_per_iteration = 1000
        self.max_updates = None
        self.max_env_steps = None
        self.replay_capacity = 1_000_000
        self.offline_buffer_max_rows = 20_000_000
        self.random_warmup_steps = 0
        self.balanced_replay_temperature = 5.0
        self.balanced_replay_online_fraction = 0.5
        self.density_lr = 3e-4
        self.hidden = (256, 256)
        self.actor_activation = "relu"
        self.eval_num_envs = None
        self.actor_lr = 3e-4
        self.critic_lr = 3e-4
        self.alpha_lr = 3e-4
        # torch intra-op threads of every process of the algorithm: "auto" = the CPUs Ray
        # reserves for that process (rllib_o2o/threads.py), or a positive int for all of them.
        self.torch_threads = AUTO
        self.rollout_fragment_length = 50
        self.num_steps_sampled_before_learning_starts = 256
        # One `training_step` is one iteration (it meters its own steps and updates);
        # RLlib's per-iteration minimums would loop forever in the offline stage.
        self.min_time_s_per_iteration = 0
        self.min_sample_timesteps_per_iteration = 0
        self.min_train_timesteps_per_iteration = 0
        # The stock episode buffer is unused by this family; keep it tiny.
        self.replay_buffer_config = {"type": "EpisodeReplayBuffer", "capacity": 1}
        self.normalize_actions = False  # the module emits env-unit actions itself
        self.clip_actions = False
        self.env_runner_cls = O2OEnvRunner  # sizes torch's threads in each EnvRunner process
        # The algorithm's log directory outside Tune (the pipeline: the stage directory); None: none.
        # RLlib's default is a new, empty ~/ray_results/<timestamp> directory per build.
        self.log_dir = None
        # None: the algorithm leaves the "ray.rllib" logger's level to the process (the pipeline
        # quietens it unless verbose); RLlib's default resets it to WARN on every build.
        self.log_level = None
        # System-usage stats are for Tune's results (unused here); on, they start a polling thread
        # per build and warn "Install gputil".
        self.log_sys_usage = False

    def o2o(
        self,
        *,
        update=NotProvided,
        alpha_bc=NotProvided,
        cql_weight=NotProvided,
        cql_num_actions=NotProvided,
        cql_temperature=NotProvided,
        iql_expectile=NotProvided,
        iql_temperature=NotProvided,
        iql_max_weight=NotProvided,
        iql_advantage_scale=NotProvided,
        actor_ema=NotProvided,
        actor_lr_decay_updates=NotProvided,
        clip_beta=NotProvided,
        use_log_prob_clip=NotProvided,
        critic_includes_reference=NotProvided,
        w_schedule=NotProvided,
        entropy_scale=NotProvided,
        reference_entropy_target=NotProvided,
        path_only_log_prob=NotProvided,
        actor_warmup_updates=NotProvided,
        offline_entropy_bonus=NotProvided,
        actor_grad_clip=NotProvided,
        num_critics=NotProvided,
        critic_target_members=NotProvided,
        actor_q_reduction=NotProvided,
        critic_layer_norm=NotProvided,
        updates_per_env_step=NotProvided,
        policy_update_interval=NotProvided,
        warmup_env_steps=NotProvided,
        updates_per_iteration=NotProvided,
        env_steps_per_iteration=NotProvided,
        max_updates=NotProvided,
        max_env_steps=NotProvided,
        replay_capacity=NotProvided,
        offline_buffer_max_rows=NotProvided,
        random_warmup_steps=NotProvided,
        balanced_replay_temperature=NotProvided,
        balanced_replay_online_fraction=NotProvided,
        density_lr=NotProvided,
        hidden=NotProvided,
        actor_activation=NotProvided,
        torch_threads=NotProvided,
        eval_num_envs=NotProvided,
        log_dir=NotProvided,
    ) -> "O2OSACConfig":
        """Settings of the SAC family.

        update: the class of each gradient update (`updates.py`): SACUpdate (plain SAC, default),
            SACMLUpdate (offline SAC + max-likelihood term), CQLUpdate (offline SAC with CQL's
            critic penalty: the cql-sac baseline), IQLUpdate (offline implicit Q-learning), ACAUpdate (online fine-tuning with the aligned
            critic) or BalancedReplayUpdate (the Balanced Replay baseline online), or a subclass.
        alpha_bc: SAC+ML's BC scale (lambda = alpha_bc / mean|Q|).
        cql_weight, cql_num_actions, cql_temperature: CQL(H)'s penalty weight, the
            actions sampled per source (uniform, pi at s, pi at s') and its temperature.
        iql_expectile, iql_temperature, iql_max_weight, iql_advantage_scale: IQL's (`update=IQLUpdate`)
            expectile tau of V (0.7), inverse temperature beta of its advantage weights (3), their
            clip w_max (100), and the scale s of the advantages in exp(beta s A): the offline stage
            sets it to 1000 / (max - min episode return of the data) (`maths.return_range_scale`),
            CORL's and d3rlpy's reward scaling, so beta means the same on every dataset. 1 (default):
            the data's units.
        actor_ema: the rate tau of a moving average of the actor's weights kept beside it,
            theta_ema <- (1 - tau) theta_ema + tau theta after every update (a horizon of about
            1/tau updates); the offline stage evaluates and hands over that average. 0 (default): none.
        actor_lr_decay_updates: the actor's learning rate decays to zero by a cosine over this many
            updates of the module (`maths.cosine_decay`; CORL's IQL). None (default): constant.
        clip_beta, use_log_prob_clip: ACA's lower clip of log pi0 at beta std-devs.
        critic_includes_reference: True (spec): the critic fits R + w l to the TD target, so R can
            learn to cancel l and the policy drifts to plain SAC's. False: R alone is fitted (the
            reference term stays in the actor's objective and the target's next-state value),
            a KL(pi || pi0)-regularised SAC whose prior the critic cannot absorb.
        w_schedule: ACA's [w0, T, w_min]; w drops by w0/(T*1000) per update.
        entropy_scale: c_H; the target entropy is -c_H * |A|.
        reference_entropy_target: ACAUpdate: the target entropy is instead pi0's on the batch's
            states, -E_{a~pi0}[log pi0(a|s)] (one sample per state), so that the temperature, like
            the actor, is stationary at pi = pi0; -c_H * |A| lets alpha fall from the first update
            whenever pi0's entropy exceeds it.
        path_only_log_prob: the actor's log pi(a|s) takes its gradient through the sample only
            ("sticking the landing"): the same expected gradient, and with ACA's
            KL(pi || pi0) term a zero one at pi = pi0 for every sample, where the full
            reparameterised gradient is zero only on average and Adam turns its noise into
            steps away from pi0.
        actor_warmup_updates: the stage's first updates train the critic only: the actor and the
            temperature stay where the stage started them (ACA: at pi0, alpha = 1) until R has learned
            from this many updates' worth of online data. 0 (default): from the first update.
        offline_entropy_bonus: ACAUpdate: beta_0 of the TD target's state bonus beta_t H(pi0(.|s')),
            beta_t = beta_0 w_t / w_0 (`maths.offline_entropy_bonus`). Set to the offline critic's
            temperature alpha_off when R starts from a Z distilled from that (soft) critic, so that
            the online target's fixed point at t = 0 is Z. 0 (default): no bonus.
        actor_grad_clip: max grad-norm of the actor (ACA: 0.25), None = off.
        num_critics: members of the critic ensemble Q_i (ACA: R_i, rebuilt from as many Z_i);
            2 (default): SAC's twin critics.
        critic_target_members: the TD target's next-state value is the min over a random subset of
            this many members, drawn per update (REDQ's and RLPD's 2 of 10); None (default): all.
        actor_q_reduction: the actor's value of its action: "min" over the members (default, SAC)
            or their "mean" (REDQ's and RLPD's ensembles: pessimism stays in the target, and the
            actor follows the members' average, whose action gradient is less noisy than one's).
        critic_layer_norm: normalise each critic member's hidden layers before their activation
            (`maths.ensemble_layer_norm`; RLPD's and WSRL's critics). False (default): plain MLPs.
        updates_per_env_step: online update-to-data ratio: critic updates per env step.
        policy_update_interval: the actor and the temperature step once every this many critic
            updates, after the last of them (`maths.is_policy_update`): RLPD and WSRL set it to
            their update-to-data ratio, so that each env step brings that many critic steps and
            one actor step. 1 (default): every update steps all three (SAC).
        warmup_env_steps: online env steps collected before the first update, by the start policy
            (WSRL's warm-up: the frozen offline policy) or, within `random_warmup_steps`, by uniform
            random actions (RLPD's). 0 (default): updates start once the buffer holds a batch.
        updates_per_iteration: offline gradient steps per `train()` call.
        env_steps_per_iteration: online env steps per `train()` call.
        max_updates, max_env_steps: the run's budget of offline updates / online env steps; the
            `train()` call that reaches it makes only the updates (samples only the env steps,
            in whole fragments) left, so a budget need not be a multiple of the iteration size.
            None (default): every call makes a full iteration.
        offline_buffer_max_rows: offline datasets up to this many rows are loaded once into
            memory and sampled uniformly; larger ones are streamed from Ray Data each epoch
            with a local shuffle buffer (approximately uniform).
        random_warmup_steps: initial online steps with uniform random actions.
        balanced_replay_temperature, balanced_replay_online_fraction, density_lr: the Balanced
            Replay baseline's (Lee et al. 2022; `update=BalancedReplayUpdate`): the offline data
            stays in the online buffer, rows are replayed in proportion to a learned density ratio
            d_online / d_offline (a network trained alongside, at density_lr) raised to
            1 / balanced_replay_temperature; the first 1000 online rows start with
            balanced_replay_online_fraction of the sampling mass. Needs the offline data online.
        hidden: MLP hidden sizes of actor and critics.
        actor_activation: "relu" or "tanh" (e.g. a policy imported from RLlib's CQL).
        torch_threads: torch's intra-op threads in each process of the algorithm. "auto"
            (default): the CPUs Ray reserves for that process, at least 1 -- the driver and
            its local learner `main_process_cpus()`, a remote learner `learner_cpus()`, each
            remote EnvRunner `num_cpus_per_env_runner` (of the evaluation config for
            evaluation runners; a custom `env_runner_cls` must size itself, see O2OEnvRunner).
            An int sets that many threads in all of them. torch's own default (every core, in
            every process) makes the processes of a run contend for the same cores.
        eval_num_envs: with `custom_evaluation_function=batched_evaluation`
            (evaluation.py), the episodes of an evaluation run side by side in this many envs
            with one batched forward per step; None (default): one env per episode. The
            returns do not depend on it (each episode is reset with its own seed). Not named
            `evaluation_*`: RLlib routes such keys of a config dict to `.evaluation()`.
        log_dir: the algorithm's log directory (`Algorithm.logdir`) when it is not a Tune trial;
            None (default): none is made.
        """
        for name, value in locals().items():
            if name != "self" and value is not NotProvided:
                setattr(self, "update_class" if name == "update" else name, value)
        return self

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.update_class, type) and issubclass(self.update_class, SACUpdate)):
            raise ValueError(f"update must be SACUpdate or a subclass of it (rllib_o2o/algorithms/o2o_sac/updates.py), "
                             f"got {self.update_class!r}")
        if self.cql_weight < 0 or self.cql_num_actions < 1 or self.cql_temperature <= 0:
            raise ValueError("CQL needs cql_weight >= 0, cql_num_actions >= 1 and cql_temperature > 0")
        if not (0 < self.iql_expectile < 1 and self.iql_temperature > 0 and self.iql_max_weight > 0
                and self.iql_advantage_scale > 0):
            raise ValueError("IQL needs 0 < iql_expectile < 1 and iql_temperature, iql_max_weight, "
                             "iql_advantage_scale > 0")
        if not 0 <= self.actor_ema < 1:
            raise ValueError(f"actor_ema must be in [0, 1), got {self.actor_ema}")
        if self.actor_lr_decay_updates is not None and self.actor_lr_decay_updates <= 0:
            raise ValueError(f"actor_lr_decay_updates must be None or > 0, got {self.actor_lr_decay_updates}")
        if self.clip_beta <= 0:
            raise ValueError(f"clip_beta must be > 0, got {self.clip_beta}")
        w0, horizon, w_min = self.w_schedule
        if not (horizon > 0 and 0 <= w_min <= w0):
            raise ValueError(f"w_schedule [w0, T, w_min] needs T > 0 and 0 <= w_min <= w0, got {self.w_schedule}")
        if self.update_class.uses_density_ratio and not (self.balanced_replay_temperature > 0
                                         and 0 < self.balanced_replay_online_fraction < 1):
            raise ValueError("balanced replay needs balanced_replay_temperature > 0 and "
                             "0 < balanced_replay_online_fraction < 1")
        if self.num_critics < 1 or not (self.critic_target_members is None
                                        or 1 <= self.critic_target_members <= self.num_critics):
            raise ValueError(f"num_critics must be >= 1 and critic_target_members None or in [1, num_critics], "
                             f"got {self.num_critics} and {self.critic_target_members}")
        if self.actor_q_reduction not in ACTOR_Q_REDUCTIONS:
            raise ValueError(f"actor_q_reduction must be one of {ACTOR_Q_REDUCTIONS}, got {self.actor_q_reduction!r}")
        if self.actor_warmup_updates < 0 or self.offline_entropy_bonus < 0:
            raise ValueError(f"actor_warmup_updates and offline_entropy_bonus must be >= 0, got "
                             f"{self.actor_warmup_updates} and {self.offline_entropy_bonus}")
        if self.updates_per_env_step <= 0 or self.updates_per_iteration <= 0:
            raise ValueError("updates_per_env_step and updates_per_iteration must be > 0")
        if self.policy_update_interval < 1 or self.warmup_env_steps < 0:
            raise ValueError(f"policy_update_interval must be >= 1 and warmup_env_steps >= 0, got "
                             f"{self.policy_update_interval} and {self.warmup_env_steps}")
        resolve_torch_threads(self.torch_threads, 1)  # "auto" or a positive int, else a ValueError
        if self.num_learners > 1:
            raise ValueError(
                "O2OSAC runs one learner (num_learners 0 or 1, on CPU or GPU); "
                "scale sampling with num_env_runners instead."
            )
        if self.torch_compile_learner and (
                self.torch_compile_learner_what_to_compile != TorchCompileWhatToCompile.FORWARD_TRAIN):
            raise ValueError(
                "torch_compile_learner_what_to_compile 'complete_update' is not supported by O2OSAC: its learner "
                "compiles each update's critic and actor losses, the optimizer steps stay eager (keep the default "
                "'forward_train')"
            )

    def learner_cpus(self) -> float:
        """CPUs Ray reserves for one learner: `num_cpus_per_learner`, whose "auto" is RLlib's
        1 on CPU and 0 beside a GPU."""
        if self.num_cpus_per_learner != "auto":
            return self.num_cpus_per_learner
        return 1 if self.num_gpus_per_learner == 0 else 0

    def main_process_cpus(self) -> float:
        """CPUs Ray reserves for the driver (RLlib's main-process bundle, e.g. a Tune trial):
        with a local learner (num_learners 0) the larger of `num_cpus_for_main_process` and the
        learner's CPUs, else `num_cpus_for_main_process`."""
        if self.num_learners == 0:
            return max(self.learner_cpus(), self.num_cpus_for_main_process)
        return self.num_cpus_for_main_process

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_o2o.algorithms.o2o_sac.o2o_sac_rl_module import O2OSACTorchRLModule

        return RLModuleSpec(module_class=O2OSACTorchRLModule)

    @property
    def _model_config_auto_includes(self):
        return {"hidden": list(self.hidden), "initial_alpha": self.initial_alpha,
                "actor_activation": self.actor_activation, "density_ratio": self.update_class.uses_density_ratio,
                "state_value": self.update_class.uses_state_value, "actor_ema": bool(self.actor_ema),
                "num_critics": self.num_critics, "critic_layer_norm": self.critic_layer_norm}

    def get_default_learner_class(self):
        from rllib_o2o.algorithms.o2o_sac.o2o_sac_learner import O2OSACTorchLearner

        return O2OSACTorchLearner


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
        self._recorder: list[dict] | None = None

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
        self._recorder = []
        self._episode_ids: dict[str, int] = {}

    def recorded_transitions(self) -> dict[str, np.ndarray]:
        """What was sampled since `start_recording`; unfinished episodes end truncated."""
        columns = {k: np.concatenate([c[k] for c in self._recorder]) for k in self._recorder[0]}
        last_row = {eps: i for i, eps in enumerate(columns["eps_id"])}
        idx = np.fromiter(last_row.values(), dtype=np.int64)
        columns["truncateds"][idx] |= ~columns["terminateds"][idx]
        return columns

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
                self._record(episode, observations, n)
        return chunks

    def _record(self, episode, observations: np.ndarray, n: int) -> None:
        eps = self._episode_ids.setdefault(episode.id_, len(self._episode_ids))
        flags = np.zeros(n, bool)
        terminateds, truncateds = flags.copy(), flags.copy()
        terminateds[-1], truncateds[-1] = episode.is_terminated, episode.is_truncated
        self._recorder.append({
            "obs": observations[:-1].reshape(n, -1),
            "actions": np.asarray(episode.get_actions(slice(0, n)), np.float32).reshape(n, -1),
            "rewards": np.asarray(episode.get_rewards(slice(0, n)), np.float32),
            "new_obs": observations[1:].reshape(n, -1),
            "terminateds": terminateds,
            "truncateds": truncateds,
            "eps_id": np.full(n, eps, np.int64),
            "t": episode.t_started + np.arange(n, dtype=np.int64),
        })

    def _learn(self, num_updates: int) -> None:
        batch = self.replay.sample(num_updates, self.config.train_batch_size_per_learner)
        indices = batch.pop("indices", None)  # prioritised replay: rows whose priority comes back
        results = self.call_learner(lambda learner: learner.o2o_update(batch))
        if PRIORITIES in results:
            self.replay.update_priorities(indices, results.pop(PRIORITIES))
        self.metrics.log_dict(results, key=(LEARNER_RESULTS, "default_policy"), window=1)
        self.metrics.log_value((LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED), self._env_steps_sampled, window=1)


