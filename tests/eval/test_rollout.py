"""Rollout logic without the simulator: latency-budget holds, fixed-shape batch invariance of policy calls."""
import numpy as np
import pytest

from eval.episodes import EpisodeKey, NoiseStream
from eval.rollout import EpisodeResult, PolicyCaller, Rollouts, RolloutSettings, _Live, check_batch_invariance
from policy.action_queue import ActionQueue
from tests.eval.test_cli import make_checkpoint


@pytest.mark.parametrize("latency_ms, hold", [(0.0, 0), (50.0, 1), (100.0, 2), (120.0, 3)])
def test_latency_budget_holds_previous_action_for_ceil_latency_over_control_period(latency_ms, hold):
    s = RolloutSettings(env_cfg={}, max_steps=10, n_action_steps=3, horizon=4, latency_budget=True,
                        latency_ms=latency_ms)
    roll = Rollouts(pool=None, caller=None, s=s)
    key = EpisodeKey(0, 1, 0, 0)
    ep = _Live(res=EpisodeResult(key=key), noise=NoiseStream(key, 4), text="t", video=False,
               queue=ActionQueue(s.n_action_steps, dtype=np.float64))
    ep.last_action = np.full(7, 0.5)
    chunk = np.arange(28, dtype=float).reshape(4, 7) / 100
    roll._enqueue(ep, chunk, {"total_ms": 999.0, "encode_ms": 1.0, "flow_ms": 1.0})
    queued = np.stack([ep.queue.pop() for _ in range(len(ep.queue))])
    assert len(queued) == hold + 3 and ep.res.held_steps == hold
    assert np.array_equal(queued[:hold], np.full((hold, 7), 0.5))
    assert np.array_equal(queued[hold:], chunk[:3])
    assert ep.res.call_ms == [999.0] and ep.phase == "act"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from policy.checkpoint import load_policy

    return load_policy(make_checkpoint(tmp_path_factory.mktemp("c") / "t.pt"), "cpu")


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "joints": rng.normal(size=7).astype(np.float32),
             "ee_pose": rng.normal(size=7).astype(np.float32), "gripper": np.zeros(2, np.float32)} for _ in range(n)]


def test_fixed_shape_calls_are_batch_invariant(policy):
    from tests.eval.kernels import gemm_row_invariant

    exact = gemm_row_invariant()  # the check must report what this machine's kernels do
    caller = PolicyCaller(policy, batch_size=2)
    assert check_batch_invariance(caller, rows(2), ["pick up the bowl"] * 2, horizon=8) == exact
    r = rows(3, seed=1)
    noise = np.random.default_rng(2).standard_normal((3, 8, 7)).astype(np.float32)
    together, times = caller(r, ["a", "b", "c"], noise, 3)  # calls of 2 rows + 1 padded row
    assert together.shape == (3, 8, 7) and len(times) == 3
    for i in range(3):  # any row equals that row in any other company: bit for bit where kernels allow
        alone, _ = caller(r[i:i + 1], ["abc"[i]], noise[i:i + 1], 3)
        if exact:
            assert np.array_equal(alone[0], together[i])
        else:
            np.testing.assert_allclose(alone[0], together[i], atol=1e-5)
