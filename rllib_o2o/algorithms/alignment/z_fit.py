"""Stage 2, alignment: rebuild the critic from the offline actor (spec, stage 2).

Runs as its own Ray task (task.py: `align_remote`, `align_in_task`) with an explicit resource
request and retries, so it can be placed anywhere in a cluster and survives a dead worker.
Input: any stochastic tanh-Gaussian actor pi0 (stage 1's, or converted from
RLlib's CQL) and the offline dataset; optionally the offline critic, from which Z is then
distilled instead of fitted by TD (`align(offline_critic=...)`). Output: the full O2OSAC module state for
ACA: actor = pi0, frozen ref_actor = pi0, critics R_i built from the fitted
baselines Z_i with zeroed action columns, targets = R, log alpha = 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rllib_o2o import maths
from rllib_o2o.data.schema import read_dataset
from rllib_o2o.data.shared import resolve_columns
from rllib_o2o.networks import EnsembleMLP, TanhGaussianActor, critic_from_baseline
from rllib_o2o.nonfinite import NonFiniteError, describe, non_finite
from rllib_o2o.replay import RowSampler
from rllib_o2o.threads import AUTO, apply_torch_threads, resolve_torch_threads


@dataclass
class AlignSettings:
    z_steps: int = 20_000  # the most Z steps; fewer when the held-out residual plateaus
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    alpha_off: float = 0.0  # temperature in y_Z: the offline one (reference) or 1.0 (online-consistent)
    curve_every: int = 500
    seed: int = 0
    device: str = "cpu"
    actor_activation: str = "relu"
    # True (spec): the aligned critic is log pi0(a|s) + Z(s). False: Z(s) alone, for online
    # critics that fit R without the reference term (`critic_includes_reference=False`).
    z_includes_log_pi0: bool = True
    holdout_fraction: float = 0.05  # transitions kept out of the fit to measure Z's Bellman residual
    # Stop once the held-out residual has not improved by plateau_tolerance (relative) for
    # plateau_patience evaluations (one per curve_every steps); 0 = always run z_steps.
    plateau_patience: int = 0
    plateau_tolerance: float = 0.01
    # The CPUs the task holds (align_remote's num_cpus): torch's threads under "auto".
    num_cpus: float = 1
    # "auto" (num_cpus threads, at least 1) or a positive int (rllib_o2o/threads.py).
    torch_threads: int | str = AUTO
    # Distillation only (`align(offline_critic=...)`): actions sampled from pi0 per state to estimate
    # the target E_{a~pi0}[min_i Q_off,i(s, a)].
    distill_samples: int = 16
    # Members of Z, and so of the rebuilt critic R (the online module's `num_critics`).
    num_members: int = 2


class AlignmentError(RuntimeError):
    """The rebuilt critic does not satisfy R_i(s, a) == Z_i(s)."""


def check_finite(point: dict) -> None:
    """Raises NonFiniteError when a number of a Z-fit curve point (z_loss, the held-out errors) is NaN or infinite."""
    found = non_finite(point)
    if found:
        raise NonFiniteError(f"alignment stage: {describe(found)} at Z step {point['step']}; stopped before the "
                             "critic surgery, nothing was saved (alignment keeps no checkpoints: a re-run fits Z "
                             "from the start)")


def prefixed(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def align(actor_state: dict, dataset, hidden: tuple, settings: AlignSettings,
          progress: Callable[[dict], None] | None = None, offline_critic: dict | None = None) -> dict:
    """Fits Z_1..Z_E (E = settings.num_members) with pi0 frozen, performs the critic surgery, returns module weights.

    Z is fitted by TD on the data (L_Z, spec stage 2.1) or, when `offline_critic` (the offline
    twin critic's state dict) is given, distilled from it: Z_i(s) regressed on the offline
    critic's value of pi0, E_{a~pi0}[min_j Q_off,j(s, a)] (`maths.critic_value_of_policy`). The
    TD fit of a state value from the data's actions estimates the behaviour policy's value, not
    pi0's; the offline critic was trained by TD on pi0's own actions for the whole offline stage
    (as the reference code trains Z jointly with it). Distillation needs z_includes_log_pi0=False.

    `progress` receives each point of the Z-loss curve as it is measured (every
    `curve_every` steps: step, z_loss, heldout_residual; when distilling also heldout_distill_error,
    the held-out regression MSE that the plateau rule then watches).

    Sets this process's torch threads first (`settings.torch_threads`, by default the task's
    `num_cpus`), whatever OMP_NUM_THREADS the worker inherited.

    `dataset`: a dataset directory, or a (columns, meta) pair: the columns as arrays or as the
    object refs of a `SharedDataset`, through which a remote task on any node reads the driver's
    copy (its node need not see the driver's disk), without copying it.
    """
    apply_torch_threads(resolve_torch_threads(settings.torch_threads, settings.num_cpus))
    torch.manual_seed(settings.seed)
    if isinstance(dataset, (str, os.PathLike)):
        transitions, meta = read_dataset(dataset)
    else:
        transitions, meta = resolve_columns(dataset[0]), dataset[1]
    obs_dim, act_dim = meta.obs_dim, meta.act_dim
    replay, holdout = _split(transitions, meta, settings)
    device = torch.device(settings.device)
    pi0 = TanhGaussianActor(obs_dim, act_dim, hidden, settings.actor_activation).to(device)
    pi0.load_state_dict({k: torch.tensor(np.array(v)) for k, v in actor_state.items()})
    pi0.requires_grad_(False)
    z = EnsembleMLP(settings.num_members, obs_dim, 1, hidden).to(device)
    optimizer = torch.optim.Adam(z.parameters(), lr=settings.lr)

    holdout_batch = {k: torch.from_numpy(v).to(device) for k, v in holdout.items()}
    distill = None
    if offline_critic is not None:
        if settings.z_includes_log_pi0:
            raise ValueError("Z distilled from the offline critic is a state value (z_includes_log_pi0=False); "
                             "the spec's log pi0(a|s) + Z(s) parameterisation is fitted by TD only")
        distill = _DistillTargets(pi0, offline_critic, obs_dim, act_dim, hidden, settings, device)
        holdout_batch["z_target"] = distill.of(holdout_batch["obs"])

        def fit_obs(positions: torch.Tensor) -> torch.Tensor:
            """The states at fit positions (indices into the fit's rows), gathered when asked for."""
            return torch.from_numpy(replay.gather(positions.cpu().numpy())["obs"]).to(device)

        fit_target = _TargetCache(distill, fit_obs, len(replay), settings.z_steps * settings.batch_size, device)
        rows = torch.Generator().manual_seed(settings.seed)
    curve, window, start = [], [], time.perf_counter()
    best, since_best, stopped_early, step = math.inf, 0, False, 0
    chunk = 1000
    for first in range(0, settings.z_steps, chunk):
        num = min(chunk, settings.z_steps - first)
        if distill is None:
            batches = {k: torch.from_numpy(v).to(device) for k, v in replay.sample(num, settings.batch_size).items()}
        else:
            index = torch.randint(len(replay), (num, settings.batch_size), generator=rows).to(device)
            batches = {"obs": fit_obs(index), "z_target": fit_target.at(index)}
        for u in range(num):
            b = {k: v[u] for k, v in batches.items()}
            if distill is None:
                loss = z_fit_step(pi0, z, optimizer, b, settings)
            else:
                loss = z_distill_step(z, optimizer, b["obs"], b["z_target"])
            window.append(loss)
            step = first + u + 1
            if step % settings.curve_every == 0 or step == settings.z_steps:
                residual = bellman_residual(pi0, z, holdout_batch, settings)
                curve.append({"step": step, "z_loss": float(torch.stack(window).mean()),
                              "heldout_residual": residual})
                watched = residual
                if distill is not None:
                    watched = distill_error(z, holdout_batch)
                    curve[-1]["heldout_distill_error"] = watched
                window = []
                check_finite(curve[-1])
                if progress:
                    progress(curve[-1])
                if watched < best * (1.0 - settings.plateau_tolerance):
                    best, since_best = watched, 0
                else:
                    since_best += 1
                if settings.plateau_patience and since_best >= settings.plateau_patience:
                    stopped_early = True
                    break
        if stopped_early:
            break

    r = critic_from_baseline(z, act_dim)
    max_error = surgery_error(z, r, replay, device, settings.seed)
    if max_error > 1e-4:
        raise AlignmentError(f"critic surgery broke R(s,a) == Z(s): max |R - Z| = {max_error:.3g}")
    weights = {
        **prefixed("actor", pi0),
        **prefixed("ref_actor", pi0),
        **prefixed("critic", r),
        **prefixed("target_critic", r),
        "log_alpha": np.zeros((), np.float32),
        "num_updates": np.zeros((), np.int64),
    }
    return {
        "weights": weights,
        "z_loss_curve": curve,
        "surgery_max_abs_error": max_error,
        "z_steps_done": step,
        "stopped_at_plateau": stopped_early,
        "seconds": time.perf_counter() - start,
        "z_steps_per_s": step / max(time.perf_counter() - start, 1e-9),
        "torch_threads": torch.get_num_threads(),  # what the Z fit ran with
        "z_source": "offline critic" if distill is not None else "td",
        "settings": asdict(settings),
    }


class _DistillTargets:
    """E_{a~pi0}[min_j Q_off,j(s, a)] for batches of states, with the offline critic frozen."""

    def __init__(self, pi0, critic_state: dict, obs_dim: int, act_dim: int, hidden: tuple,
                 settings: AlignSettings, device):
        self.pi0, self.samples = pi0, settings.distill_samples
        members = np.shape(critic_state["weights.0"])[0]
        self.critic = EnsembleMLP(members, obs_dim + act_dim, 1, hidden).to(device)
        self.critic.load_state_dict({k: torch.tensor(np.array(v)) for k, v in critic_state.items()})
        self.critic.requires_grad_(False)

    @torch.no_grad()
    def of(self, obs: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """[B] targets of states [B, obs_dim], `chunk` states (times `distill_samples` actions) at a time."""
        return torch.cat([self._of(obs[i:i + chunk]) for i in range(0, len(obs), chunk)])

    def _of(self, obs: torch.Tensor) -> torch.Tensor:
        k, (num, obs_dim) = self.samples, obs.shape
        mean, log_std = self.pi0(obs)
        actions, _ = maths.tanh_gaussian_rsample(mean.expand(k, *mean.shape), log_std.expand(k, *log_std.shape))
        pairs = torch.cat([obs.expand(k, num, obs_dim), actions], -1).reshape(k * num, -1)
        q = self.critic(pairs).squeeze(-1)  # [E, K * B]
        return maths.critic_value_of_policy(q.reshape(q.shape[0], k, num))


class _TargetCache:
    """Each fit state's distillation target, computed once (the critic and pi0 are frozen).

    A dataset with no more states than the fit samples (`z_steps * batch_size`) gets all its
    targets up front; a bigger one only those of the states sampled so far, on first use, so the
    cost follows the fit's length rather than the dataset's (16 critic passes per state: minutes
    for 1M states on a CPU).
    """

    def __init__(self, distill: _DistillTargets, obs: Callable[[torch.Tensor], torch.Tensor], num_states: int,
                 rows_sampled: int, device):
        """`obs(index)`: the states at `index` of the `num_states` fit states."""
        self.distill, self.obs, self.known = distill, obs, None
        if num_states <= rows_sampled:
            self.targets = distill.of(obs(torch.arange(num_states, device=device)))
        else:
            self.targets = torch.full((num_states,), math.nan, device=device)
            self.known = torch.zeros(num_states, dtype=torch.bool, device=device)

    def at(self, index: torch.Tensor) -> torch.Tensor:
        """The targets of the states at `index` (any shape)."""
        if self.known is not None:
            new = index.unique()
            new = new[~self.known[new]]
            if len(new):
                self.targets[new] = self.distill.of(self.obs(new))
                self.known[new] = True
        return self.targets[index]


def z_distill_step(z, optimizer, obs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One regression step of Z_i(s) onto the offline critic's value of pi0; returns the detached loss."""
    loss = maths.critic_loss(z(obs).squeeze(-1), target)  # sum_i MSE(Z_i(s), target): the same regression
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def distill_error(z, heldout: dict) -> float:
    """Mean over critics of the held-out MSE of Z_i(s) against the distillation target."""
    return float(maths.critic_loss(z(heldout["obs"]).squeeze(-1), heldout["z_target"])) / z.num_members


def _split(transitions: dict, meta, settings: AlignSettings) -> tuple[RowSampler, dict]:
    """The fit's sampler and a held-out batch (a seeded random subset, at most 10k rows).

    Both read the dataset where it is (the object store's copy in a Ray task): the fit's rows are
    never copied whole. Datasets under 20 rows hold nothing out: the residual is then measured on
    one training row.
    """
    num = len(transitions["rewards"])
    order = np.random.default_rng(settings.seed).permutation(num)
    num_holdout = min(10_000, int(num * settings.holdout_fraction)) if num >= 20 else 0
    low, high = np.asarray(meta.action_low, np.float32), np.asarray(meta.action_high, np.float32)
    heldout_rows = order[:max(num_holdout, 1)]
    heldout = RowSampler(transitions, heldout_rows, low, high).gather(np.arange(len(heldout_rows)))
    return RowSampler(transitions, order[num_holdout:], low, high, seed=settings.seed), heldout


def _z_fit_terms(pi0, z, b: dict, settings: AlignSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The arguments of `maths.z_loss` on batch `b`: (log pi0(a|s) or 0, Z_i(s) [E, B], y_Z)."""
    with torch.no_grad():
        mean, log_std = pi0(b["obs"])
        log_pi0 = maths.tanh_gaussian_log_prob(mean, log_std, b["actions"])
        if not settings.z_includes_log_pi0:
            log_pi0 = torch.zeros_like(log_pi0)
        next_mean, next_log_std = pi0(b["new_obs"])
        _, next_log_pi0 = maths.tanh_gaussian_rsample(next_mean, next_log_std)
        next_z_min = z(b["new_obs"]).squeeze(-1).min(0).values
        y = maths.z_target(b["rewards"], b["terminateds"], settings.gamma, next_log_pi0, next_z_min,
                           settings.alpha_off)
    return log_pi0, z(b["obs"]).squeeze(-1), y


def z_fit_step(pi0, z, optimizer, b: dict, settings: AlignSettings) -> torch.Tensor:
    """One step of L_Z (spec, stage 2.1) on batch `b`; returns the detached loss."""
    loss = maths.z_loss(*_z_fit_terms(pi0, z, b, settings))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def bellman_residual(pi0, z, heldout: dict, settings: AlignSettings) -> float:
    """Mean over critics of L_Z's squared error on held-out transitions (fixed a' noise)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(settings.seed + 1)
    terms = _z_fit_terms(pi0, z, heldout, settings)
    torch.random.set_rng_state(state)
    return float(maths.z_loss(*terms)) / z.num_members


@torch.no_grad()
def surgery_error(z: EnsembleMLP, r: EnsembleMLP, replay: RowSampler, device, seed: int) -> float:
    """max |R_i(s, a) - Z_i(s)| over dataset states and uniformly random actions."""
    batch = replay.sample(1, 1024)
    obs = torch.from_numpy(batch["obs"][0]).to(device)
    generator = torch.Generator().manual_seed(seed)
    actions = (torch.rand(obs.shape[0], r.in_dim - z.in_dim, generator=generator) * 2 - 1).to(device)
    return float((r(torch.cat([obs, actions], -1)) - z(obs)).abs().max())
