"""O2OSAC's settings: SACConfig's, plus the SAC family's (`o2o()`), declared, documented and validated."""

from __future__ import annotations

from ray.rllib.algorithms.algorithm_config import NotProvided, TorchCompileWhatToCompile
from ray.rllib.algorithms.sac import SACConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_o2o.algorithms.o2o_sac.env_runner import O2OEnvRunner
from rllib_o2o.algorithms.o2o_sac.o2o_sac_learner import ACTOR_Q_REDUCTIONS
from rllib_o2o.algorithms.o2o_sac.updates import SACUpdate
from rllib_o2o.threads import AUTO, resolve_torch_threads


class O2OSACConfigBase(SACConfig):
    """SACConfig plus the family's settings (`o2o`): O2OSACConfig but for its default algorithm class,
    which O2OSACConfig adds beside O2OSAC in o2o_sac.py (that module imports this one, never the reverse).

    RLlib's `framework(torch_compile_learner=True, torch_compile_learner_dynamo_backend=...,
    torch_compile_learner_dynamo_mode=...)` compiles the learner's per-update critic and actor
    losses (with their backward passes) with `torch.compile(backend=..., mode=...)`; mode
    "reduce-overhead" runs them as CUDA graphs on a GPU. The optimizer steps stay eager, so
    `torch_compile_learner_what_to_compile` must stay "forward_train". Off by default (eager).
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class)
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
        self.min_alpha = 0.0
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
        min_alpha=NotProvided,
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
    ) -> "O2OSACConfigBase":
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
            theta_ema <- (1 - tau_t) theta_ema + tau_t theta after every update, tau_t = max(tau,
            1/(t+1)) (`maths.moving_average_rate`: the iterates' mean, then a horizon of about 1/tau
            updates); the offline stage evaluates and hands over that average. 0 (default): none.
        actor_lr_decay_updates: the actor's learning rate decays to zero by a cosine over this many
            updates of the module (`maths.cosine_decay`; CORL's IQL). None (default): constant.
        min_alpha: a floor under the learned temperature: after each temperature step alpha =
            max(alpha, min_alpha) (`maths.temperature_floor_`), so that it cannot fall to zero while
            a likelihood term keeps the policy's entropy above the target. 0 (default): none.
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
        if not 0 <= self.min_alpha < 1:
            raise ValueError(f"min_alpha must be in [0, 1), got {self.min_alpha}")
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
