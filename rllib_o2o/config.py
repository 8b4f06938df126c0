"""What one pipeline run computes and where it lives: `PipelineConfig`, documented field by field.

Each field is declared with its help text (`option`), and that declaration is the whole
interface: `rllib-o2o run` derives one flag per field from it (`rllib_o2o.flags`), a
`--config` file and `rllib_o2o.run(**options)` take the same names. Stdlib and light
modules only, so building the command line never imports Ray or torch.
"""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields

from rllib_o2o.methods import (DEFAULT_METHOD, DEFAULT_METHOD_FOR_IMPORTED_POLICY, METHODS, OFFLINE_KINDS, Method,
                               get_method, variant_method, with_offline_kind)
from rllib_o2o.presets import PRESETS, get_preset
from rllib_o2o.suggest import UnknownNameError
from rllib_o2o.threads import resolve_torch_threads

EMBEDDED_ENV = "Pendulum-v1"


def option(default, help: str, **flag) -> Field:
    """A config field with its flag's help declared beside it, and optionally `choices`, `metavar`
    and `check` (a function raising ValueError on a bad value; `validate` and the flag run it).

    Fields with a list or dict type are declared with `field(metadata={"help": ...})` itself.
    """
    return field(default=default, metadata={"help": help, **flag})


def _check_import_path(value) -> None:
    if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
        raise ValueError(f"online_callbacks must be module:Class, got {value!r}")


def _check_torch_threads(value) -> None:
    resolve_torch_threads(value, 1)  # "auto" or a positive int


AUTO_EMA = "auto"
AUTO_EMA_MIN_RATE = 5e-4  # the longest automatic horizon: 2,000 updates (measured at 50k updates)
AUTO_EMA_HORIZONS_PER_RUN = 25  # the automatic horizon: 1/25 = 4% of the stage's updates


def actor_ema_rate(setting, offline_steps: int) -> float:
    """The rate tau of stage 1's moving average of the actor: `setting` itself when a number, and for
    "auto" max(AUTO_EMA_MIN_RATE, AUTO_EMA_HORIZONS_PER_RUN / offline_steps), a horizon of 4% of the
    stage, at most 2,000 updates: long enough to average out the last updates' luck at 50k updates
    (Hopper's last actor swings by tens of points between checkpoints), short enough not to hand over
    a policy many updates behind a short stage's (3k updates: the average of the first 2,000 scored
    21.6 where the last actor scored 57.9)."""
    if setting == AUTO_EMA:
        return max(AUTO_EMA_MIN_RATE, AUTO_EMA_HORIZONS_PER_RUN / offline_steps)
    return setting


