"""The equations of ACA (Yu & Zhang, ICML 2023), findable by name.

Every function quotes the formula it implements (docs/method.md maps each equation to its function).
Pure torch, stateless, no Ray: the learners compose these so that the maths is
reviewable (and unit-tested) in one place.

Conventions: batch-first tensors; log-probabilities are summed over the action
dimension (shape [B]); ensemble values are stacked as [E, B]; `alpha` and the
ACA weight may be floats or tensors. Targets are returned detached, and
temperatures are detached inside the losses that must not train them.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

Scalar = float | torch.Tensor


def _const(x: Scalar) -> Scalar:
    """A coefficient that must not receive gradient from this loss."""
    return x.detach() if isinstance(x, torch.Tensor) else x


def _gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per-dimension log N(u; mean, exp(log_std)^2)."""
    z = (u - mean) * torch.exp(-log_std)
    return -0.5 * z * z - log_std - _HALF_LOG_2PI


def _tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): exact, finite for any u."""
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


def _squashed_log_prob_at(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """log pi(tanh(u)) = sum_d [ log N(u_d) - log(1 - tanh(u_d)^2) ], from the pre-tanh point."""
    return (_gaussian_log_prob(mean, log_std, u) - _tanh_log_det(u)).sum(-1)


def tanh_gaussian_rsample(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample of the tanh-squashed Gaussian policy and its log-density.

    u = mean + std * eps, eps ~ N(0, I);  a = tanh(u);
    log pi(a|s) = sum_d [ log N(u_d; mean_d, std_d) - 2 (log 2 - u_d - softplus(-2 u_d)) ].

    The Jacobian uses u, not a, so saturated samples (|a| -> 1 in float32) keep a
    finite, exact log-density. Returns (action [..., A], log_prob [...]).
    """
    eps = torch.randn_like(mean)
    u = mean + torch.exp(log_std) * eps
    # (u - mean) / std == eps exactly, in value and in gradient, so use eps directly.
    gauss = -0.5 * eps * eps - log_std - _HALF_LOG_2PI
    return torch.tanh(u), (gauss - _tanh_log_det(u)).sum(-1)


