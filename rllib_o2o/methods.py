"""The methods the pipeline can run: ACA, its ablations and the baselines.

Every method is the same three-stage harness with one thing changed, so a
comparison differs only in the method: which offline stage feeds it, which
weights start the online stage, and which ACA switches are on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rllib_o2o.suggest import UnknownNameError


@dataclass(frozen=True)
class OfflineKind:
    """An offline stage's update and critic; methods with the same kind share the stage."""

    update: str  # its update class, by name in rllib_o2o/algorithms/o2o_sac/updates.py
    num_critics: int = 2  # the critic ensemble (Method's fields of the same names)
    critic_target_members: int | None = None
    critic_layer_norm: bool = False

    def update_class(self) -> type:
        """The class of this kind's updates (imports torch)."""
        from rllib_o2o.algorithms.o2o_sac import updates

        return getattr(updates, self.update)


OFFLINE_KINDS = {
    "sacml": OfflineKind("SACMLUpdate"),
    "cql": OfflineKind("CQLUpdate"),
    # Implicit Q-learning (Kostrikov et al. 2022): expectile V, advantage-weighted actor, no out-of-data action.
    "iql": OfflineKind("IQLUpdate"),
    # WSRL's locomotion pre-training: CQL with REDQ's ensemble and layer-normalised critics (`--use_redq`).
    "cql-ensemble": OfflineKind("CQLUpdate", num_critics=10, critic_target_members=2, critic_layer_norm=True),
}


@dataclass(frozen=True)
class Method:
    # The offline stage's kind (OFFLINE_KINDS): "sacml" (stage 1), "cql" (SAC with CQL's penalty),
    # "cql-ensemble" (CQL with 10 layer-normalised critics) or None (no offline stage).
    offline: str | None
    start: str  # online start: "aligned" critic, the "offline" module as is, or "scratch"
    # The online stage's update class, by its name in rllib_o2o/algorithms/o2o_sac/updates.py ("ACAUpdate",
    # "SACUpdate", "BalancedReplayUpdate"); `online_update_class()` resolves it (a name, so that the
    # catalogue imports no torch: `rllib-o2o --help` reads it).
    online_update: str
    fresh_critic: bool = False  # ACA without alignment: R is a freshly initialised network
    use_log_prob_clip: bool = True
    fixed_w: bool = False  # w stays at w0
    seed_episodes: int | None = None  # None: the preset's
    # Temperature in the alignment target y_Z: "online" (1, the temperature online training starts
    # with, so that E[y] equals the aligned critic at t = 0) or "offline" (alpha_off: the spec and
    # the reference code).
    z_temperature: str = "online"
    # False (this project's ACA): the critic fits R alone, w l stays in the actor's objective and the
    # target's next-state value, and Z is fitted without log pi0, so the prior is not absorbed by R.
    # True (spec): the critic fits R + w l and Z is fitted with log pi0 (docs/method.md).
    critic_includes_reference: bool = False
    carry_optimizer_state: bool = False  # online Adam starts from the offline moments (reference code)
    # True: Z is distilled from the offline critic's value of pi0, E_{a~pi0}[min_i Q_off,i(s, a)],
    # instead of fitted by TD on the data's actions (which estimates the behaviour policy's value).
    # Needs an offline stage with a critic (not an imported policy) and critic_includes_reference=False.
    distill_baseline: bool = False
    # True: the actor's log pi takes its gradient through the sample only (sticking the landing), so
    # the KL(pi || pi0) term's gradient is zero at pi0 for every sample, not only on average.
    path_only_log_prob: bool = False
    # True: the temperature's target entropy is pi0's (per batch state) instead of -c_H |A|.
    reference_entropy_target: bool = False
    # Online updates that train the critic only, with the actor and temperature held at the start.
    actor_warmup_updates: int = 0
    # True: the online TD target keeps the offline critic's entropy bonus, beta_t H(pi0(.|s')) from beta_0 =
    # alpha_off (annealed with w), so that a Z distilled from that soft critic is its fixed point at t = 0.
    keep_offline_entropy_bonus: bool = False
    # The online critic ensemble (ACA: R_i, rebuilt from as many Z_i): its size, the random subset whose
    # min is the TD target (None: all) and how the actor reduces it ("min" or "mean"); O2OSACConfig.o2o.
    num_critics: int = 2
    critic_target_members: int | None = None
    actor_q_reduction: str = "min"
    critic_layer_norm: bool = False  # the online critic's hidden layers layer-normalised (RLPD, WSRL)
    # Online critic updates per env step (the update-to-data ratio; PipelineConfig.utd overrides it).
    updates_per_env_step: int = 1
    # True (RLPD, WSRL): the actor and temperature step once per env step, after that step's critic
    # updates; False: with every critic update.
    one_actor_step_per_env_step: bool = False
    # Env steps collected online before the first update (PipelineConfig.online_warmup_steps overrides
    # it): by the start policy (WSRL: the frozen offline one) or, with warmup_random_actions, uniformly
    # at random (RLPD's start_training).
    warmup_env_steps: int = 0
    warmup_random_actions: bool = False
    description: str = ""

    def online_update_class(self) -> type:
        """The class of the online stage's updates (imports torch)."""
        from rllib_o2o.algorithms.o2o_sac import updates

        return getattr(updates, self.online_update)

    def offline_kind(self) -> OfflineKind | None:
        """The offline stage's update and critic; None without an offline stage."""
        return None if self.offline is None else OFFLINE_KINDS[self.offline]

    def offline_update_class(self) -> type | None:
        """The class of the offline stage's updates (imports torch); None without an offline stage."""
        return None if self.offline is None else self.offline_kind().update_class()

    def alignment_tag(self) -> str:
        """'' for aca's alignment settings, else what differs (names the stage directory)."""
        default = METHODS["aca"]
        parts = [] if self.offline == default.offline else [f"from-{self.offline}"]
        if self.z_temperature != default.z_temperature:
            parts.append(f"{self.z_temperature}-temperature")
        if self.critic_includes_reference != default.critic_includes_reference:
            parts.append("with-log-pi0" if self.critic_includes_reference else "z-only")
        if self.distill_baseline:
            parts.append("distilled")
        if self.num_critics != default.num_critics:
            parts.append(f"{self.num_critics}-members")
        return "-".join(parts)


