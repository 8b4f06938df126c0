"""Reference scores and the D4RL normalised score."""

from __future__ import annotations

import numpy as np
import pytest

from rllib_o2o.data.scores import normalized_score, reference_scores


@pytest.mark.parametrize("env_id, refs", [
    ("Hopper-v5", (-20.272305, 3234.3)),
    ("hopper-medium-v2", (-20.272305, 3234.3)),
    ("HalfCheetah-v4", (-280.178953, 12135.0)),
    ("halfcheetah-medium-replay-v2", (-280.178953, 12135.0)),
    ("Walker2d-v5", (1.629008, 4592.3)),
    ("walker2d-expert-v2", (1.629008, 4592.3)),
    ("Ant-v5", (-325.6, 3879.7)),
    ("mujoco/hopper/medium-v0", (-20.272305, 3234.3)),
    ("Pendulum-v1", (-1230.0, -150.0)),
])
def test_reference_scores(env_id, refs):
    assert reference_scores(env_id) == refs


@pytest.mark.parametrize("env_id", ["antmaze-umaze-v2", "InvertedPendulum-v5", "CartPole-v1",
                                    None, ""])
def test_unknown_reference_scores(env_id):
    assert reference_scores(env_id) is None


def test_normalized_score_hand_values():
    lo, hi = reference_scores("Hopper-v5")
    assert normalized_score(3234.3, lo, hi) == pytest.approx(100.0)
    assert normalized_score(-20.272305, lo, hi) == pytest.approx(0.0)
    assert normalized_score(1607.013848, lo, hi) == pytest.approx(50.0)
    assert normalized_score(-690.0, -1230.0, -150.0) == pytest.approx(50.0)
    assert isinstance(normalized_score(3234.3, lo, hi), float)


def test_normalized_score_arrays():
    got = normalized_score(np.array([-280.178953, 12135.0]), *reference_scores("halfcheetah"))
    np.testing.assert_allclose(got, [0.0, 100.0])


def test_normalized_score_degenerate_references():
    with pytest.raises(ValueError, match="must differ"):
        normalized_score(1.0, 5.0, 5.0)
