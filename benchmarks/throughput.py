"""Throughput of the O2OSAC learner against the pure-torch reference, in one run.

Everything is measured in ONE process on the same sizes (Hopper-v5: obs 11,
act 3; MLPs 256x256; batch 256) with the same torch thread setting (--threads,
default 1; `auto`: the project's default, each algorithm build sizes the process
to its allocation), optionally beside N competing busy processes (--load N):

* learner updates/s, interleaved in short rounds so that machine load hits every
  contender alike: the pure-torch reference loop (`benchmarks/reference_sac.py`),
  RLlib's stock SAC (`SAC.train()` = 1 env step + 20 updates per iteration; plus
  its bare `learner_group.update` as a breakdown, and the reference loop rebuilt
  with stock SAC's bigger multi-stream Q nets, which separates framework cost
  from network size), and this project's learner in each mode through the real
  algorithm path (`O2OSAC._learn(U)`: flat-replay sample + `o2o_update` on the
  learner via `foreach_learner`): `sac` (online SAC), `sacml_offline` (SAC+ML,
  data read from Parquet through RLlib's offline API), `aca_online` (ACA with a
  frozen reference policy, actor grad clip 0.25) and, for information, `balanced_replay`
  (the Balanced Replay baseline: SAC + the density-ratio step + sum-tree sampling and
  priority write-back);
* the offline stage's own `algo.train()` (updates_per_iteration updates per call);
* online ACA end to end, `algo.train()` = sampling + updates at UTD 1 with 1000
  env steps per iteration, with 0 and 1 EnvRunner(s); the reference is
  re-measured right before and after each call;
* env steps/s sampled by the algorithm (`_sample_into_replay`) with 0, 1, 2, 4
  EnvRunners and with 0 EnvRunners x 8 vectorised envs, and raw single-process
  Hopper-v5 `env.step` (the sampling limit);
* the alignment stage's Z-fit steps/s, and Parquet rows/s: the offline stage's
  Ray Data load into the flat buffer (cold, as at setup) and `read_dataset`
  (pyarrow, used by alignment and replay seeding).

Ratios are reference time / contender time (higher is better; 1.0 = as fast as
the reference): the median over rounds of the ratio of adjacent blocks, and
("best") fastest reference block / fastest contender block.

    python benchmarks/throughput.py --quick --json throughput.json   # < 5 min on 2 cores
    python benchmarks/throughput.py --json throughput.json           # more repetitions
    python benchmarks/throughput.py --quick --threads auto --load 1   # the defaults, one core taken
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import datetime
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import reference_sac  # noqa: E402
from rllib_o2o.algorithms.o2o_sac.updates import (  # noqa: E402
    ACAUpdate,
    BalancedReplayUpdate,
    SACMLUpdate,
    SACUpdate,
)

ENV_ID = "Hopper-v5"
OBS_DIM, ACT_DIM = 11, 3
HIDDEN = (256, 256)
BATCH = 256
MODES = ("sac", "sacml_offline", "aca_online")  # the learner targets apply to these
BASELINE_MODES = ("balanced_replay",)  # measured alongside, no target (they do more work per update)
STOCK_UPDATES_PER_TRAIN = 20  # stock SAC: 1 env step + 20 learner updates per train() call

PRESETS = {
    # rounds x block updates per contender; stock RLlib SAC gets stock_block updates per round
    # (a multiple of STOCK_UPDATES_PER_TRAIN: whole train() calls). Short blocks, many rounds: the
    # median of per-round ratios is what survives a shared, loaded machine.
    "quick": dict(rounds=8, block=40, stock_block=20, dataset_rows=10_000, offline_updates=300,
                  e2e_env_steps=1000, e2e_iterations=1, sample_steps=1000, runners=[0, 1, 2, 4], z_steps=500,
                  raw_env_steps=20_000),
    "full": dict(rounds=16, block=100, stock_block=40, dataset_rows=100_000, offline_updates=1000,
                 e2e_env_steps=1000, e2e_iterations=3, sample_steps=6000, runners=[0, 1, 2, 4], z_steps=2000,
                 raw_env_steps=100_000),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def quiet() -> None:
    """Keeps the table readable: no Ray Data progress logs, no RLlib deprecation warnings."""
    import logging
    import warnings

    import ray.data

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray.data", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def busy_processes(n: int) -> list[subprocess.Popen]:
    """`n` competing processes that spin one core each (`--load`), as other work on a shared machine;
    killed at the end of the run, and at exit whatever happened before."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    atexit.register(lambda: [p.kill() for p in procs])
    return procs