def tanh_gaussian_rsample_path_only(
    mean: torch.Tensor, log_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `tanh_gaussian_rsample`, with the log-density's gradient through the sample only
    ("sticking the landing", Roeder, Wu & Duvenaud 2017).

    u = mean + std * eps;  a = tanh(u);
    log pi(a|s) = sum_d [ log N(u_d; [mean_d], [std_d]) - log(1 - tanh(u_d)^2) ],  [.] = no gradient.

    Same value as `tanh_gaussian_rsample`. The dropped term is the score
    d/dtheta log pi_theta(a) at fixed a, which has zero mean, so gradients of
    E[log pi] - E[log pi0] stay unbiased; at pi = pi0 they are zero for every
    sample instead of zero on average (d/dmean: -eps/std + 2 tanh(u) here,
    against 2 tanh(u) with the score term).
    """
    eps = torch.randn_like(mean)
    u = mean + torch.exp(log_std) * eps
    return torch.tanh(u), _squashed_log_prob_at(mean.detach(), log_std.detach(), u)


def tanh_gaussian_log_prob(
    mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """log pi(a|s) of a given action a in (-1, 1) under the tanh-squashed Gaussian.

    u = atanh(clamp(a, -1 + eps, 1 - eps));  log pi(a|s) = sum_d [ log N(u_d) - log(1 - tanh(u_d)^2) ].

    Dataset actions often sit exactly on the bound +-1, where atanh is infinite; the
    clamp maps them to |u| = atanh(1 - eps) (about 7.25 for eps = 1e-6) so their
    log-density stays finite. eps must exceed the dtype's resolution near 1
    (float32: 6e-8). The gradient w.r.t. a is zero for clamped actions.
    """
    u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
    return _squashed_log_prob_at(mean, log_std, u)


def log_prob_clip_threshold(
    mean: torch.Tensor, log_std: torch.Tensor, beta: float, squashed: bool = True
) -> torch.Tensor:
    """Lower clip level of the reference log-likelihood.

    c(s) = min( log pi0(mu(s) - beta*sigma(s) | s),  log pi0(mu(s) + beta*sigma(s) | s) ).

    mu, sigma are the (pre-tanh) Gaussian's; both points shift every dimension by
    the same number of std-devs. For the tanh-squashed policy the points are
    squashed and their density includes the tanh Jacobian, which differs between
    the two points when mu != 0 (hence the min). The density is evaluated at u
    directly, not via atanh(tanh(u)), which loses precision once tanh saturates.
    `squashed=False` is the unsquashed Gaussian (AntMaze), where both points have
    the same density. Returns [...]; detach it if pi0's parameters are trainable.
    """
    offset = beta * torch.exp(log_std)
    if not squashed:
        return _gaussian_log_prob(mean, log_std, mean + offset).sum(-1)
    lower = _squashed_log_prob_at(mean, log_std, mean - offset)
    upper = _squashed_log_prob_at(mean, log_std, mean + offset)
    return torch.minimum(lower, upper)


def clipped_log_prob(log_prob: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Smooth lower clip of log pi0 at c(s).

    l(s,a) = softplus( log pi0(a|s) - c(s) ) + c(s).

    l >= c everywhere, l -> log pi0 (error e^-(log pi0 - c)) far above c, l -> c far
    below, and it is differentiable, so the actor's gradient can flow through it.
    """
    return F.softplus(log_prob - threshold) + threshold


def reference_weight(num_updates: int, w0: float, T: float, w_min: float) -> float:
    """ACA weight schedule [w0, T, w_min].

    "w starts at w0 and falls by w0/(T*1000) per update until w_min":
    w_t = max(w_min, w0 - t * w0 / (T * 1000)).
    """
    if T <= 0:
        raise ValueError(f"T must be positive, got {T}")
    return max(float(w_min), float(w0) - num_updates * float(w0) / (float(T) * 1000.0))


def offline_entropy_bonus(temperature: Scalar, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """The offline critic's entropy bonus at s', kept in ACA's online target (not in the spec).

    bonus(s') = beta_t H(pi0(.|s')) ~= -beta_t log pi0(a0|s'),  a0 ~ pi0(.|s') (one sample per state).

    A Z distilled from a SAC critic at temperature alpha_off satisfies Z(s) = E[r + gamma (Z(s') +
    alpha_off H(pi0(.|s')))] on pi0's own transitions; online at pi = pi0 and w = alpha the target's
    w l - alpha log pi cancels, so with beta_0 = alpha_off the bonus makes Z the target's fixed point
    at t = 0 again. It depends on s' only (a fresh pi0 sample, not the policy's a'), so it does not
    reward leaving pi0. Detached.
    """
    return (-_const(temperature) * ref_log_prob).detach()


def soft_q_target(
    rewards: torch.Tensor,
    terminateds: torch.Tensor,
    gamma: float,
    next_q_min: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: Scalar,
) -> torch.Tensor:
    """SAC's soft Bellman target (stage 1 and stage 3).

    y = r + gamma (1 - d) [ min_i Qbar_i(s',a') - alpha log pi(a'|s') ],  a' ~ pi(.|s').

    For ACA pass next_q_min = min_i Rbar_i(s',a') + w_t l(s',a') (+ `offline_entropy_bonus`). `terminateds` is
    true termination only (time-limit truncation still bootstraps). Detached.
    """
    not_done = 1.0 - terminateds.to(rewards.dtype)
    return (rewards + gamma * not_done * (next_q_min - alpha * next_log_prob)).detach()


def z_target(
    rewards: torch.Tensor,
    terminateds: torch.Tensor,
    gamma: float,
    next_log_pi0: torch.Tensor,
    next_z_min: torch.Tensor,
    alpha_off: Scalar,
) -> torch.Tensor:
    """Target of the state baseline Z (stage 2 step 1).

    y_Z = r + gamma (1 - d) [ log pi0(a'|s') + min_i Z_i(s') - alpha_off log pi0(a'|s') ],  a' ~ pi0(.|s').

    Detached: Z has no target network and y_Z carries no gradient.
    """
    not_done = 1.0 - terminateds.to(rewards.dtype)
    soft_value = next_log_pi0 + next_z_min - alpha_off * next_log_pi0
    return (rewards + gamma * not_done * soft_value).detach()


def z_loss(log_pi0: torch.Tensor, z_values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Alignment loss of the baselines, with Q_i(s,a) = log pi0(a|s) + Z_i(s).

    L_Z = sum_i E_D[ ( log pi0(a|s) + Z_i(s) - y_Z )^2 ].

    z_values is [E, B]; log_pi0 and y are [B]. log pi0 is detached: L_Z trains Z
    only, even when Z is fitted jointly with a still-learning actor.
    """
    err = log_pi0.detach() + z_values - y.detach()
    return (err * err).mean(-1).sum()


def critic_value_of_policy(q_sampled: torch.Tensor) -> torch.Tensor:
    """The offline critic's value of pi0, the target of a distilled baseline Z.

    Z_off(s) = E_{a~pi0(.|s)}[ min_i Q_off,i(s, a) ] ~= (1/K) sum_k min_i Q_off,i(s, a_k),  a_k ~ pi0(.|s).

    q_sampled: [E, K, B] values of K sampled actions per state; returns [B], detached.
    """
    return q_sampled.min(0).values.mean(0).detach()


def average_value_estimate(q_values: torch.Tensor) -> torch.Tensor:
    """The critic's estimate of a deterministic policy's value on the data's states (d3rlpy's average
    value estimation), an offline criterion: no environment is stepped.

    V_hat(mu) = (1/N) sum_{n} min_i Q_i(s_n, mu(s_n)),

    q_values: [E, N], the E members' values of N states at the policy's mean action; returns a scalar.
    """
    return q_values.min(0).values.mean()


def min_over_members(q_values: torch.Tensor) -> torch.Tensor:
    """The ensemble's pessimistic value of (s, a): min_{i in M} Q_i(s,a), q_values [|M|, B] of the members
    in M, returns [B].

    M is every member for SAC's twin min; REDQ's and RLPD's target takes a random subset of an
    ensemble, drawn afresh per update (the network evaluates only those: `EnsembleMLP(members=...)`).
    """
    return q_values.min(0).values


def ensemble_layer_norm(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalisation of each member's hidden units (Ba et al. 2016), as RLPD's and WSRL's critics
    apply after every hidden layer's affine map, before its activation:

    LN(x)_j = g_j (x_j - mean_k x_k) / sqrt(var_k x_k + eps) + b_j,

    mean and (biased) variance over the last dimension; x [E, B, H], gain and bias [E, 1, H] (one pair
    per member). Normalised, a critic's features cannot grow without bound on the actions the data
    never shows, which is what lets RLPD learn from offline data at a high update ratio.
    """
    return F.layer_norm(x, x.shape[-1:], eps=eps) * gain + bias


def is_policy_update(num_updates: int, interval: int) -> bool:
    """Whether critic update `num_updates` (counted from 0) is followed by the actor's and the
    temperature's steps: once every `interval` critic updates, after the last of them.

    RLPD and WSRL at update-to-data ratio G take G critic steps per env step and then one actor and
    one temperature step (interval = G); SAC steps all three every update (interval 1).
    """
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return (num_updates + 1) % interval == 0


def offline_rows_per_batch(batch_size: int, offline_fraction: float) -> int:
    """RLPD's symmetric sampling: floor(B f) rows of each batch of B come from the offline data and
    the other B - floor(B f) from the online replay buffer (f = 0.5: half each)."""
    if not 0.0 <= offline_fraction < 1.0:
        raise ValueError(f"offline_fraction must be in [0, 1), got {offline_fraction}")
    return int(batch_size * offline_fraction)


def critic_loss(q_values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Twin-critic regression: sum_i MSE(Q_i(s,a), y), q_values [E, B], y [B].

    For ACA pass q_values = R_i(s,a) + w_t l(s,a) with l detached.
    """
    err = q_values - y.detach()
    return (err * err).mean(-1).sum()


def cql_penalty(q_sampled: torch.Tensor, q_data: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Conservative Q-learning's CQL(H) regulariser (Kumar et al. 2020), a baseline (cql-sac), not ACA.

        sum_i E_s[ T * logsumexp_k( Q_i(s, a_k) / T ) - Q_i(s, a_data) ]

    q_sampled: [E, B, K] importance-weighted values of K sampled actions (Q - log density);
    q_data: [E, B] values of the dataset actions.
    """
    soft_max = temperature * torch.logsumexp(q_sampled / temperature, dim=-1)
    return (soft_max - q_data).mean(-1).sum()


def density_ratio_loss(w_offline: torch.Tensor, w_online: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Balanced Replay's density-ratio estimator (Lee et al. 2022), a baseline, not ACA.

    Variational Jensen-Shannon bound with f(x) = x log x - (x+1) log((x+1)/2):

        L(psi) = E_{(s,a)~offline}[ f*(f'(w)) ] - E_{(s,a)~online}[ f'(w) ],
        f'(w) = log(2w / (w+1)),   f*(f'(w)) = log((w+1) / 2),

    minimised pointwise at w(s,a) = d_online(s,a) / d_offline(s,a). w >= 0: [B] each.
    """
    offline_term = torch.log((w_offline + 1.0) / 2.0 + eps)
    online_term = torch.log(2.0 * w_online / (w_online + 1.0) + eps)
    return offline_term.mean() - online_term.mean()


def balanced_replay_priority(
    w: torch.Tensor, w_offline: torch.Tensor, temperature: float, low: float = 1e-3, high: float = 1e3
) -> torch.Tensor:
    """Replay priority of transitions with density ratio w (Balanced Replay):

        p(s,a) = clip( w(s,a)^(1/T) / E_offline[ w^(1/T) ], low, high ),

    self-normalised by the offline batch so offline rows sit near 1 and the most
    on-policy (online-like) rows are replayed more. Detached.
    """
    with torch.no_grad():
        scaled = w.pow(1.0 / temperature)
        return (scaled / (w_offline.pow(1.0 / temperature).mean() + 1e-10)).clamp(low, high)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's value loss (Kostrikov et al. 2022), offline stage `iql`: the asymmetric squared error

        L_tau(u) = E[ |tau - 1(u < 0)| u^2 ],   u = min_i Qbar_i(s, a) - V(s),  (s, a) ~ D,

    whose minimiser V(s) is the tau-expectile of the data's Q-values at s (tau = 0.7: above their
    mean, towards the best in-data action, without querying an action outside the data)."""
    weight = (expectile - (diff < 0).to(diff.dtype)).abs()
    return (weight * diff.square()).mean()


def advantage_weights(advantage: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """IQL's advantage-weighted regression weights: min( exp(beta A(s, a)), w_max ), detached.

    A = min_i Qbar_i(s, a) - V(s) on the data's actions; beta the inverse temperature (3 for
    MuJoCo), w_max = 100 keeps one row from dominating a batch."""
    with torch.no_grad():
        return torch.exp(temperature * advantage).clamp(max=max_weight)


def awr_actor_loss(weights: torch.Tensor, data_log_prob: torch.Tensor) -> torch.Tensor:
    """IQL's actor: L_pi = -E_{(s,a)~D}[ w(s, a) log pi(a|s) ], weighted maximum likelihood of the
    data's actions (`advantage_weights`): no action outside the data is ever evaluated."""
    return -(_const(weights) * data_log_prob).mean()


def state_value_target(
    rewards: torch.Tensor, terminateds: torch.Tensor, gamma: float, next_v: torch.Tensor
) -> torch.Tensor:
    """IQL's critic target: y = r + gamma (1 - d) V(s') (V has no target network), detached."""
    return (rewards + gamma * (1.0 - terminateds) * next_v).detach()


def return_range_scale(episode_returns: Iterable[float], span: float = 1000.0) -> float:
    """IQL's reward scale for locomotion: span / (max_k R_k - min_k R_k) over the data's episode
    returns (CORL's and d3rlpy's D4RL setting, span 1000), so that beta means the same on every
    dataset. Applied to the advantage: A and V scale linearly with r, so beta * scale * A equals
    beta * A of the rescaled rewards while Q stays in the data's units."""
    returns = [float(r) for r in episode_returns]
    spread = max(returns) - min(returns) if returns else 0.0
    if not spread > 0.0:
        raise ValueError(f"return_range_scale needs episodes of different returns, got {len(returns)} episode(s) "
                         f"with spread {spread}")
    return span / spread


def moving_average_rate(tau: float, step: int) -> float:
    """The rate of update `step` (from 0) of a moving average of weights: tau_t = max(tau, 1 / (t + 1)).

    theta_ema <- (1 - tau_t) theta_ema + tau_t theta: the plain mean of the iterates so far until
    t = 1/tau - 1, then the exponential average of horizon about 1/tau updates. The average never
    holds the initial weights, so a stage shorter than the horizon hands over its iterates' mean,
    not a blend with its random initialisation."""
    return max(tau, 1.0 / (step + 1))


def cosine_decay(base: float, step: int, total: int) -> float:
    """Cosine learning-rate decay to zero: lr_t = base (1 + cos(pi min(t, T) / T)) / 2, t = 0 .. T
    (CORL's IQL actor schedule): the last updates move the policy less and less, so the last
    checkpoints settle instead of swinging with the critic."""
    if total <= 0:
        raise ValueError(f"cosine_decay needs total > 0, got {total}")
    return base * 0.5 * (1.0 + math.cos(math.pi * min(max(step, 0), total) / total))


def sac_actor_loss(alpha: Scalar, log_prob: torch.Tensor, q_min: torch.Tensor) -> torch.Tensor:
    """SAC actor: E_s[ alpha log pi(a|s) - min_i Q_i(s,a) ], a ~ pi reparameterised."""
    return (_const(alpha) * log_prob - q_min).mean()


def ml_actor_loss(
    alpha: Scalar,
    log_prob: torch.Tensor,
    q_min: torch.Tensor,
    data_log_prob: torch.Tensor,
    alpha_bc: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAC+ML actor (stage 1), scaled as in TD3+BC.

    L_pi = lambda * E_{s~D, a~pi}[ alpha_off log pi(a|s) - min_i Q_i(s,a) ] - E_{(s,a)~D}[ log pi(a|s) ],
    lambda = alpha_bc / mean|Q(s, a~pi)|  (no gradient through lambda).

    Returns (loss, lambda).
    """
    lam = alpha_bc / q_min.detach().abs().mean()
    return lam * sac_actor_loss(alpha, log_prob, q_min) - data_log_prob.mean(), lam


def aca_actor_loss(
    alpha: Scalar, log_prob: torch.Tensor, r_min: torch.Tensor, weight: Scalar, l: torch.Tensor
) -> torch.Tensor:
    """ACA actor (stage 3): E_s[ alpha log pi(a|s) - min_i R_i(s,a) - w_t l(s,a) ], a ~ pi reparameterised.

    l = clipped log pi0(a|s) keeps its gradient w.r.t. a: with w = alpha = 1 and R
    independent of a this is KL(pi || pi0) - E[R], stationary at pi = pi0. (With
    `actor_q_reduction` "mean", pass the members' mean for r_min.)
    """
    return (_const(alpha) * log_prob - r_min - _const(weight) * l).mean()


def tanh_gaussian_kl(
    mean: torch.Tensor, log_std: torch.Tensor, ref_mean: torch.Tensor, ref_log_std: torch.Tensor
) -> torch.Tensor:
    """KL(pi || pi0) of two tanh-squashed Gaussians, in closed form (an online diagnostic).

    tanh is a bijection, so the Jacobians cancel and the KL is that of the pre-tanh Gaussians:
    KL = sum_d [ log(sigma0_d / sigma_d) + (sigma_d^2 + (mu_d - mu0_d)^2) / (2 sigma0_d^2) - 1/2 ].
    Returns [...] (summed over the action dimension).
    """
    var_ratio = torch.exp(2.0 * (log_std - ref_log_std))
    shift = (mean - ref_mean) * torch.exp(-ref_log_std)
    return (ref_log_std - log_std + 0.5 * (var_ratio + shift * shift) - 0.5).sum(-1)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: Scalar) -> torch.Tensor:
    """SAC temperature: -E[ log alpha (log pi(a|s) + H_target) ], raising alpha while entropy < H_target.

    H_target is a constant (-c_H |A|) or, per state, a sample of -log pi0(a0|s), a0 ~ pi0 (ACA with
    `reference_entropy_target`: stationary in expectation at pi = pi0)."""
    return -(log_alpha * (log_prob + target_entropy).detach()).mean()


@torch.no_grad()
def temperature_floor_(log_alpha: torch.Tensor, min_alpha: float) -> None:
    """In place: log alpha <- max(log alpha, log min_alpha), i.e. alpha <- max(alpha, min_alpha); a
    floor of 0 leaves it as it is."""
    if min_alpha > 0:
        log_alpha.clamp_(min=math.log(min_alpha))


@torch.no_grad()
def polyak_update_(
    target_params: Iterable[torch.Tensor], source_params: Iterable[torch.Tensor], tau: float
) -> None:
    """Soft target update in place: theta_bar <- (1 - tau) theta_bar + tau theta (one fused foreach lerp)."""
    targets, sources = list(target_params), list(source_params)
    if len(targets) != len(sources):
        raise ValueError(f"{len(targets)} target tensors but {len(sources)} source tensors")
    torch._foreach_lerp_(targets, sources, tau)


def zero_action_columns(first_weight: torch.Tensor, obs_dim: int, action_dim: int) -> torch.Tensor:
    """First-layer weight of R_i(s,a) built from Z_i(s) (stage 2 step 2).

    "copy Z_i's weights, set the action columns of the first-layer weight to zero",
    so that R_i(s,a) == Z_i(s) for every a. Weights are stored as x @ W, shape
    [..., in, out] (e.g. stacked [E, obs_dim, out]): the action inputs are appended
    as zero rows after the observation rows (input = concat([obs, action], -1)).
    Returns a new [..., obs_dim + action_dim, out] tensor.
    """
    if first_weight.shape[-2] != obs_dim:
        raise ValueError(f"weight has {first_weight.shape[-2]} input rows, expected obs_dim={obs_dim}")
    zeros = first_weight.new_zeros(*first_weight.shape[:-2], action_dim, first_weight.shape[-1])
    return torch.cat([first_weight.detach(), zeros], dim=-2)
