"""A run's trained actor as a standalone policy: exported, loaded back, evaluated.

An export is a directory with the actor's `TanhGaussianActor` state dict (tensors
only, `torch.load(..., weights_only=True)`) and `policy.json`, which says how to
rebuild it and where it came from. Loading and evaluating one needs torch and
gymnasium, never Ray or the run directory.

The online stage keeps its weights only in RLlib's checkpoint (`algo/`, pickle).
The export reads the RLModule's state file from it with an unpickler that admits
only the numpy arrays and dicts such a file holds, so no code in it runs.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from rllib_o2o.checkpoints import (
    MODULE_DIR,
    CheckpointError,
    atomic_dir,
    commit_dir,
    load_module_checkpoint,
)
from rllib_o2o.methods import DEFAULT_METHOD, get_method
from rllib_o2o.policy import ActorPolicy
from rllib_o2o.policy_import import RLLIB_MODULE_SUBDIR
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.names import ALGO_DIR, CHECKPOINT_DIR, PREVIOUS_DIR, RUN_CONFIG_FILE
from rllib_o2o.rundir.stage import StageDir, read_checkpoint

POLICY_FILE = "policy.json"
ACTOR_FILE = "actor.pt"
FORMAT_VERSION = 1
RLLIB_STATE_FILE = "module_state.pkl"  # RLlib's pickled RLModule state, beside its metadata.json
STAGES = ("online", "offline")
# Stage 1 as trained here builds the default actor; imported actors have their own module/ meta.
TRAINED_OFFLINE_ACTIVATION = "relu"
# What a pickled RLModule state needs: an OrderedDict of numpy arrays (numpy 2's module names, then 1's).
_STATE_GLOBALS = {
    ("collections", "OrderedDict"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy.core.multiarray", "_reconstruct"),
}


@dataclass(frozen=True)
class PolicySpec:
    """policy.json: what rebuilds the actor, and which run, stage and step it came from."""

    obs_dim: int
    act_dim: int
    hidden: list
    activation: str
    action_low: list
    action_high: list
    env_id: str
    max_episode_steps: int | None  # the run's time limit (None: the env's own), used by evaluate
    reference_scores: list | None  # the run's [random, expert] returns for the normalised score
    source_run: str
    source_stage: str  # "online" or "offline"
    source_method: str
    source_checkpoint: str  # the directory the weights were read from
    step: int
    step_unit: str  # "env_steps" (online) or "updates" (offline)
    format_version: int = FORMAT_VERSION


class ExportedPolicy:
    """obs (env units, one [obs_dim] or a batch [B, obs_dim]) -> action (env units), numpy in and out."""

    def __init__(self, spec: PolicySpec, actor_state: dict, stochastic: bool = False, seed: int = 0):
        self.spec = spec
        self._policy = ActorPolicy(actor_state, spec.obs_dim, spec.act_dim, spec.hidden, spec.action_low,
                                   spec.action_high, stochastic=stochastic, seed=seed,
                                   activation=spec.activation)

    def act(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.spec.obs_dim:
            raise ValueError(f"expected observations of shape [{self.spec.obs_dim}] or [B, {self.spec.obs_dim}], "
                             f"got {list(obs.shape)}")
        return self._policy(obs)

    __call__ = act  # a Policy for rllib_o2o.data.rollouts

    @property
    def stochastic(self) -> bool:
        return self._policy.stochastic


# ---------------------------------------------------------------- export


def export_policy(run_dir: str | Path, out: str | Path, *, stage: str | None = None, method: str | None = None,
                  overwrite: bool = False) -> PolicySpec:
    """Writes the actor of `method`'s `stage` in `run_dir` to `out/` (actor.pt + policy.json).

    method: default the one the run directory was created with (its config.json).
    stage: default "online" when that stage has a committed checkpoint (the newest
    one that verifies, so a run in progress exports its latest policy), else
    "offline" (pi0: the aligned actor is pi0 unchanged).
    """
    from rllib_o2o.pipeline import PipelineConfig  # imports Ray: only here

    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    saved = _run_config(run_dir)
    method = method or saved.get("method", DEFAULT_METHOD)
    get_method(method, saved.get("variants"))
    if stage not in (None, *STAGES):
        raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")
    try:
        cfg = PipelineConfig.from_dict({**saved, "method": method})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{run_dir / RUN_CONFIG_FILE}: {err}") from None
    online_stage, offline_stage = run.online_stage(method), run.offline_stage(method, saved.get("variants"))
    if stage is None:
        stage = "online" if online_stage.checkpoints() or offline_stage is None else "offline"
    if stage == "online":
        actor, checkpoint, step = _online_actor(online_stage)
        activation = _online_activation(cfg, run)
    else:
        if offline_stage is None:
            raise ValueError(f"method {method!r} has no offline stage (it starts online from a random "
                             "initialisation); only --stage online can be exported")
        actor, checkpoint, step, activation = _offline_actor(offline_stage, online_stage)
    spec = _spec(cfg, actor, activation, run_dir, stage, method, checkpoint, step)
    ExportedPolicy(spec, actor)  # the weights must rebuild the actor before anything is written
    _write(Path(out), spec, actor, overwrite)
    return spec


def _run_config(run_dir: Path) -> dict:
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        runs = sorted(p.parent for p in run_dir.glob(f"*/*/{RUN_CONFIG_FILE}"))[:1] if run_dir.is_dir() else []
        hint = f"; it looks like a benchmark directory: pass one of its runs, e.g. {runs[0]}" if runs else ""
        raise ValueError(f"{run_dir}: not a run directory (expected {RUN_CONFIG_FILE}, written by "
                         f"rllib-o2o run --out){hint}")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(saved, dict) or not saved.get("env"):
        raise ValueError(f"{path}: not a run config (expected a mapping with the run's env)")
    return saved


def _online_actor(stage: StageDir) -> tuple[dict, Path, int]:
    """The actor of the newest online checkpoint, and its env step."""
    if not stage.checkpoints():
        raise ValueError(f"{stage.path}: no committed checkpoint to export (expected {CHECKPOINT_DIR}/ or "
                         f"{PREVIOUS_DIR}/; the online stage has not saved one yet)")
    actor, path, progress = _checkpoint_actor(stage)
    return actor, path, int(progress.get("env_steps", 0))


def _offline_actor(stage: StageDir, online_stage: StageDir) -> tuple[dict, Path, int, str]:
    """The finished stage's module/ (tensors only), else the newest checkpoint of a stage in progress."""
    module = stage.module_path
    if module.is_dir():
        weights, meta = load_module_checkpoint(module, expect={"stage": "offline"})
        done = stage.done() or {}
        activation = meta.get("actor_activation", TRAINED_OFFLINE_ACTIVATION)
        return _actor_state(weights, module), module, int(done.get("updates", 0)), activation
    if not stage.checkpoints():
        raise ValueError(f"{stage.path.parent}: nothing to export (expected {stage.path}/{MODULE_DIR}/ or a "
                         f"committed checkpoint in {stage.path}/ or {online_stage.path}/; has the run started "
                         "training?)")
    actor, path, progress = _checkpoint_actor(stage)
    curve = progress.get("curve") or [{}]
    return actor, path, int(curve[-1].get("updates", 0)), TRAINED_OFFLINE_ACTIVATION


