"""FlowPolicy on tiny random-init CLIP towers (real open_clip code, width 64, 2 layers)."""
import copy
import warnings

import numpy as np
import pytest
import torch

from policy.configuration import PolicyConfig, VisionConfig
from policy.action_queue import ActionQueue
from policy.modeling import FlowPolicy, PolicyInputError
from policy.normalize import compute_stats

SEED_DESIGN_TRAINABLE = 4_617_223  # pooled 512-D features, H=1, no gripper: about 5M as the design says


def tiny_cfg(**kw) -> PolicyConfig:
    vision = dict(model="tiny", pretrained="none")
    vision.update(kw.pop("vision", {}))
    return PolicyConfig(vision=VisionConfig(**vision), **kw)


def stats(gripper=True):
    rng = np.random.default_rng(0)
    acts = rng.uniform(-0.5, 0.5, (200, 7))
    acts[:, 6] = np.sign(acts[:, 6])
    return compute_stats(acts, rng.normal(size=(200, 7)), rng.normal(size=(200, 7)),
                         rng.normal(size=(200, 2)) if gripper else None)


def make_policy(**kw) -> FlowPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FlowPolicy(tiny_cfg(**kw), stats=stats()).eval()


def inputs(batch, seed=0, gripper=False):
    rng = np.random.default_rng(seed)
    d = {"images": rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8),
         "instructions": [f"task {i % 2}" for i in range(batch)],
         "joints": rng.normal(size=(batch, 7)).astype(np.float32),
         "ee_pose": rng.normal(size=(batch, 7)).astype(np.float32)}
    if gripper:
        d["gripper"] = rng.normal(size=(batch, 2)).astype(np.float32)
    return d


@pytest.fixture(scope="module")
def seed_policy():
    return make_policy()


@pytest.fixture(scope="module")
def chunk_policy():
    return make_policy(chunk_size=4, n_action_steps=2, use_gripper_state=True,
                       vision=dict(image_feature="patch_tokens", use_wrist_image=True))