METHODS = {
    "aca": Method("sacml", "aligned", "ACAUpdate",
                  description="ACA with the dataset's preset; the critic fits R alone (docs/method.md)"),
    "aca-paper": Method("sacml", "aligned", "ACAUpdate", z_temperature="offline", critic_includes_reference=True,
                        description="ACA's online stage as the paper and spec write it: y_Z at alpha_off, "
                                    "the critic fits R + w l"),
    "aca-paper-online-temperature": Method("sacml", "aligned", "ACAUpdate", critic_includes_reference=True,
                                           description="ablation: aca-paper with y_Z at the online "
                                                       "temperature 1"),
    "aca-paper-carry-adam": Method("sacml", "aligned", "ACAUpdate", z_temperature="offline",
                                   critic_includes_reference=True, carry_optimizer_state=True,
                                   description="ablation: aca-paper with online Adam starting from the "
                                               "offline moments (the reference code's load_model)"),
    "aca-distilled-z": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True,
                              description="aca with Z distilled from the offline critic's value of pi0 "
                                          "instead of fitted by TD on the data (docs/method.md)"),
    "aca-path-only": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True, path_only_log_prob=True,
                            description="aca-distilled-z with the actor's log pi differentiated through the "
                                        "sample only (sticking the landing): pi0 is a zero-noise fixed point"),
    "aca-reference-entropy": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True,
                                    reference_entropy_target=True,
                                    description="aca-distilled-z with pi0's entropy as the temperature's target"),
    "aca-path-only-reference-entropy": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True,
                                              path_only_log_prob=True, reference_entropy_target=True,
                                              description="aca-path-only with pi0's entropy as the "
                                                          "temperature's target"),
    "aca-critic-warmup": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True, actor_warmup_updates=5000,
                                description="aca-distilled-z whose first 5000 online updates train R only "
                                            "(pi stays pi0 until R has seen 5k env steps)"),
    "aca-consistent-target": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True, reference_entropy_target=True,
                                    keep_offline_entropy_bonus=True,
                                    description="aca-reference-entropy whose TD target keeps the offline critic's "
                                                "entropy bonus alpha_off H(pi0(.|s')), annealed with w: the distilled "
                                                "Z is its fixed point at t = 0 (docs/method.md)"),
    "aca-from-cql": Method("cql", "aligned", "ACAUpdate", distill_baseline=True, reference_entropy_target=True,
                           keep_offline_entropy_bonus=True,
                           description="aca-consistent-target aligned from the CQL offline stage (cql-sac's), so "
                                       "that it and cql-sac differ in the online stage only"),
    "aca-from-cql-no-bonus": Method("cql", "aligned", "ACAUpdate", distill_baseline=True, reference_entropy_target=True,
                                    description="probe: aca-from-cql without the offline critic's entropy bonus in the TD "
                                                "target (CQL's alpha_off is about 1 on HalfCheetah, 0.2 on Hopper)"),
    "aca-from-cql-td": Method("cql", "aligned", "ACAUpdate", reference_entropy_target=True,
                              description="aca-from-cql with Z fitted by TD on the data (aca's alignment) instead of "
                                          "distilled from the CQL critic, whose values CQL's penalty pushes down"),
    "aca-ensemble": Method("sacml", "aligned", "ACAUpdate", distill_baseline=True, reference_entropy_target=True,
                           num_critics=10, critic_target_members=2, actor_q_reduction="mean",
                           description="aca-reference-entropy with R an ensemble of 10 (REDQ's and RLPD's: the "
                                       "target's min over a random pair, the actor on the members' mean)"),
    "aca-seeded": Method("sacml", "aligned", "ACAUpdate", seed_episodes=50,
                         description="ACA, buffer seeded with the 50 highest-return offline episodes"),
    "aca-unseeded": Method("sacml", "aligned", "ACAUpdate", seed_episodes=0,
                           description="ACA, no offline data online"),
    "aca-no-align": Method("sacml", "aligned", "ACAUpdate", fresh_critic=True,
                           description="ablation: R from a random initialisation instead of Z"),
    "aca-offline-critic": Method("sacml", "offline", "ACAUpdate",
                                 description="ablation: ACA's online losses from the offline actor and critic "
                                             "(no alignment: the critic keeps its action dependence)"),
    "aca-no-clip": Method("sacml", "aligned", "ACAUpdate", use_log_prob_clip=False,
                          description="ablation: raw log pi0, no lower clip"),
    "aca-fixed-w": Method("sacml", "aligned", "ACAUpdate", fixed_w=True, description="ablation: w fixed at w0"),
    "naive": Method("sacml", "offline", "SACUpdate",
                    description="offline SAC+ML actor, critic and temperature, then plain SAC"),
    "cql-sac": Method("cql", "offline", "SACUpdate", description="CQL offline, then plain SAC from its weights"),
    "balanced-replay": Method("cql", "offline", "BalancedReplayUpdate", seed_episodes=0,
                              description="Balanced Replay (Lee et al. 2022): CQL offline, then SAC replaying "
                                          "offline and online rows by a learned density ratio; needs the "
                                          "offline data online"),
    "sac-scratch": Method(None, "scratch", "SACUpdate", description="plain SAC from a random initialisation"),
    "wsrl": Method("cql-ensemble", "offline", "WSRLUpdate", seed_episodes=0, num_critics=10,
                   critic_target_members=2, critic_layer_norm=True, updates_per_env_step=4,
                   one_actor_step_per_env_step=True, warmup_env_steps=5000,
                   description="WSRL (Zhou et al. 2024): CQL with 10 layer-normalised critics offline, then no "
                               "offline data online: 5k env steps by the frozen offline policy, then SAC at 4 "
                               "critic updates per env step"),
    "rlpd": Method(None, "scratch", "RLPDUpdate", num_critics=10, critic_target_members=2, actor_q_reduction="mean",
                   critic_layer_norm=True, updates_per_env_step=20, one_actor_step_per_env_step=True,
                   warmup_env_steps=5000, warmup_random_actions=True,
                   description="RLPD (Ball et al. 2023): SAC from scratch on half-offline batches, 10 "
                               "layer-normalised critics, 20 critic updates per env step after 5k random "
                               "steps; needs the offline data online"),
}


