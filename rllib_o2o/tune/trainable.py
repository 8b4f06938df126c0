"""The Tune trainable of a tune experiment: one ACA online fine-tuning run from the shared aligned module.

Imports Ray Tune at module level: only the experiment (`run_tune`) imports this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ray import tune

from rllib_o2o.data.schema import top_k_episodes
from rllib_o2o.metrics import ALPHA, REFERENCE_WEIGHT
from rllib_o2o.stages.common import evaluation_return
from rllib_o2o.stages.online import dip, start_online
from rllib_o2o.tune.settings import trial_algo_config


class ACATrainable(tune.Trainable):
    """One trial; one step = `eval_every` env steps and one evaluation.

    The aligned weights and the pool of highest-return offline episodes come through the object store
    (`tune.with_parameters`), so a trial on any node needs no access to the run directory.
    """

    def setup(self, config, *, base, aligned_weights, aligned_meta, seed_pool, action_low, action_high):
        self._cfg, self._preset, algo_config = trial_algo_config(base, config, aligned_meta)
        self._weights = aligned_weights
        self._seed_pool = seed_pool
        self._bounds = (np.asarray(action_low, np.float32), np.asarray(action_high, np.float32))
        self._curve: list[dict] = []
        self._restored_env_steps = 0
        self.algo = algo_config.build_algo()

    def _score(self, ret):
        score = self._cfg.score(ret)
        return score if score is not None else ret  # no reference scores: rank by return

    def _start(self) -> None:
        """The online stage's start (`stages.online.start_online`), seeded with this trial's K episodes."""
        k = self._preset.seed_episodes
        pool = self._seed_pool
        seed_rows = top_k_episodes(pool, k) if k and pool is not None and len(pool["rewards"]) else None
        start_online(self.algo, self._cfg.resolved_method(), self._weights, seed_rows=seed_rows,
                     action_bounds=self._bounds)
        ret = evaluation_return(self.algo.evaluate())
        self._curve.append({"env_steps": 0, "return": ret, "score": self._score(ret)})

    def step(self):
        if not self._curve:
            self._start()
        result = self.algo.train()
        ret = evaluation_return(result)
        steps = self.algo.env_steps_sampled
        self._curve.append({"env_steps": steps, "return": ret, "score": self._score(ret)})
        learner = result.get("learners", {}).get("default_policy", {})
        return {
            "normalized_score": self._curve[-1]["score"],
            "episode_return": ret,
            "env_steps": steps,
            "dip": dip(self._curve, self._cfg.online_steps),
            "score_at_0": self._curve[0]["score"],
            REFERENCE_WEIGHT: learner.get(REFERENCE_WEIGHT),
            ALPHA: learner.get(ALPHA),
            "restored_env_steps": self._restored_env_steps,
            "done": steps >= self._cfg.online_steps,
        }

    def save_checkpoint(self, checkpoint_dir):
        self.algo.save_to_path(os.path.join(checkpoint_dir, "algo"))
        Path(checkpoint_dir, "progress.json").write_text(json.dumps({"curve": self._curve}, default=float))

    def load_checkpoint(self, checkpoint):
        checkpoint_dir = checkpoint if isinstance(checkpoint, str) else checkpoint["checkpoint_dir"]
        self.algo.restore_from_path(os.path.join(checkpoint_dir, "algo"))
        self._curve = json.loads(Path(checkpoint_dir, "progress.json").read_text())["curve"]
        self._restored_env_steps = self.algo.env_steps_sampled
        print(f"trial {self.trial_id}: restored at {self._restored_env_steps} env steps", flush=True)

    def cleanup(self):
        self.algo.stop()
