"""Names of the learner's metrics, shared by the learner that writes them and every reader.

As RLlib's `QF_LOSS_KEY`: the learner (`algorithms/o2o_sac`) returns each update call's means
under these keys; the online stage's progress line and curve, Tune's trial results, TensorBoard
(`learner/<key>`) and the benchmark scripts read them back by the same constants. A leaf module:
it imports nothing, so every layer may import it.
"""

# Every update.
CRITIC_LOSS = "critic_loss"  # sum over members of the squared TD errors, batch mean
ACTOR_LOSS = "actor_loss"
ALPHA = "alpha"  # the temperature the update used
TD_ERROR_RMS = "td_error_rms"  # root mean squared TD error per member
Q_MEAN = "q_mean"  # the critics' mean value of the batch's actions
LOG_PROB = "log_prob"  # mean log pi of the actor's sampled actions
NUM_UPDATES_LIFETIME = "num_updates_lifetime"  # the module's update count after the call

# SAC+ML (offline stage 1).
ML_LAMBDA = "ml_lambda"  # lambda = alpha_bc / mean |Q|
DATA_LOG_PROB = "data_log_prob"  # mean log pi of the data's actions

# CQL.
CQL_PENALTY = "cql_penalty"

# IQL (offline stage `iql`).
VALUE_LOSS = "value_loss"  # the expectile loss of V
V_MEAN = "v_mean"  # mean V(s) of the batch
ADVANTAGE_MEAN = "advantage_mean"  # mean min_i Qbar_i(s, a) - V(s) of the data's actions
AWR_WEIGHT_MEAN = "awr_weight_mean"  # mean clipped exp(beta A) of the actor's weighted likelihood

# ACA (online).
REFERENCE_WEIGHT = "reference_weight"  # w_t
OFFLINE_ENTROPY_BONUS_WEIGHT = "offline_entropy_bonus_weight"  # beta_t

# Balanced Replay.
DENSITY_LOSS = "density_loss"
DENSITY_RATIO_OFFLINE = "density_ratio_offline"
DENSITY_RATIO_ONLINE = "density_ratio_online"
# Not a metric: the new priorities of the batch's rows, which the algorithm writes back into the buffer.
PRIORITIES = "priorities"

# Online diagnostics: where the policy and the critic are relative to the hand-over, on one batch of states.
KL_TO_REFERENCE = "kl_to_reference"  # KL(pi || pi0)
MEAN_ACTION_SHIFT = "mean_action_shift"  # mean |tanh(mu) - tanh(mu0)|
MEAN_ACTION_SATURATED = "mean_action_saturated"  # fraction of mean actions with |a| > 0.99
POLICY_STD = "policy_std"
CRITIC_ACTION_WEIGHT_NORM = "critic_action_weight_norm"  # norm of the critics' first-layer action rows

# Written by the algorithm beside the learner's results: env steps sampled by the online stage so far.
NUM_ENV_STEPS_SAMPLED = "num_env_steps_sampled_o2o"

# What the online stage's evaluation points and results curve keep of the learner's metrics.
ONLINE_DIAGNOSTICS = (KL_TO_REFERENCE, MEAN_ACTION_SHIFT, MEAN_ACTION_SATURATED, POLICY_STD,
                      CRITIC_ACTION_WEIGHT_NORM, TD_ERROR_RMS, ALPHA, REFERENCE_WEIGHT,
                      OFFLINE_ENTROPY_BONUS_WEIGHT, Q_MEAN)
