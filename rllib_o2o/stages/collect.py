"""The collect stage: D4RL-style datasets on gymnasium MuJoCo (or any Box env), generated here.

A stage, not part of `rllib_o2o.data` (the dataset format, its readers and importers): it trains
a policy with the algorithm layer, so it sits above both.

D4RL's recipe: train a SAC behaviour policy online; `random` is uniform
actions, `medium` rolls out the policy from when it first reaches a target
(about a third of the expert reference score), `medium-replay` is every
transition SAC saw until then, `expert` rolls out the best policy trained to a
higher target, `medium-expert` is medium + expert. The behaviour SAC is this
project's O2OSAC in plain-SAC mode, so it runs on RLlib EnvRunners.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rllib_o2o.data.rollouts import collect_transitions, env_meta, evaluate_policy
from rllib_o2o.data.schema import COLUMNS, DatasetError, DatasetMeta, read_meta, write_dataset
from rllib_o2o.data.scores import normalized_score, reference_scores

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")


@dataclass
class CollectSettings:
    """Every knob that changes the data; hashed to decide whether a dataset can be reused."""

    env_id: str = "Pendulum-v1"
    kinds: tuple = ("random", "medium", "medium-replay")
    num_transitions: int = 20_000
    medium_target_score: float = 100.0 / 3.0
    expert_target_score: float | None = None
    train_env_steps: int = 20_000
    env_steps_per_iteration: int = 1_000
    random_warmup_steps: int = 1_000
    eval_episodes: int = 5
    max_episode_steps: int | None = None
    num_env_runners: int = 0
    hidden: tuple = (256, 256)
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=list).encode()).hexdigest()[:16]


def dataset_dir(out_dir: str | Path, env_id: str, kind: str) -> Path:
    return Path(out_dir) / f"{env_id.split('-v')[0].lower()}-{kind}"


def collect(settings: CollectSettings, out_dir: str | Path, overwrite: bool = False,
            progress: Callable[[str], None] = print, torch_threads: int | str = "auto") -> dict[str, Path]:
    """Writes each requested kind under `out_dir`; reuses datasets made with the same settings.

    `torch_threads` is the behaviour SAC's (O2OSACConfig.o2o): how fast, not what data, so it
    stays out of the settings and their digest.
    """
    unknown = set(settings.kinds) - set(KINDS)
    if unknown:
        raise DatasetError(f"unknown dataset kind(s) {sorted(unknown)}; choose from {KINDS}")
    refs = reference_scores(settings.env_id)
    if refs is None:
        raise DatasetError(f"{settings.env_id}: no reference scores known; targets are normalised scores")
    targets = {k: dataset_dir(out_dir, settings.env_id, k) for k in settings.kinds}
    todo = [k for k, path in targets.items() if overwrite or not _is_current(path, settings)]
    for kind in set(targets) - set(todo):
        progress(f"{targets[kind]}: up to date, reused")
    if not todo:
        return targets

    base = env_meta(settings.env_id, source="generated")
    base.ref_min_score, base.ref_max_score = refs
    base.seed = settings.seed

    def write(kind: str, tr: dict, info: dict) -> None:
        meta = DatasetMeta(**{**asdict(base), "generator": {
            "kind": kind, "settings": asdict(settings), "settings_digest": settings.digest(), **info}})
        write_dataset(targets[kind], tr, meta, overwrite=True)
        progress(f"wrote {targets[kind]} ({len(tr['rewards'])} transitions)")

    if "random" in todo:
        tr = collect_transitions(settings.env_id, settings.num_transitions, None, settings.seed,
                                 settings.max_episode_steps, progress)
        write("random", tr, {"policy": "uniform random"})
    needs_policy = [k for k in todo if k != "random"]
    if needs_policy:
        _collect_with_behaviour_sac(settings, needs_policy, base, refs, write, progress, torch_threads)
    return targets


def _is_current(path: Path, settings: CollectSettings) -> bool:
    if not (path / "dataset.json").exists():
        return False
    meta = read_meta(path)
    if meta.generator.get("settings_digest") != settings.digest():
        raise DatasetError(f"{path}: exists with other generator settings; pass --overwrite to regenerate")
    return True


def _collect_with_behaviour_sac(settings, kinds, base, refs, write, progress, torch_threads) -> None:
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig
    from rllib_o2o.policy import ActorPolicy

    env_config = {"max_episode_steps": settings.max_episode_steps} if settings.max_episode_steps else {}
    config = (
        O2OSACConfig()
        .environment(settings.env_id, env_config=env_config)
        .env_runners(num_env_runners=settings.num_env_runners)
        .o2o(env_steps_per_iteration=settings.env_steps_per_iteration,
             random_warmup_steps=settings.random_warmup_steps, hidden=settings.hidden,
             torch_threads=torch_threads)
        .debugging(seed=settings.seed)
    )
    algo = config.build_algo()
    algo.start_recording()
    policy_kwargs = dict(obs_dim=base.obs_dim, act_dim=base.act_dim, hidden=settings.hidden,
                         low=base.action_low, high=base.action_high)
    medium = best = None
    try:
        while algo.env_steps_sampled < settings.train_env_steps:
            algo.train()
            weights = algo.call_learner(lambda learner: learner.get_module_weights())
            returns = evaluate_policy(settings.env_id, ActorPolicy.from_module_weights(weights, **policy_kwargs),
                                      settings.eval_episodes, settings.seed + 10_000, settings.max_episode_steps)
            score = normalized_score(returns.mean(), *refs)
            steps = algo.env_steps_sampled
            progress(f"behaviour SAC: {steps}/{settings.train_env_steps} env steps, "
                     f"eval return {returns.mean():.1f} (normalised {score:.1f})")
            snapshot = {"weights": weights, "score": score, "return": float(returns.mean()), "env_steps": steps}
            if best is None or score > best["score"]:
                best = snapshot
            if medium is None and score >= settings.medium_target_score:
                medium = {**snapshot, "replay": algo.recorded_transitions(), "target_reached": True}
                if not {"expert", "medium-expert"} & set(kinds):
                    break
            if (medium and settings.expert_target_score is not None
                    and score >= settings.expert_target_score):
                break
        if medium is None:
            progress(f"behaviour SAC never reached the medium target {settings.medium_target_score:.1f}; "
                     f"using its best policy (normalised {best['score']:.1f})")
            medium = {**best, "replay": algo.recorded_transitions(), "target_reached": False}
    finally:
        algo.stop()

    def info(snap: dict, policy_name: str) -> dict:
        return {"policy": policy_name, "policy_eval_return": snap["return"],
                "policy_normalised_score": snap["score"], "behaviour_env_steps": snap["env_steps"],
                "target_reached": snap.get("target_reached", True)}

    def rollouts(snap: dict, seed: int) -> dict:
        policy = ActorPolicy.from_module_weights(snap["weights"], stochastic=True, seed=seed, **policy_kwargs)
        return collect_transitions(settings.env_id, settings.num_transitions, policy, seed,
                                   settings.max_episode_steps, progress)

    parts = {}
    if {"medium", "medium-expert"} & set(kinds):
        parts["medium"] = rollouts(medium, settings.seed + 1)
    if {"expert", "medium-expert"} & set(kinds):
        parts["expert"] = rollouts(best, settings.seed + 2)
    if "medium" in kinds:
        reached = "at the medium target" if medium["target_reached"] else "best, the medium target not reached"
        write("medium", parts["medium"], info(medium, f"behaviour SAC {reached} (stochastic)"))
    if "medium-replay" in kinds:
        write("medium-replay", medium["replay"], info(medium, "every transition the behaviour SAC saw"))
    if "expert" in kinds:
        write("expert", parts["expert"], info(best, "best behaviour SAC policy (stochastic)"))
    if "medium-expert" in kinds:
        merged = _concat(parts["medium"], parts["expert"])
        write("medium-expert", merged, info(best, "medium + expert rollouts"))


def _concat(first: dict, second: dict) -> dict:
    offset = int(first["eps_id"].max()) + 1
    return {k: np.concatenate([first[k], second[k] + (offset if k == "eps_id" else 0)]) for k in COLUMNS}