def _in_unit_interval(value) -> bool:
    """A number (not a bool) in [0, 1): a moving average's rate or a temperature's floor."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < 1


def _check_actor_ema(value) -> None:
    if value == AUTO_EMA:
        return
    if not _in_unit_interval(value):
        raise ValueError(f"offline_actor_ema must be {AUTO_EMA!r} or a rate in [0, 1), got {value!r}")


def _check_min_alpha(value) -> None:
    if not _in_unit_interval(value):
        raise ValueError(f"offline_min_alpha must be a temperature in [0, 1), got {value!r}")


@dataclass
class PipelineConfig:
    """One run of offline pre-training -> alignment -> online fine-tuning.

    Field names are the config-file keys and, with dashes, the `rllib-o2o run` flags. A
    preset field left at None takes the value of the dataset's preset (rllib_o2o/presets.py).
    `validate()` refuses impossible values; `rllib_o2o.preflight` checks the rest (paths,
    dataset, env, checkpoint) before anything trains.
    """

    dataset: str | None = option(
        None, "dataset directory, D4RL .hdf5/.h5 file, local Minari id, or URI of a dataset directory "
              "(s3://, gs://, ...); none runs the embedded default on Pendulum-v1 medium data made here")
    env: str | None = option(None, "gymnasium env id; none: the dataset's (a run without a dataset is "
                                   "Pendulum-v1 only)")
    out: str = option("runs/o2o", "run directory (re-running the same command resumes it)")
    preset: str | None = option(None, "ACA's per-dataset settings; none: guessed from the dataset name",
                                choices=tuple(PRESETS))
    offline_steps: int = option(20_000, "stage 1 gradient steps")
    align_steps: int = option(10_000, "stage 2 Z-fit steps")
    online_steps: int = option(20_000, "stage 3 env steps (the method's updates per step, `utd`)")
    utd: int | None = option(None, "online critic updates per env step (update-to-data ratio); none: the "
                                   "method's (1; wsrl 4 and rlpd 20, whose actor steps once per env step)")
    online_warmup_steps: int | None = option(None, "env steps collected online before the first update, for "
                                                   "methods with a warm-up; none: the method's (wsrl: 5000 by "
                                                   "the offline policy, rlpd: 5000 random)")
    eval_every: int = option(1_000, "online env steps between evaluations (one training iteration; the last "
                                         "one ends at online_steps)")
    eval_episodes: int = option(10, "episodes per evaluation (mean action, all at once); episode i of every "
                                "evaluation starts from reset(seed=10000 * (seed + 1) + i)")
    offline_eval_every: int = option(5_000, "offline updates between evaluations (one training iteration; the last "
                                                  "one ends at offline_steps)")
    checkpoint_every: int = option(1, "training iterations between stage checkpoints")
    num_env_runners: int = option(0, "parallel sampling workers in stage 3 (0: sample in the driver)")
    num_envs_per_env_runner: int = option(
        1, "vectorised envs per EnvRunner (the driver too when num_env_runners is 0), stepped in lockstep "
           "with one batched policy call per step: 10 sample about 3x the env steps/s of one; env steps, "
           "the one update per env step and evaluation stay counted per env step, but the early online "
           "data then holds only the first steps of K episodes, and with 10 ACA lost pi0's score early "
           "on 2 of 3 Pendulum seeds (docs/benchmarks.md, 'Sampling'): 1 (one episode at a time, as the "
           "paper's code) keeps the hand-over safe")
    rollout_fragment_length: int = option(
        50, "stage 3 env steps an EnvRunner takes per sample call, all its envs together (per env: this / "
            "num_envs_per_env_runner, rounded up); the learner then makes the updates those steps owe (one "
            "per env step), so the acting policy is up to this many updates behind (1 with one env: an "
            "update after every env step, as the paper's code)")
    num_gpus_per_learner: float = option(0, "1 puts the learner on a GPU")
    align_num_cpus: float = option(1, "CPUs of the alignment Ray task")
    align_num_gpus: float = option(0, "GPUs of the alignment Ray task (> 0 fits Z on cuda)")
    align_lr: float = option(3e-4, "Adam learning rate of the Z fit")
    batch_size: int = option(256, "minibatch size of every stage")
    hidden: list = field(default_factory=lambda: [256, 256],
                         metadata={"help": "hidden layer sizes of the actor and critic MLPs"})
    replay_capacity: int = option(1_000_000, "online replay buffer size (transitions)")
    alpha_bc: float = option(30.0, "stage 1 (SAC+ML) behaviour-cloning scale: lambda = alpha_bc / mean|Q|")
    offline_actor_lr_decay: bool = option(
        False, "stage 1: the actor's learning rate decays to zero by a cosine over offline_steps, so that "
               "the last checkpoints settle (CORL's IQL)")
    offline_min_alpha: float = option(
        0.0, "stage 1: a floor under the learned temperature alpha_off (SAC+ML's falls towards zero while its "
             "likelihood term holds the policy's entropy above the target); 0: none",
        check=_check_min_alpha)
    offline_actor_ema: float | str = option(
        "auto", "stage 1: the rate tau of a moving average of the actor's weights (a horizon of about 1/tau "
                "updates), which the stage evaluates and hands over instead of wherever the last update lands; "
                "auto: a horizon of 4% of offline_steps, at most 2,000 updates (tau = max(5e-4, 25 / "
                "offline_steps); docs/benchmarks.md, 'The default on medium'); 0: the last actor itself",
        metavar="auto|TAU", check=_check_actor_ema)
    clip_beta: float | None = option(None, "preset override: beta of the clip of log pi0 (l's threshold)")
    w_schedule: list | None = field(
        default=None, metadata={"help": "preset override: the reference weight's schedule [w0, T, w_min]"})
    seed_episodes: int | None = option(None, "preset override: highest-return offline episodes seeded into "
                                             "the online buffer")
    entropy_scale: float | None = option(None, "preset override: c_H, the scale of the target entropy")
    max_episode_steps: int | None = option(None, "time limit override for the env")
    seed: int = option(0, "seed of every stage")
    ref_min_score: float | None = option(None, "return that normalises to 0; none: the dataset's, else the "
                                               "env's known reference")
    ref_max_score: float | None = option(None, "return that normalises to 100 (as ref_min_score)")
    offline_checkpoint: str | None = option(None, "skip stage 1: align this checkpoint (this project's, or "
                                                  "RLlib CQL/SAC)")
    alpha_off: float | None = option(None, "temperature of the Z target when the offline checkpoint carries "
                                           "none (methods with z_temperature online use 1)")
    custom_resources_per_env_runner: dict | None = field(default=None, metadata={
        "help": "custom Ray resources per EnvRunner, e.g. {worker_node: 0.1} to place EnvRunners on nodes "
                "started with that resource (docs/cluster.md)"})
    method: str | None = option(None, f"{', '.join(METHODS)}: ACA, the paper's form, ablations, baselines and "
                                      f"rivals (docs/pipeline.md), or a variant named in `variants`; methods share "
                                      f"a run directory's offline stages. Default: {DEFAULT_METHOD}, or "
                                      f"{DEFAULT_METHOD_FOR_IMPORTED_POLICY} (Z fitted by TD) with "
                                      f"--offline-checkpoint, whose actor comes without a critic",
                                metavar="METHOD")
    variants: dict | None = field(default=None, metadata={
        "help": "named variants of catalogue methods, {name: {base: <method>, <Method field>: value, ...}}, "
                "which `method` (and bench's --methods) may name: how a probe of one switch runs without "
                "joining the catalogue (benchmarks/variants.yaml holds the project's)"})
    offline_algo: str | None = option(
        None, "the offline stage the method starts from: sacml (SAC+ML, the paper's), iql, cql or cql-ensemble; "
              "none: the method's own (docs/pipeline.md). Another than the method's runs as method "
              "<method>-from-<kind>, with its own stage directories and results file",
        choices=tuple(OFFLINE_KINDS))
    storage_path: str | None = option(
        None, "also keep the run in STORAGE_PATH/<run dir name>: a shared dir or a pyarrow URI (s3://, gs://, "
              "hdfs://, file://); a re-run on any node resumes from it")
    online_callbacks: str | None = option(
        None, "an RLlib callback class (RLlibCallback subclass) the online stage's algorithm runs, as "
              "module:Class importable by the driver, e.g. cluster.placement_job:PlacementRecorder: how a job "
              "watches the run, not what it computes", metavar="MODULE:CLASS", check=_check_import_path)
    align_plateau_patience: int = option(
        0, "stop alignment once Z's held-out Bellman residual has not improved by 1% for this many "
           "evaluations (every 500 Z steps); 0 runs all align_steps")
    torch_threads: int | str = option(
        "auto", "torch intra-op threads of every process of the run (driver with its learner, EnvRunners, "
                "the alignment task, dataset generation): auto = the CPUs Ray reserves for each process "
                "(alignment: align_num_cpus; EnvRunners: 1), or a positive int for all (rllib_o2o/threads.py)",
        metavar="auto|N", check=_check_torch_threads)
    verbose: bool = option(
        False, "show Ray's, Ray Data's, RLlib's and Tune's own log lines and the workers' output (off: one "
               "progress bar per stage and a line per saved output; errors show either way)")
    wandb_project: str | None = option(
        None, "also log the metrics written to each stage's tensorboard/ to this Weights & Biases project "
              "(needs wandb installed; a resumed run appends to its W&B run)")

    def __post_init__(self):
        if self.method is None:
            self.method = DEFAULT_METHOD_FOR_IMPORTED_POLICY if self.offline_checkpoint else DEFAULT_METHOD
        if self.offline_algo is not None:
            try:
                self.method = with_offline_kind(self.method, self.offline_algo, self.variants)
            except ValueError:  # no offline stage to change: validate() refuses the pair
                pass

    def resolved_method(self) -> Method:
        """The `methods.Method` that `method` names: a catalogue method or one of `variants`."""
        return get_method(self.method, self.variants)

    @classmethod
    def from_dict(cls, values: dict) -> PipelineConfig:
        """A config from untyped values (a config file, JSON): unknown keys and wrong types are refused.

        An unknown key raises UnknownNameError naming the nearest known key.
        """
        known = [f.name for f in fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise UnknownNameError("config key(s)", unknown, known, hint="; `rllib-o2o run --help` lists them")
        for name, value in values.items():
            check_type(name, value, cls.__dataclass_fields__[name].type)
        return cls(**values)

    def validate(self) -> None:
        """Refuses values no run can use (the CLI checks this before Ray starts)."""
        for name in ("offline_steps", "align_steps", "online_steps", "eval_every", "eval_episodes",
                     "offline_eval_every", "checkpoint_every", "batch_size", "replay_capacity",
                     "rollout_fragment_length", "num_envs_per_env_runner"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.utd is not None and self.utd < 1:
            raise ValueError(f"utd must be >= 1, got {self.utd}")
        if self.online_warmup_steps is not None and self.online_warmup_steps < 0:
            raise ValueError(f"online_warmup_steps must be >= 0, got {self.online_warmup_steps}")
        for name in ("num_env_runners", "num_gpus_per_learner", "align_num_gpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_beta is not None and self.clip_beta <= 0:
            raise ValueError(f"clip_beta must be > 0, got {self.clip_beta}")
        if self.offline_algo is not None:
            if self.offline_checkpoint:
                raise ValueError("offline_algo picks the offline stage to train, and --offline-checkpoint replaces "
                                 "it: give one of them")
            with_offline_kind(self.method, self.offline_algo, self.variants)  # no offline stage: refused
        for name, spec in (self.variants or {}).items():  # every variant given is checked, used or not
            variant_method(name, spec)
        if self.resolved_method().distill_baseline and self.offline_checkpoint:
            raise ValueError(f"method {self.method!r} distils Z from the offline critic, and an imported "
                             f"--offline-checkpoint carries an actor only; use --method {DEFAULT_METHOD_FOR_IMPORTED_POLICY}")
        if self.preset is not None:
            get_preset(self.preset)
        if self.w_schedule is not None and len(self.w_schedule) != 3:
            raise ValueError(f"w_schedule is [w0, T, w_min], got {self.w_schedule}")
        for f in fields(self):
            if "check" in f.metadata:
                f.metadata["check"](getattr(self, f.name))
        if self.dataset is None and self.env not in (None, EMBEDDED_ENV):
            raise ValueError(f"env {self.env!r} needs a dataset (--dataset): without one the embedded default "
                             f"makes {EMBEDDED_ENV} data only")

    def actor_ema_rate(self) -> float:
        """The rate of stage 1's moving average of the actor (`actor_ema_rate` of offline_actor_ema)."""
        return actor_ema_rate(self.offline_actor_ema, self.offline_steps)

    def env_config(self) -> dict:
        return {"max_episode_steps": self.max_episode_steps} if self.max_episode_steps else {}

    def score(self, ret: float | None) -> float | None:
        if ret is None or self.ref_min_score is None or self.ref_max_score is None:
            return None
        from rllib_o2o.data.scores import normalized_score

        return float(normalized_score(ret, self.ref_min_score, self.ref_max_score))


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list, tuple),
          "dict": (dict,)}