def median(xs):
    return float(statistics.median(xs))


# ----------------------------------------------------------------------------- contenders
class Reference:
    """The pure-torch loop of benchmarks/reference_sac.py, run in blocks (same step as its timer)."""

    name = "reference"

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.sac = reference_sac.SAC(OBS_DIM, ACT_DIM)
        n = reference_sac.BUFFER_SIZE
        self.buffer = {
            "obs": torch.randn(n, OBS_DIM),
            "act": torch.rand(n, ACT_DIM) * 2 - 1,
            "rew": torch.randn(n),
            "next_obs": torch.randn(n, OBS_DIM),
            "done": (torch.rand(n) < 0.01).float(),
        }

    def run(self, n: int) -> int:
        for _ in range(n):
            idx = torch.randint(reference_sac.BUFFER_SIZE, (BATCH,))
            self.sac.update(*(v[idx] for v in self.buffer.values()))
        return n


class MultiStreamQ(torch.nn.Module):
    """RLlib's SAC Q-net as configured in `build_stock_sac`, in plain torch (input: concat([obs, act]))."""

    def __init__(self):
        super().__init__()
        nn, h0, h1 = torch.nn, HIDDEN[0], HIDDEN[1]
        self.obs = nn.Sequential(nn.Linear(OBS_DIM, h0), nn.ReLU())
        self.act = nn.Sequential(nn.Linear(ACT_DIM, h0), nn.ReLU())
        self.fuse = nn.Sequential(nn.Linear(2 * h0, h0), nn.ReLU(), nn.Linear(h0, h1), nn.ReLU(), nn.Linear(h1, 1))

    def forward(self, sa: torch.Tensor) -> torch.Tensor:
        obs, act = sa.split([OBS_DIM, ACT_DIM], dim=-1)
        return self.fuse(torch.cat([self.obs(obs), self.act(act)], dim=-1))


class StockArchReference(Reference):
    """The reference loop with stock SAC's (bigger) Q architecture: separates framework cost from network size."""

    name = "reference_stock_arch"

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        sac = self.sac
        sac.q1, sac.q2 = MultiStreamQ(), MultiStreamQ()
        sac.q1_target, sac.q2_target = copy.deepcopy(sac.q1), copy.deepcopy(sac.q2)
        sac.critic_opt = torch.optim.Adam([*sac.q1.parameters(), *sac.q2.parameters()], lr=reference_sac.LR)


class ProjectLearner:
    """O2OSAC's real update path: `_learn(U)` = FlatReplayBuffer.sample + learner.o2o_update via foreach_learner."""

    def __init__(self, name: str, algo):
        self.name, self.algo = name, algo

    def run(self, n: int) -> int:
        self.algo._learn(n)
        return n


class StockSAC:
    """RLlib's SAC: `train()` = 1 env step + K updates (replay sample, learner_group.update, priorities)."""

    name = "stock_rllib_sac"

    def __init__(self, algo, updates_per_train: int):
        self.algo, self.k = algo, updates_per_train

    def run(self, n: int) -> int:
        calls = max(1, round(n / self.k))
        for _ in range(calls):
            self.algo.train()
        return calls * self.k


def timed(fn, *args) -> float:
    gc.collect()  # untimed: start every measurement with an empty young generation
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def interleaved(contenders, block: dict, rounds: int) -> dict:
    """Rounds of one block per contender (order rotated); returns per-contender ms/update lists."""
    ms = {c.name: [] for c in contenders}
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for c in order:
            gc.collect()  # no contender pays for another's garbage (stock SAC leaves plenty)
            start = time.perf_counter()
            done = c.run(block[c.name])  # updates actually run (StockSAC runs whole train() calls)
            ms[c.name].append((time.perf_counter() - start) * 1e3 / done)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in ms.items()) + " ms/update")
    return ms


def round_ratios(ref_ms: list[float], ms: list[float]) -> list[float]:
    return [r / m for r, m in zip(ref_ms, ms)]


