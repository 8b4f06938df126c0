"""Ray Tune search over ACA's online stage, every trial starting from ONE aligned checkpoint.

Stages 1 and 2 (offline pre-training, alignment) run once, exactly as in
`rllib-o2o run` (same run directory, skipped when already done); each trial then
fine-tunes the same aligned module online with its own ACA knobs:

    clip_beta (beta), w0 / w_T / w_min (the w schedule [w0, T, w_min]), actor_lr,
    critic_lr, alpha_lr, entropy_scale (c_H), seed_episodes (offline trajectories
    seeded into the buffer), seed

The aligned weights and the highest-return offline episodes are shipped to the
trials through the object store, so a trial on any node needs no access to the
run directory. One trial iteration = `eval_every` env steps + one evaluation;
trials report `normalized_score` (the score at that evaluation) and `dip` (the
lowest score in the first 10% of online steps, step 0 included), checkpoint
every `checkpoint_every` iterations, and are stopped early by ASHA. Re-running
the same command restores an interrupted experiment (`Tuner.restore`): finished
trials are kept, unfinished and errored ones continue from their last checkpoint.

Modules: `space` (the search space), `settings` (the experiment's settings, each trial's
config), `trainable` (`ACATrainable`; imports Ray Tune), `experiment` (`run_tune`),
`summary` and `cli`. Importing the package imports no Ray: `rllib-o2o --help` reads it.
"""

from rllib_o2o.tune.cli import add_tune_arguments, config_from_args, settings_from_args
from rllib_o2o.tune.experiment import ensure_aligned, experiment_path, run_tune
from rllib_o2o.tune.settings import ONLINE_FIELDS, TuneSettings, trial_algo_config, trial_settings
from rllib_o2o.tune.space import DEFAULT_SPACE, KNOBS, max_seed_episodes, param_space
from rllib_o2o.tune.summary import summarize, summary_table

__all__ = [
    "DEFAULT_SPACE", "KNOBS", "ONLINE_FIELDS", "TuneSettings", "add_tune_arguments", "config_from_args",
    "ensure_aligned", "experiment_path", "max_seed_episodes", "param_space", "run_tune", "settings_from_args",
    "summarize", "summary_table", "trial_algo_config", "trial_settings",
]