# What `rllib-o2o run` runs unless told otherwise: aca with Z distilled from the offline critic, pi0's
# entropy as the temperature's target and the offline critic's entropy bonus kept in the TD target. The
# TD-fitted Z of `aca` (the paper's alignment) estimates the behaviour policy's value, which made aca's
# online start dip on the embedded Pendulum-v1 default (docs/history.md);
# the entropy target keeps alpha at 1 while pi stays near pi0, which removed HalfCheetah's mid-run sag
# on regenerated data; the bonus makes the distilled Z the target's
# fixed point at t = 0, which removed HalfCheetah's first drop (docs/method.md, "Where this project differs").
DEFAULT_METHOD = "aca-consistent-target"
# An imported --offline-checkpoint carries an actor only: no critic to distil Z from.
DEFAULT_METHOD_FOR_IMPORTED_POLICY = "aca"


FROM_KIND = "-from-"  # "<method>-from-<offline kind>": the method started from another offline stage


def with_offline_kind(name: str, kind: str | None) -> str:
    """The name of method `name` run from offline kind `kind` (`PipelineConfig.offline_algo`): `name` itself
    when `kind` is None or already its kind, else "<name>-from-<kind>", which names its stage directories
    and results file apart from the method's own."""
    method = get_method(name)
    if kind is None or kind == method.offline:
        return name
    if kind not in OFFLINE_KINDS:
        raise ValueError(f"unknown offline kind {kind!r}; choose from {sorted(OFFLINE_KINDS)}")
    if method.offline is None:
        raise ValueError(f"method {name!r} has no offline stage to run as {kind!r}")
    base = name.rpartition(FROM_KIND)[0] if _from_kind(name) else name
    return base if kind == METHODS[base].offline else f"{base}{FROM_KIND}{kind}"


def _from_kind(name: str) -> str | None:
    """The offline kind of a "<method>-from-<kind>" name of a catalogue method; None for any other name."""
    base, sep, kind = name.rpartition(FROM_KIND)
    if sep and kind in OFFLINE_KINDS and base in METHODS and METHODS[base].offline is not None:
        return kind
    return None


def get_method(name: str) -> Method:
    """A catalogue method, or "<method>-from-<kind>": that method with offline kind `kind`."""
    if name in METHODS:
        return METHODS[name]
    kind = _from_kind(name)
    if kind is None:
        raise UnknownNameError("method", [name], METHODS, hint=f"; choose from {sorted(METHODS)}")
    return replace(METHODS[name.rpartition(FROM_KIND)[0]], offline=kind)


def needs_alignment(name: str) -> bool:
    return get_method(name).start == "aligned"