# ----------------------------------------------------------------------------- builders
def build_o2o(update: type, *, runners: int = 0, envs_per_runner: int = 1, dataset_dir: Path | None = None,
              updates_per_iteration: int = 1000, env_steps_per_iteration: int = 1000, seed: int = 0,
              threads: int | str = "auto", gpus_per_learner: float = 0,
              compile_backend: str | None = None, compile_mode: str | None = None):
    """O2OSAC at Hopper sizes running `update` (a class of rllib_o2o/algorithms/o2o_sac/updates.py); with `compile_backend` its learner's losses run under torch.compile
    (RLlib's `torch_compile_learner`) with that backend and `compile_mode`."""
    from rllib_o2o.algorithms.o2o_sac import O2OSACConfig

    config = (
        O2OSACConfig()
        .environment(ENV_ID)
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=envs_per_runner)
        .o2o(update=update, hidden=HIDDEN, updates_per_iteration=updates_per_iteration,
             env_steps_per_iteration=env_steps_per_iteration, updates_per_env_step=1.0,
             replay_capacity=200_000, actor_grad_clip=update.actor_grad_clip, torch_threads=threads)
        .training(train_batch_size_per_learner=BATCH, initial_alpha=1.0)
        .learners(num_learners=0, num_gpus_per_learner=gpus_per_learner)
        .debugging(seed=seed, log_level="ERROR")
    )
    if dataset_dir is not None:
        config = config.offline_data(input_=[str(dataset_dir)])
    if compile_backend is not None:
        config = config.framework(torch_compile_learner=True, torch_compile_learner_dynamo_backend=compile_backend,
                                  torch_compile_learner_dynamo_mode=compile_mode)
    return config.build_algo()


def build_stock_sac(updates_per_train: int, seed: int = 0):
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        SACConfig()
        .environment(ENV_ID)
        .env_runners(num_env_runners=0, rollout_fragment_length=1)
        # Closest to the reference that RLlib's SAC catalog can build: the policy is exactly
        # 11-256-256-6; each Q is RLlib's multi-stream net (obs 11->256 | act 3->256, fusion
        # 512->256, head 256->256->1), ~2.9x the reference Q's multiply-adds (see StockArchReference).
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[HIDDEN[0]], fcnet_activation="relu",
                                                   head_fcnet_hiddens=[HIDDEN[1]], head_fcnet_activation="relu",
                                                   fusionnet_hiddens=[], fusionnet_activation="relu"))
        .training(train_batch_size_per_learner=BATCH, num_steps_sampled_before_learning_starts=0,
                  # native ratio = 256 / (1 step * 1 env * 1): K updates per sampled env step
                  training_intensity=float(BATCH * updates_per_train),
                  replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 200_000,
                                        "alpha": 0.6, "beta": 0.4})
        .learners(num_learners=0)
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0,
                   min_train_timesteps_per_iteration=0)
        .debugging(seed=seed, log_level="ERROR")
    )
    algo = config.build_algo()
    # Prefill the episode buffer with random Hopper steps so sampling 256 transitions is realistic.
    runner = algo.env_runner_group.local_env_runner
    algo.local_replay_buffer.add(runner.sample(num_timesteps=5000))
    return algo


def num_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def module_params(algo) -> dict:
    def count(learner):
        m = learner.module["default_policy"].unwrapped()
        names = {}
        for attr in ("actor", "critic", "pi_encoder", "pi", "qf_encoder", "qf", "qf_twin_encoder", "qf_twin"):
            if hasattr(m, attr) and isinstance(getattr(m, attr), torch.nn.Module):
                names[attr] = num_params(getattr(m, attr))
        return names

    return list(algo.learner_group.foreach_learner(count))[0].get()


def reference_params() -> dict:
    sac = reference_sac.SAC(OBS_DIM, ACT_DIM)
    return {"actor": num_params(sac.actor), "critics": num_params(sac.q1) + num_params(sac.q2),
            "stock_arch_critics": 2 * num_params(MultiStreamQ())}