def test_shapes_dtypes_h1(seed_policy):
    out = seed_policy.predict(**inputs(3), num_flow_steps=2)
    assert out.shape == (3, 1, 7) and out.dtype == np.float32
    assert np.all(np.abs(out) <= 1.0)
    assert set(seed_policy.last_timings) >= {"encode_ms", "flow_ms", "total_ms"}
    x = inputs(2)
    feat = seed_policy.encode_images(x["images"])
    assert feat.shape == (2, 512) and feat.dtype == torch.float32
    loss, _ = seed_policy.compute_loss({"image_feat": feat.half(), "instructions": x["instructions"],
                                        "joints": x["joints"], "ee_pose": x["ee_pose"],
                                        "actions": np.zeros((2, 7), np.float32)})  # (B, 7) accepted when H=1
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_shapes_dtypes_chunk_patch_wrist_gripper(chunk_policy):
    x = inputs(2, gripper=True)
    out = chunk_policy.predict(**x, wrist_images=x["images"], num_flow_steps=3,
                               noise=torch.zeros(2, 4, 7))
    assert out.shape == (2, 4, 7) and out.dtype == np.float32
    feat = chunk_policy.encode_images(torch.from_numpy(x["images"]))
    assert feat.shape == (2, 196, 64)  # patch tokens, what a feature cache stores (here as float16)
    loss, metrics = chunk_policy.compute_loss({
        "image_feat": feat.half(), "wrist_feat": feat.half(), "text_feat": chunk_policy.encode_text(x["instructions"]),
        "joints": x["joints"], "ee_pose": x["ee_pose"], "gripper": x["gripper"],
        "actions": np.zeros((2, 4, 7), np.float32), "action_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 1]])})
    assert loss.dim() == 0 and torch.isfinite(loss) and "loss" in metrics


def test_trainable_params_and_frozen_encoders(seed_policy):
    assert seed_policy.num_trainable_params() == SEED_DESIGN_TRAINABLE
    assert all(not p.requires_grad for p in seed_policy.encoder.parameters())
    seed_policy.train()
    try:
        assert seed_policy.training and seed_policy.head.training
        assert not seed_policy.encoder.training and not seed_policy.encoder.clip.visual.training
    finally:
        seed_policy.eval()


def test_same_noise_same_action_and_seeded_generator(seed_policy):
    x = inputs(2)
    noise = torch.randn(2, 1, 7)
    a = seed_policy.predict(**x, num_flow_steps=5, noise=noise)
    b = seed_policy.predict(**x, num_flow_steps=5, noise=noise.numpy())
    assert np.array_equal(a, b)
    c = seed_policy.predict(**x, num_flow_steps=5, generator=torch.Generator().manual_seed(7))
    d = seed_policy.predict(**x, num_flow_steps=5, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(c, d) and not np.array_equal(a, c)


def test_batch_invariance_cpu(seed_policy):
    """What the evaluator may rely on (CPU): row i of a batch of 4 equals row i alone to ~1e-8 (not bitwise:
    GEMM kernels differ with the row count); with ``pad_to=4`` (same padded shape) it is bitwise equal,
    whatever the other rows hold."""
    x, noise = inputs(4), torch.randn(4, 1, 7, generator=torch.Generator().manual_seed(0))
    full = seed_policy.predict(**x, num_flow_steps=10, noise=noise)
    for i in range(4):
        row = {k: v[i:i + 1] for k, v in x.items()}
        alone = seed_policy.predict(**row, num_flow_steps=10, noise=noise[i:i + 1])
        np.testing.assert_allclose(alone[0], full[i], atol=1e-5)
        padded = seed_policy.predict(**row, num_flow_steps=10, noise=noise[i:i + 1], pad_to=4)
        assert padded.shape == (1, 1, 7)
        np.testing.assert_array_equal(padded[0], full[i])


def test_text_encoded_once_per_distinct_instruction():
    policy = make_policy()
    calls = []
    real = policy.encoder.clip.encode_text
    policy.encoder.clip.encode_text = lambda tokens: calls.append(tokens.shape[0]) or real(tokens)
    x = inputs(4)  # instructions: task 0, task 1, task 0, task 1
    for _ in range(3):
        policy.predict(**x, num_flow_steps=1)
    assert calls == [2]
    assert policy.encoder.text_encode_calls == 2


def test_overfit_tiny_batch_loss_falls():
    torch.manual_seed(0)
    policy = make_policy(embed_dim=64, head_hidden_dim=128, head_layers=2, time_embed_dim=32, attn_pool_heads=4)
    x = inputs(8)
    rng = np.random.default_rng(1)
    acts = rng.uniform(-0.5, 0.5, (8, 1, 7)).astype(np.float32)
    acts[..., 6] = np.sign(acts[..., 6])
    batch = {"image_feat": policy.encode_images(x["images"]), "text_feat": policy.encode_text(x["instructions"]),
             "joints": x["joints"], "ee_pose": x["ee_pose"], "actions": acts}
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    policy.train()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss, _ = policy.compute_loss(batch, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    policy.eval()
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-20:])
    pred = policy.predict(**x, num_flow_steps=10, generator=torch.Generator().manual_seed(0))
    assert np.abs(pred - acts).mean() < np.abs(acts).mean()


@pytest.mark.parametrize("field,value,match", [
    ("images", np.zeros((1, 128, 128, 3), np.uint8), "224"),
    ("ee_pose", np.zeros((1, 6), np.float32), "quaternion xyzw"),
    ("joints", np.full((1, 7), np.nan, np.float32), "NaN"),
    ("images", np.full((1, 224, 224, 3), np.nan, np.float32), "NaN"),
    ("instructions", ["a", "b"], "2 strings for a batch of 1"),
])
def test_bad_inputs_raise_clear_errors(seed_policy, field, value, match):
    x = inputs(1)
    x[field] = value
    with pytest.raises(PolicyInputError, match=match):
        seed_policy.predict(**x)


def test_missing_gripper_and_missing_stats():
    policy = make_policy(use_gripper_state=True)
    with pytest.raises(PolicyInputError, match="gripper"):
        policy.predict(**inputs(1), num_flow_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bare = FlowPolicy(tiny_cfg())
    with pytest.raises(RuntimeError, match="never set"):
        bare.predict(**inputs(1), num_flow_steps=1)
    with pytest.raises(KeyError, match="gripper"):
        policy.set_stats({k: v for k, v in stats().items() if k != "gripper"})


def test_action_queue_pops_chunk_and_reset_empties():
    policy = make_policy(chunk_size=4, n_action_steps=3)
    queue = ActionQueue(policy.cfg.n_action_steps, policy)
    x = inputs(2)
    noise = torch.randn(2, 4, 7)
    chunk = policy.predict(**x, num_flow_steps=2, noise=noise)
    for h in range(3):
        np.testing.assert_array_equal(queue.select_action(**x, num_flow_steps=2, noise=noise), chunk[:, h])
        assert len(queue) == 2 - h
    queue.select_action(**x, num_flow_steps=2, noise=noise)
    assert len(queue) == 2
    queue.reset()
    assert len(queue) == 0
    with pytest.raises(ValueError, match="n_action_steps"):
        ActionQueue(5, policy)  # more steps than the chunk holds


def test_action_queue_holds_then_executes_one_episode_chunk():
    queue = ActionQueue(2, dtype=np.float64)
    chunk = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)
    queue.push(chunk, hold=2, hold_action=np.full(7, -1.0))
    got = [queue.pop() for _ in range(len(queue))]
    assert [g.dtype for g in got] == [np.float64] * 4
    np.testing.assert_array_equal(np.stack(got), np.concatenate([np.full((2, 7), -1.0), chunk[:2]]))
    with pytest.raises(ValueError, match="expected"):
        queue.push(np.zeros(7))


def test_config_validation():
    with pytest.raises(ValueError, match="n_action_steps"):
        PolicyConfig(chunk_size=2, n_action_steps=3)
    with pytest.raises(ValueError, match="chunk_size"):
        PolicyConfig(chunk_size=0)
    defaults = PolicyConfig()
    assert (defaults.chunk_size, defaults.vision.image_feature, defaults.use_gripper_state) == (1, "pooled", False)


def test_hoisted_sampler_equals_forward(chunk_policy):
    """The sampling fast path (cond and time terms computed once per call) is the training forward."""
    head, g = chunk_policy.head, torch.Generator().manual_seed(0)
    cond, x = torch.randn(3, 512, generator=g), torch.randn(3, 4, 7, generator=g)
    fast = head.sampler(cond, 5)
    for k in range(5):
        t = torch.full((3,), k / 5)
        torch.testing.assert_close(fast(x, t), head(x, t, cond), rtol=1e-5, atol=1e-5)


def test_sampler_weight_copies_follow_every_weight_change(chunk_policy):
    """Without autograd the sampler reuses contiguous copies of the first layer's blocks; an optimizer step,
    a load_state_dict and a move must each be seen (a stale copy would sample the old weights)."""
    head = copy.deepcopy(chunk_policy.head)
    g = torch.Generator().manual_seed(1)
    cond, x = torch.randn(2, 512, generator=g), torch.randn(2, 4, 7, generator=g)
    t = torch.zeros(2)

    def check(dtype=torch.float32):
        with torch.inference_mode():
            fast = head.sampler(cond.to(dtype), 3)(x.to(dtype), t.to(dtype))
            torch.testing.assert_close(fast, head(x.to(dtype), t.to(dtype), cond.to(dtype)), rtol=1e-5, atol=1e-5)
        return fast

    before = check()
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    head(x, torch.full((2,), 0.3), cond).pow(2).sum().backward()
    opt.step()  # in place: same storage, version bumped
    after_step = check()
    assert not torch.allclose(before, after_step)
    state = {k: v + 0.1 for k, v in head.state_dict().items()}
    head.load_state_dict(state)
    assert not torch.allclose(after_step, check())
    head.double()
    check(torch.float64)
    with torch.no_grad():  # the copies made under inference_mode serve plain no_grad calls too
        torch.testing.assert_close(head.sampler(cond.double(), 3)(x.double(), t.double()),
                                   head(x.double(), t.double(), cond.double()))


def test_patch_grid_average_pools_the_token_grid():
    """patch_grid=7 gives 49 tokens, each the mean of a 2x2 block of the 14x14 grid (row-major)."""
    full = make_policy(vision=dict(image_feature="patch_tokens"))
    pooled = make_policy(vision=dict(image_feature="patch_tokens", patch_grid=7))
    images = inputs(2)["images"]
    t14 = full.encode_images(images)
    t7 = pooled.encode_images(images)
    assert t14.shape[1] == 196 and t7.shape == (2, 49, t14.shape[2])
    grid = t14.view(2, 14, 14, -1)
    block = grid[:, 2:4, 4:6].mean(dim=(1, 2))  # pooled cell (row 1, col 2)
    torch.testing.assert_close(t7[:, 1 * 7 + 2], block, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="patch_grid"):
        VisionConfig(patch_grid=5)