def check_type(name: str, value, annotation: str) -> None:
    """Config files are untyped: reject e.g. offline_steps: "many" with a message naming the key.

    `annotation` is a field's (string) annotation, e.g. "int | None"; a generic such as
    list[int] is checked as list.
    """
    allowed = annotation_kinds(annotation)
    if value is None and "None" in allowed:
        return
    types = tuple(t for a in allowed for t in _TYPES.get(a, ()))
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ValueError(f"config key {name!r} must be {annotation}, got {value!r}")


def annotation_kinds(annotation: str) -> set[str]:
    """{"int", "None"} for "int | None": the type names of a field's annotation, generics dropped."""
    return {part.split("[")[0] for part in annotation.replace(" ", "").split("|")}


def embedded_default_config(out: str = "runs/embedded-default") -> PipelineConfig:
    """Small enough for a laptop: Pendulum-v1 medium data made here, a few minutes in all."""
    return PipelineConfig(
        out=out, env=EMBEDDED_ENV, offline_steps=3_000, offline_eval_every=1_000, align_steps=5_000,
        online_steps=5_000, eval_every=1_000, eval_episodes=5, replay_capacity=100_000,
    )


def config_from_options(values: dict) -> PipelineConfig:
    """The run that options describe, from flags, a config file or `rllib_o2o.run(**options)`.

    Without a dataset (none given, or `dataset: null`) the options apply on top of the
    embedded default, wherever they come from: `rllib-o2o run`, `run --config f.yaml`
    and `run(**options)` without a dataset are the same small Pendulum-v1 run. With a
    dataset they apply on top of the field defaults. The method, unless given, follows
    from the options (PipelineConfig.__post_init__).
    """
    base = asdict(embedded_default_config()) if values.get("dataset") is None else {}
    base.pop("method", None)
    return PipelineConfig.from_dict({**base, **values})