# ----------------------------------------------------------------------------- sections
def hopper_dataset(root: Path, rows: int, seed: int):
    from rllib_o2o.data.rollouts import collect_transitions, env_meta
    from rllib_o2o.data.schema import write_dataset

    start = time.perf_counter()
    tr = collect_transitions(ENV_ID, rows, seed=seed)
    meta = env_meta(ENV_ID, source="generated")
    path = write_dataset(root / "hopper", tr, meta, rows_per_file=max(1, rows // 4))
    log(f"dataset: {rows} random {ENV_ID} transitions in {time.perf_counter() - start:.1f}s -> {path}")
    return path, tr, meta


def raw_env_rate(steps: int, seed: int = 0, env_id: str = ENV_ID) -> float:
    """Env steps/s of `env.step` with random actions in this process (the sampling limit)."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    actions = [env.action_space.sample() for _ in range(1000)]
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % 1000])
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def sample_rate(algo, steps: int) -> float:
    """Env steps/s of the algorithm's own sampling path (synchronous_parallel_sample + flat-replay add)."""
    algo._sample_into_replay()  # warm-up: first episodes, connectors
    start, done = time.perf_counter(), 0
    while done < steps:
        done += algo._sample_into_replay()
    return done / (time.perf_counter() - start)


def e2e(algo, ref: Reference, ref_block: int, iterations: int = 1) -> dict:
    """`algo.train()` calls (sampling + updates at UTD 1), each bracketed by reference blocks; medians."""
    def updates():
        return algo.call_learner(lambda l: int(l.module["default_policy"].num_updates))

    rows = []
    for _ in range(iterations):
        ref_before = timed(ref.run, ref_block) * 1e3 / ref_block
        n0, s0 = updates(), algo.env_steps_sampled
        wall = timed(algo.train)
        n, steps = updates() - n0, algo.env_steps_sampled - s0
        ref_after = timed(ref.run, ref_block) * 1e3 / ref_block
        ref_ms = (ref_before + ref_after) / 2
        ms = wall * 1e3 / max(n, 1)
        rows.append({"updates": n, "env_steps": steps, "seconds": wall, "ms_per_update": ms,
                     "updates_per_s": n / wall, "env_steps_per_s": steps / wall,
                     "reference_ms_per_update": ref_ms, "ratio": ref_ms / ms})
    out = {k: median([r[k] for r in rows]) for k in rows[0]}
    out["iterations"] = rows
    return out


@contextlib.contextmanager
def timing_offline_load():
    """Times O2OSAC._load_offline_data during setup (Ray Data count + iter_batches + flat-buffer add, cold)."""
    from rllib_o2o.algorithms.o2o_sac import O2OSAC

    seconds: list[float] = []
    original = O2OSAC._load_offline_data

    def load(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    O2OSAC._load_offline_data = load
    try:
        yield seconds
    finally:
        O2OSAC._load_offline_data = original


def seed_replay(algo, tr, meta) -> None:
    algo.replay.add_transitions(tr, np.asarray(meta.action_low, np.float32), np.asarray(meta.action_high, np.float32))


# ----------------------------------------------------------------------------- main
def run(args) -> dict:
    import ray

    s = dict(PRESETS["quick" if args.quick else "full"])
    for key in ("rounds", "block", "stock_block", "dataset_rows", "offline_updates", "e2e_env_steps", "e2e_iterations",
                "sample_steps", "runners", "z_steps", "raw_env_steps"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.threads != "auto":
        torch.set_num_threads(args.threads)
    competitors = busy_processes(args.load)
    out: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "ray_version": ray.__version__, "python": platform.python_version(),
        "env": ENV_ID, "obs_dim": OBS_DIM, "act_dim": ACT_DIM, "hidden": list(HIDDEN), "batch_size": BATCH,
        "settings": s, "loadavg_start": loadavg(), "threads_setting": args.threads,
        "competing_busy_processes": args.load,
    }
    t_start = time.perf_counter()
    log(f"torch threads {torch.get_num_threads()}, load average {out['loadavg_start']}, settings {s}")

    tmp = Path(tempfile.mkdtemp(prefix="o2o-throughput-"))
    algos = []
    if os.environ.get("RAY_ADDRESS"):  # submitted as a Ray job: measure on the cluster it runs in
        ray.init(address="auto", log_to_driver=False)
    else:
        ray.init(num_cpus=max(2, max(s["runners"]) + 1), include_dashboard=False, log_to_driver=False)
    # A SIGTERM must still run the `finally` below (stop algorithms, ray.shutdown): no stray Ray processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quiet()
    try:
        dataset_dir, tr, meta = hopper_dataset(tmp, s["dataset_rows"], seed=0)

        # -- Parquet read rates and the raw MuJoCo step rate --------------------------------
        from rllib_o2o.data.schema import read_dataset

        t = timed(read_dataset, dataset_dir)
        out["parquet_rows_per_s_pyarrow"] = s["dataset_rows"] / t
        out["raw_env_steps_per_s"] = raw_env_rate(s["raw_env_steps"])
        log(f"read_dataset (pyarrow): {out['parquet_rows_per_s_pyarrow']:.0f} rows/s; "
            f"raw {ENV_ID} env.step: {out['raw_env_steps_per_s']:.0f} steps/s")

        # -- build the contenders --------------------------------------------------------------
        log("building O2OSAC (sac, aca with 0 EnvRunners; sacml offline on the Parquet dataset) and stock SAC")
        t0 = time.perf_counter()
        sac = build_o2o(SACUpdate, threads=args.threads)
        algos.append(sac)
        aca = build_o2o(ACAUpdate, env_steps_per_iteration=s["e2e_env_steps"], threads=args.threads)
        algos.append(aca)
        out["o2o_build_seconds"] = (time.perf_counter() - t0) / 2
        t0 = time.perf_counter()
        with timing_offline_load() as load_seconds:
            offline = build_o2o(SACMLUpdate, dataset_dir=dataset_dir, updates_per_iteration=s["offline_updates"],
                                threads=args.threads)
        algos.append(offline)
        out["offline_build_seconds"] = time.perf_counter() - t0
        t = load_seconds[0]
        out["parquet_rows_per_s_ray_data"] = s["dataset_rows"] / t
        out["offline_load_seconds"] = t
        log(f"offline algo built in {out['offline_build_seconds']:.1f}s; dataset load into the flat buffer "
            f"(Ray Data): {t:.2f}s = {out['parquet_rows_per_s_ray_data']:.0f} rows/s")
        stock = build_stock_sac(STOCK_UPDATES_PER_TRAIN)
        algos.append(stock)
        for algo in (sac, aca):
            seed_replay(algo, tr, meta)
        # Balanced Replay: the dataset as the protected offline rows, its first tenth again as "online" rows.
        balanced = build_o2o(BalancedReplayUpdate, threads=args.threads)
        algos.append(balanced)
        balanced.replay.add_transitions(tr, np.asarray(meta.action_low, np.float32),
                                        np.asarray(meta.action_high, np.float32), protected=True)
        seed_replay(balanced, {k: v[: len(v) // 10] for k, v in tr.items()}, meta)
        # ACA: a frozen reference policy that differs from the actor (a few SAC updates, then freeze, then more).
        aca._learn(20)
        aca.call_learner(lambda l: l.module["default_policy"].unwrapped().freeze_reference_policy())
        if args.threads != "auto":  # auto: what the algorithms' own sizing left (their allocation)
            torch.set_num_threads(args.threads)
        out["torch_threads_after_build"] = torch.get_num_threads()
        out["params"] = {"reference": reference_params(), "o2o": module_params(sac), "stock_rllib_sac": module_params(stock)}
        log(f"parameters: {out['params']}")

        ref = Reference()
        stock_arch_ref = StockArchReference()
        contenders = [ref, ProjectLearner("sac", sac), ProjectLearner("sacml_offline", offline),
                      ProjectLearner("aca_online", aca), ProjectLearner("balanced_replay", balanced),
                      StockSAC(stock, STOCK_UPDATES_PER_TRAIN), stock_arch_ref]
        block = {c.name: s["block"] for c in contenders}
        block["stock_rllib_sac"] = block["reference_stock_arch"] = s["stock_block"]
        log("warm-up")
        for c in contenders:
            c.run(block[c.name] // 4 or 1)
        # Setup objects (Ray, RLlib, datasets) are long-lived: keep them out of every later GC pass.
        gc.collect()
        gc.freeze()
        out["gc_frozen_objects"] = gc.get_freeze_count()

        # -- learner updates/s, interleaved ---------------------------------------------------------
        log(f"learner: {s['rounds']} rounds x {s['block']} updates (stock: {s['stock_block']})")
        ms = interleaved(contenders, block, s["rounds"])
        ref_ms = ms["reference"]
        out["reference_ms_per_update"] = median(ref_ms)
        out["reference_ms_per_update_rounds"] = ref_ms
        out["reference_best_ms_per_update"] = min(ref_ms)
        for name in (*MODES, *BASELINE_MODES, "stock_rllib_sac", "reference_stock_arch"):
            out[f"{name}_ms_per_update"] = median(ms[name])
            out[f"{name}_ratio"] = median(round_ratios(ref_ms, ms[name]))
            out[f"{name}_ms_per_update_rounds"] = ms[name]
            # Interference only ever adds time: the ratio of best blocks is the low-noise view.
            out[f"{name}_best_ms_per_update"] = min(ms[name])
            out[f"{name}_best_ratio"] = min(ref_ms) / min(ms[name])
        out["reference_updates_per_s"] = 1e3 / out["reference_ms_per_update"]

        # Breakdown of stock SAC: bare learner_group.update on pre-sampled episodes.
        episodes = stock.local_replay_buffer.sample(num_items=BATCH, n_step=1, gamma=stock.config.gamma,
                                                    beta=0.4, sample_episodes=True)
        n = s["stock_block"]
        r0 = timed(ref.run, n) * 1e3 / n
        t = timed(lambda: [stock.learner_group.update(episodes=episodes) for _ in range(n)]) * 1e3 / n
        r1 = timed(ref.run, n) * 1e3 / n
        out["stock_rllib_sac_learner_update_only_ms"] = t
        out["stock_rllib_sac_learner_update_only_ratio"] = (r0 + r1) / 2 / t
        # Stock SAC against the same pure-torch loop with stock's own Q architecture (framework overhead only).
        out["stock_rllib_sac_vs_same_arch_reference_ratio"] = median(
            round_ratios(ms["reference_stock_arch"], ms["stock_rllib_sac"]))
        # Cross-check with reference_sac.reference_ms_per_update itself (fresh nets, own warm-up).
        out["reference_fn_ms_per_update"] = reference_sac.reference_ms_per_update(
            OBS_DIM, ACT_DIM, BATCH, num_updates=s["block"], warmup=10)

        # -- offline stage train() ------------------------------------------------------------------
        log(f"offline SAC+ML train(): {s['offline_updates']} updates per iteration")
        offline_rounds = 3 if args.quick else 4  # the first train() call is discarded (warm-up)
        rows = []
        for _ in range(offline_rounds):
            r0 = timed(ref.run, s["block"]) * 1e3 / s["block"]
            t = timed(offline.train) * 1e3 / s["offline_updates"]
            r1 = timed(ref.run, s["block"]) * 1e3 / s["block"]
            rows.append((t, (r0 + r1) / 2 / t))
        rows = rows[1:]  # first train() call warms RLlib's metrics / result path
        out["sacml_offline_train_ms_per_update"] = median([r[0] for r in rows])
        out["sacml_offline_train_ratio"] = median([r[1] for r in rows])
        log(f"  {out['sacml_offline_train_ms_per_update']:.1f} ms/update, ratio {out['sacml_offline_train_ratio']:.2f}")

        # -- env sampling scaling + online end to end ---------------------------------------------
        out["env_steps_per_s"] = {}
        out["online_e2e"] = {}
        remote = None  # one algorithm with EnvRunners, grown with add_workers (saves actor start-ups)
        for runners in sorted(set(s["runners"])):
            if runners == 0:
                algo = aca
            elif remote is None:
                t0 = time.perf_counter()
                algo = remote = build_o2o(ACAUpdate, runners=runners, env_steps_per_iteration=s["e2e_env_steps"],
                                          threads=args.threads)
                algos.append(remote)
                log(f"built O2OSAC with {runners} EnvRunner(s) in {time.perf_counter() - t0:.1f}s")
            else:
                t0 = time.perf_counter()
                remote.env_runner_group.add_workers(runners - remote.env_runner_group.num_remote_env_runners())
                remote.env_runner_group.sync_weights(from_worker_or_learner_group=remote.learner_group,
                                                     inference_only=True)
                algo = remote
                log(f"grew to {runners} EnvRunners in {time.perf_counter() - t0:.1f}s")
            rate = sample_rate(algo, s["sample_steps"])
            out["env_steps_per_s"][str(runners)] = rate
            log(f"sampling with {runners} EnvRunner(s): {rate:.0f} env steps/s")
            if runners in (0, 1):
                if runners == 1:
                    seed_replay(algo, tr, meta)
                    algo._learn(10)
                result = e2e(algo, ref, s["block"], s["e2e_iterations"])
                out["online_e2e"][str(runners)] = result
                log(f"online ACA e2e, {runners} EnvRunner(s), UTD 1: {result['updates']:.0f} updates / "
                    f"{result['env_steps']:.0f} env steps per train(), {result['ms_per_update']:.1f} ms/update, "
                    f"ratio {result['ratio']:.2f} (median of {len(result['iterations'])})")
        if remote is not None:
            remote.stop()
            algos.remove(remote)
        if args.vector_envs > 1:
            algo = build_o2o(SACUpdate, envs_per_runner=args.vector_envs, threads=args.threads)
            algos.append(algo)
            out["vector_envs_per_runner"] = args.vector_envs
            out["vector_env_steps_per_s"] = sample_rate(algo, s["sample_steps"])
            log(f"sampling with 0 EnvRunners x {args.vector_envs} vector envs: "
                f"{out['vector_env_steps_per_s']:.0f} env steps/s")
            algo.stop()
            algos.remove(algo)
        if "1" in out["online_e2e"]:
            out["online_e2e_ms_per_update"] = out["online_e2e"]["1"]["ms_per_update"]
            out["online_e2e_ratio"] = out["online_e2e"]["1"]["ratio"]
        if "0" in out["online_e2e"]:
            out["online_e2e_0_runners_ratio"] = out["online_e2e"]["0"]["ratio"]

        # -- alignment stage: Z-fit steps/s -----------------------------------------------------
        from rllib_o2o.algorithms.alignment.z_fit import AlignSettings, align
        from rllib_o2o.networks import TanhGaussianActor

        actor = TanhGaussianActor(OBS_DIM, ACT_DIM, HIDDEN)
        actor_state = {k: v.numpy() for k, v in actor.state_dict().items()}
        n = max(1, s["block"] // 2)
        r0 = timed(ref.run, n) * 1e3 / n
        result = align(actor_state, str(dataset_dir), HIDDEN,
                       AlignSettings(z_steps=s["z_steps"], curve_every=max(1, s["z_steps"] // 2),
                                     torch_threads=args.threads))
        r1 = timed(ref.run, n) * 1e3 / n
        out["z_steps_per_s"] = result["z_steps_per_s"]
        out["z_fit_reference_updates_per_s"] = 2e3 / (r0 + r1)
        log(f"alignment: {result['z_steps_per_s']:.0f} Z-fit steps/s "
            f"(reference SAC alongside: {out['z_fit_reference_updates_per_s']:.0f} updates/s)")
    finally:
        for algo in algos:
            with contextlib.suppress(Exception):
                algo.stop()
        ray.shutdown()
        for proc in competitors:
            proc.kill()
            proc.wait()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    out["loadavg_end"] = loadavg()
    out["total_seconds"] = time.perf_counter() - t_start
    out["targets"] = targets(out)
    return out


def targets(out: dict) -> dict:
    checks = {f"{m}_ratio >= 0.75": out.get(f"{m}_ratio") for m in MODES}
    checks["sacml_offline_train_ratio >= 0.75 (offline stage train() on Parquet)"] = out.get("sacml_offline_train_ratio")
    checks["online_e2e_ratio >= 0.6 (ACA, UTD 1, 1 EnvRunner)"] = out.get("online_e2e_ratio")
    return {k: {"value": v, "met": None if v is None else bool(v >= float(k.split(">= ")[1].split()[0]))}
            for k, v in checks.items()}


def table(out: dict) -> str:
    ref = out["reference_ms_per_update"]
    lines = [
        f"{ENV_ID} sizes: obs {OBS_DIM}, act {ACT_DIM}, hidden {list(HIDDEN)}, batch {BATCH}; "
        f"torch threads {out['torch_threads']}; load {out['loadavg_start']} -> {out['loadavg_end']}",
        "",
        f"{'learner (per update)':<44}{'ms/update':>10}{'updates/s':>11}{'ratio':>8}{'best':>7}",
        f"{'reference (pure torch)':<44}{ref:>10.2f}{1e3 / ref:>11.1f}{1.0:>8.2f}{1.0:>7.2f}",
    ]
    rows = [
        ("stock RLlib SAC (train(), K updates/iter)", "stock_rllib_sac"),
        ("stock RLlib SAC (learner_group.update only)", "stock_rllib_sac_learner_update_only"),
        ("reference loop with stock SAC's Q nets", "reference_stock_arch"),
        ("O2OSAC sac (_learn)", "sac"),
        ("O2OSAC sacml_offline (_learn)", "sacml_offline"),
        ("O2OSAC aca_online (_learn)", "aca_online"),
        ("O2OSAC balanced_replay baseline (_learn)", "balanced_replay"),
        ("O2OSAC sacml offline stage train()", "sacml_offline_train"),
    ]
    for label, key in rows:
        m = out.get(f"{key}_ms_per_update", out.get(f"{key}_ms"))
        if m is not None:
            best = out.get(f"{key}_best_ratio")
            lines.append(f"{label:<44}{m:>10.2f}{1e3 / m:>11.1f}{out[f'{key}_ratio']:>8.2f}"
                         + (f"{best:>7.2f}" if best is not None else ""))
    for runners, r in out.get("online_e2e", {}).items():
        label = f"online ACA e2e UTD 1, {runners} EnvRunner(s)"
        lines.append(f"{label:<44}{r['ms_per_update']:>10.2f}{r['updates_per_s']:>11.1f}{r['ratio']:>8.2f}")
    lines.append("ratio: median over rounds of reference ms / contender ms in the same round; "
                 "best: fastest reference block / fastest contender block")
    lines.append(f"stock RLlib SAC vs the reference loop with the same (stock) Q nets: "
                 f"{out['stock_rllib_sac_vs_same_arch_reference_ratio']:.2f}x")
    lines += ["", f"{'sampling':<44}{'env steps/s':>12}"]
    lines.append(f"{'raw ' + ENV_ID + ' env.step, 1 process':<44}{out['raw_env_steps_per_s']:>12.0f}")
    for runners, rate in out.get("env_steps_per_s", {}).items():
        lines.append(f"{f'O2OSAC sampling, {runners} EnvRunner(s)':<44}{rate:>12.0f}")
    if "vector_env_steps_per_s" in out:
        label = f"O2OSAC sampling, 0 EnvRunners x {out['vector_envs_per_runner']} envs"
        lines.append(f"{label:<44}{out['vector_env_steps_per_s']:>12.0f}")
    lines += [
        "",
        f"alignment Z-fit: {out['z_steps_per_s']:.0f} steps/s; Parquet read: "
        f"{out['parquet_rows_per_s_ray_data']:.0f} rows/s (Ray Data, offline stage), "
        f"{out['parquet_rows_per_s_pyarrow']:.0f} rows/s (pyarrow read_dataset)",
        "",
        "targets:",
    ]
    for k, v in out["targets"].items():
        shown = "n/a" if v["value"] is None else f"{v['value']:.2f}"
        lines.append(f"  {'MET   ' if v['met'] else 'MISSED'} {k}: {shown}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 5 min on 2 cores)")
    parser.add_argument("--json", type=Path, help="write the results as one JSON object here")
    parser.add_argument("--threads", type=lambda v: v if v == "auto" else int(v), default=1,
                        help="torch.set_num_threads for the reference and the learner (default 1: on a loaded "
                             "2-core machine a second intra-op thread only adds contention); auto: the "
                             "project's default, each algorithm sizes the process to its allocation")
    parser.add_argument("--load", type=int, default=0,
                        help="start this many busy processes (one core each) for the whole run, stopped at its end")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--block", type=int, help="updates per contender per round")
    parser.add_argument("--stock-block", type=int, help="stock SAC updates per round (= updates per train())")
    parser.add_argument("--dataset-rows", type=int)
    parser.add_argument("--offline-updates", type=int, help="updates per offline train() call")
    parser.add_argument("--e2e-env-steps", type=int, help="env steps per online train() call")
    parser.add_argument("--e2e-iterations", type=int, help="online train() calls timed per EnvRunner count")
    parser.add_argument("--sample-steps", type=int, help="env steps timed per EnvRunner count")
    parser.add_argument("--runners", type=int, nargs="+", help="EnvRunner counts for the sampling curve")
    parser.add_argument("--vector-envs", type=int, default=8,
                        help="also sample with 0 EnvRunners and this many vectorised envs (<= 1: skip)")
    parser.add_argument("--z-steps", type=int)
    parser.add_argument("--raw-env-steps", type=int)
    args = parser.parse_args(argv)
    out = run(args)
    print()
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
