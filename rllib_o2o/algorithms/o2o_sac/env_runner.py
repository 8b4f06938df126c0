"""O2OSAC's EnvRunner: RLlib's, with torch's threads sized per process and a seeded action space."""

from __future__ import annotations

from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.annotations import override

from rllib_o2o.threads import apply_torch_threads, resolve_torch_threads


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