def _checkpoint_actor(stage: StageDir) -> tuple[dict, Path, dict]:
    """The actor and progress of the newest committed checkpoint that verifies (warns when it falls back)."""
    problems = []
    for path in stage.checkpoints():
        try:
            progress = read_checkpoint(path)
            actor = _actor_state(_read_rllib_state(path / ALGO_DIR / RLLIB_MODULE_SUBDIR / RLLIB_STATE_FILE), path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            print(f"WARNING: {problems[0]}; exporting the previous checkpoint {path}", file=sys.stderr, flush=True)
        return actor, path, progress
    raise CheckpointError(f"{stage.path}: no usable checkpoint ({'; '.join(problems)})")


def _online_activation(cfg, run: RunDir) -> str:
    """The online actor's activation is that of the module the stage started from."""
    from rllib_o2o.stages.online import start_module

    return start_module(cfg.method, run, cfg.variants)[1].get("actor_activation", "relu")


def _read_rllib_state(path: Path) -> dict:
    """An RLlib RLModule state file, unpickled with only numpy arrays and dicts allowed."""

    class StateUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in _STATE_GLOBALS:
                raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays are read from it")
            return super().find_class(module, name)

    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected RLlib's pickled module state)")
    try:
        state = StateUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:  # noqa: BLE001 - any decoding failure is a corrupt or foreign file
        raise CheckpointError(f"{path}: unreadable module state ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: module state is a {type(state).__name__}, expected a dict of arrays")
    return state


def _actor_state(weights: dict, source: Path | None = None) -> dict:
    """TanhGaussianActor's state dict from a module's weights (`actor.*`; `ref_actor.*` is pi0)."""
    actor = {k[len("actor."):]: np.asarray(v) for k, v in weights.items() if k.startswith("actor.")}
    if not actor:
        raise CheckpointError(f"{source or 'checkpoint'}: no actor weights (expected actor.* entries)")
    return actor


def _spec(cfg, actor: dict, activation: str, run_dir: Path, stage: str, method: str, checkpoint: Path,
          step: int) -> PolicySpec:
    """Dims and hidden sizes read off the weights, bounds from the env: what the actor really is."""
    from rllib_o2o.data.rollouts import env_meta

    trunk = sorted((int(k.split(".")[1]), v.shape) for k, v in actor.items()
                   if k.startswith("trunk.") and k.endswith(".weight"))
    if not trunk or "head.weight" not in actor:
        raise CheckpointError(f"{checkpoint}: actor weights lack trunk.*/head.* (not a TanhGaussianActor)")
    obs_dim, act_dim = int(trunk[0][1][1]), int(actor["head.weight"].shape[0]) // 2
    env = env_meta(cfg.env)
    if (env.obs_dim, env.act_dim) != (obs_dim, act_dim):
        raise CheckpointError(f"{checkpoint}: actor maps {obs_dim} -> {act_dim} dims, env {cfg.env} has "
                              f"{env.obs_dim} -> {env.act_dim}")
    refs = [cfg.ref_min_score, cfg.ref_max_score]
    return PolicySpec(
        obs_dim=obs_dim, act_dim=act_dim, hidden=[int(shape[0]) for _, shape in trunk], activation=activation,
        action_low=list(env.action_low), action_high=list(env.action_high), env_id=cfg.env,
        max_episode_steps=cfg.max_episode_steps, reference_scores=None if None in refs else refs,
        source_run=str(run_dir.resolve()), source_stage=stage, source_method=method,
        source_checkpoint=str(checkpoint.resolve()), step=step,
        step_unit="env_steps" if stage == "online" else "updates")


def _write(out: Path, spec: PolicySpec, actor: dict, overwrite: bool) -> None:
    """out/ replaced atomically; only an empty directory or an earlier export may be replaced."""
    import torch

    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not overwrite:
            raise ValueError(f"{out}: already exists (--overwrite replaces an earlier export)")
        if not (out / POLICY_FILE).is_file():
            raise ValueError(f"{out}: exists and is not an exported policy (no {POLICY_FILE}); refusing to replace it")
    tmp = atomic_dir(out)
    try:
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in actor.items()}, tmp / ACTOR_FILE)
        (tmp / POLICY_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- load and evaluate


def load_policy(path: str | Path, *, stochastic: bool = False, seed: int = 0) -> ExportedPolicy:
    """The policy exported to `path`: the mean action, or with `stochastic` a sample (torch seeded with `seed`)."""
    import torch

    path = Path(path)
    spec_file, actor_file = path / POLICY_FILE, path / ACTOR_FILE
    if not spec_file.is_file() or not actor_file.is_file():
        raise ValueError(f"{path}: not an exported policy (expected {POLICY_FILE} and {ACTOR_FILE}, "
                         "written by rllib-o2o export)")
    try:
        values = json.loads(spec_file.read_text())
        version = values.get("format_version")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{spec_file}: unreadable ({type(err).__name__}: {err})") from None
    if version != FORMAT_VERSION:
        raise ValueError(f"{spec_file}: format_version {version!r}, this version reads {FORMAT_VERSION}")
    names = {f.name for f in fields(PolicySpec)}
    if set(values) != names:
        raise ValueError(f"{spec_file}: fields differ from policy.json's (missing {sorted(names - set(values))}, "
                         f"unknown {sorted(set(values) - names)})")
    try:
        tensors = torch.load(actor_file, map_location="cpu", weights_only=True)
        actor = {k: v.numpy() for k, v in tensors.items()}
        return ExportedPolicy(PolicySpec(**values), actor, stochastic=stochastic, seed=seed)
    except Exception as err:  # noqa: BLE001 - any decoding or shape failure is a corrupt export
        detail = (str(err).strip().splitlines() or [""])[0].strip()
        if isinstance(err, pickle.UnpicklingError):
            detail += " It holds Python objects other than tensors, which are never unpickled here."
        raise ValueError(f"{actor_file}: unreadable or not the actor {spec_file.name} describes "
                         f"({type(err).__name__}: {detail})") from None


def evaluate(policy: ExportedPolicy, env_id: str | None = None, episodes: int = 10, seed: int = 0,
             max_episode_steps: int | None = None) -> dict:
    """Returns of `episodes` episodes (episode i reset with seed + i) and the normalised score where known.

    env_id and max_episode_steps default to the run's; the run's reference scores
    are used on its env, the reference table's (rllib_o2o.data.scores) on another.
    """
    from rllib_o2o.data.rollouts import env_meta, evaluate_policy
    from rllib_o2o.data.scores import normalized_score, reference_scores

    spec = policy.spec
    env_id = env_id or spec.env_id
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = env_meta(env_id)
    if (env.obs_dim, env.act_dim) != (spec.obs_dim, spec.act_dim):
        raise ValueError(f"the policy maps {spec.obs_dim} -> {spec.act_dim} dims, env {env_id} has "
                         f"{env.obs_dim} -> {env.act_dim}")
    limit = max_episode_steps or (spec.max_episode_steps if env_id == spec.env_id else None)
    # The mean action runs the episodes side by side (same returns); a stochastic policy runs them one
    # by one, so that its draws, and so its returns, do not depend on how many run at once.
    returns = evaluate_policy(env_id, policy, episodes, seed, limit, num_envs=1 if policy.stochastic else episodes)
    refs = spec.reference_scores if env_id == spec.env_id and spec.reference_scores else reference_scores(env_id)
    mean = float(returns.mean())
    return {"env_id": env_id, "episodes": episodes, "seed": seed, "max_episode_steps": limit,
            "returns": returns.tolist(), "mean_return": mean, "std_return": float(returns.std()),
            "score": None if refs is None else normalized_score(mean, *refs), "reference_scores": refs}
