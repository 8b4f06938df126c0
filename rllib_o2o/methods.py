"""The methods the pipeline can run: ACA, the paper's form, ACA's ablations, the baselines and rivals.

Every method is the same three-stage harness with one thing changed, so a
comparison differs only in the method: which offline stage feeds it, which
weights start the online stage, and which ACA switches are on. `METHODS` is the
catalogue a user chooses from; a probe of one switch is a named variant of a
catalogue method, given in the run's config (`variant_method`), not a catalogue entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

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
        """'' for the default ACA's alignment settings, else what differs (names the stage directory)."""
        default = METHODS[DEFAULT_METHOD]
        parts = [] if self.offline == default.offline else [f"from-{self.offline}"]
        if self.z_temperature != default.z_temperature:
            parts.append(f"{self.z_temperature}-temperature")
        if self.critic_includes_reference != default.critic_includes_reference:
            parts.append("with-log-pi0" if self.critic_includes_reference else "z-only")
        if self.distill_baseline != default.distill_baseline:
            parts.append("distilled" if self.distill_baseline else "td")
        if self.num_critics != default.num_critics:
            parts.append(f"{self.num_critics}-members")
        return "-".join(parts)


# The default ACA: the paper's three stages with Z distilled from the offline critic's value of pi0,
# pi0's entropy as the temperature's target and the offline critic's entropy bonus kept in the TD
# target (docs/method.md, "Where this project differs", says why each).
_ACA = Method("sacml", "aligned", "ACAUpdate", distill_baseline=True, reference_entropy_target=True,
              keep_offline_entropy_bonus=True,
              description="ACA (the default): Z distilled from the offline critic's value of pi0, pi0's entropy as "
                          "the temperature's target, the offline entropy bonus kept in the TD target "
                          "(docs/method.md)")

# The catalogue `rllib-o2o run --method` offers: ACA, the paper's form, the spec's ablations of ACA,
# the baselines and the rivals. A probe of one switch is a variant (`get_method`'s `variants`), not here.
METHODS = {
    "aca": _ACA,
    "aca-td": Method("sacml", "aligned", "ACAUpdate",
                     description="ACA with Z fitted by TD on the data's actions (the paper's alignment) and the "
                                 "critic fitting R alone; the default for an imported policy "
                                 "(--offline-checkpoint), which brings no critic to distil Z from"),
    "aca-paper": Method("sacml", "aligned", "ACAUpdate", z_temperature="offline", critic_includes_reference=True,
                        description="ACA's online stage as the paper writes it: Z fitted by TD with y_Z at "
                                    "alpha_off, the critic fits R + w l"),
    "aca-no-align": replace(_ACA, fresh_critic=True,
                            description="ablation of aca: R from a random initialisation instead of Z"),
    "aca-no-clip": replace(_ACA, use_log_prob_clip=False, description="ablation of aca: raw log pi0, no lower clip"),
    "aca-fixed-w": replace(_ACA, fixed_w=True, description="ablation of aca: w fixed at w0"),
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

# What `rllib-o2o run` runs unless told otherwise.
DEFAULT_METHOD = "aca"
# An imported --offline-checkpoint carries an actor only: no critic to distil Z from.
DEFAULT_METHOD_FOR_IMPORTED_POLICY = "aca-td"
# Names the catalogue once had, with what runs the same today: a config naming one is told where it went.
FORMER_NAMES = {"aca-consistent-target": "aca"}

VARIANT_BASE = "base"  # in a variant's mapping: the catalogue method whose fields it changes

# A catalogue name, a variant's name, or either with "-from-<offline kind>" (`with_offline_kind`).
Variants = Mapping[str, Mapping]


FROM_KIND = "-from-"  # "<method>-from-<offline kind>": the method started from another offline stage


def variant_method(name: str, spec: Mapping) -> Method:
    """The method a variant describes: {base: <catalogue method>, <Method field>: value, ...}.

    A variant is how a probe of one switch stays runnable without joining the catalogue
    (benchmarks/variants.yaml): the pipeline and the benchmark run it by name from their config's
    `variants`, with its own stage directories and results file.
    """
    if name in METHODS:
        raise ValueError(f"variant {name!r} has a catalogue method's name; give it its own")
    base = spec.get(VARIANT_BASE)
    if base not in METHODS:
        raise UnknownNameError(f"base method of variant {name!r}:", [str(base)], METHODS,
                               hint=f"; a variant's {VARIANT_BASE!r} is one of {sorted(METHODS)}")
    changes = {k: v for k, v in spec.items() if k != VARIANT_BASE}
    known = {f.name: f for f in fields(Method)}
    unknown = [k for k in changes if k not in known]
    if unknown:
        raise UnknownNameError(f"field(s) of variant {name!r}:", unknown, known)
    for key, value in changes.items():
        default = getattr(METHODS[base], key)
        if default is not None and value is not None and type(value) is not type(default) and not (
                isinstance(default, float) and type(value) is int):
            raise ValueError(f"variant {name!r}: {key} must be a {type(default).__name__}, got {value!r}")
    method = replace(METHODS[base], **changes)
    if method.offline is not None and method.offline not in OFFLINE_KINDS:
        raise ValueError(f"variant {name!r}: offline must be one of {sorted(OFFLINE_KINDS)}, got {method.offline!r}")
    return method


def with_offline_kind(name: str, kind: str | None, variants: Variants | None = None) -> str:
    """The name of method `name` run from offline kind `kind` (`PipelineConfig.offline_algo`): `name` itself
    when `kind` is None or already its kind, else "<name>-from-<kind>", which names its stage directories
    and results file apart from the method's own."""
    method = get_method(name, variants)
    if kind is None or kind == method.offline:
        return name
    if kind not in OFFLINE_KINDS:
        raise ValueError(f"unknown offline kind {kind!r}; choose from {sorted(OFFLINE_KINDS)}")
    if method.offline is None:
        raise ValueError(f"method {name!r} has no offline stage to run as {kind!r}")
    base = name.rpartition(FROM_KIND)[0] if _from_kind(name, variants or {}) else name
    return base if kind == get_method(base, variants).offline else f"{base}{FROM_KIND}{kind}"


def _named(name: str, variants: Variants) -> Method | None:
    """A catalogue method or a variant by its own name; None for any other name."""
    if name in METHODS:
        return METHODS[name]
    return variant_method(name, variants[name]) if name in variants else None


def _from_kind(name: str, variants: Variants) -> str | None:
    """The offline kind of a "<method>-from-<kind>" name of a method with an offline stage; None for any other."""
    base, sep, kind = name.rpartition(FROM_KIND)
    if not sep or kind not in OFFLINE_KINDS:
        return None
    method = _named(base, variants)
    return kind if method is not None and method.offline is not None else None


def get_method(name: str, variants: Variants | None = None) -> Method:
    """A catalogue method, a variant of `variants` (name -> {base: ..., field: value}), or
    "<method>-from-<kind>": that method with offline kind `kind`."""
    variants = variants or {}
    method = _named(name, variants)
    if method is not None:
        return method
    kind = _from_kind(name, variants)
    if kind is None:
        moved = f"; {name!r} is now `--method {FORMER_NAMES[name]}`" if name in FORMER_NAMES else ""
        raise UnknownNameError("method", [name], [*METHODS, *variants],
                               hint=moved or f"; choose from {sorted(METHODS)} or a variant in the config's "
                                             f"`variants`")
    return replace(_named(name.rpartition(FROM_KIND)[0], variants), offline=kind)


def needs_alignment(name: str, variants: Variants | None = None) -> bool:
    return get_method(name, variants).start == "aligned"
