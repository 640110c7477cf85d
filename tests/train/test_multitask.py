"""Multi-task training: the data must be exactly the configured tasks, files must agree on how they were
recorded, and the instruction conditions the policy (a two-task policy fails this test if it ignores it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.tasks import list_tasks
from train.data import check_settings, check_tasks
from train.dataset import open_demo_file, policy_image
from train.loop import train
from train.synthetic import write_demo_file
from vla_flow.errors import UserError
from vla_flow.experiment import load_experiment

TASKS = list_tasks("libero_spatial")
GEN = {"suite": "libero_spatial", "settle_steps": 10, "env": {"render": {"fast": False, "camera_size": 128}}}


def tiny(*overrides):
    return load_experiment("configs/tiny.yaml", list(overrides))


def two_files(tmp_path, gen1=GEN, task1=1):
    a = write_demo_file(tmp_path / "a_demo.hdf5", n_demos=6, length=16, seed=3, task_name=TASKS[0].name,
                        instruction=TASKS[0].language, action_offset=-0.4, generation=GEN)
    b = write_demo_file(tmp_path / "b_demo.hdf5", n_demos=6, length=16, seed=3, task_name=TASKS[task1].name,
                        instruction=TASKS[task1].language, action_offset=0.4, generation=gen1)
    return a, b


def test_two_task_policy_predicts_each_task_from_its_instruction(tmp_path):
    a, b = two_files(tmp_path)
    exp = tiny("env.task=[0,1]", "train.max_steps=150", "train.lr=0.003", "train.val_every=150",
               "train.val_fraction=0.34")
    train(exp, tmp_path / "run", [str(a), str(b)])
    from policy.checkpoint import load_policy

    policy = load_policy(tmp_path / "run" / "checkpoints" / "last.pt")
    df = open_demo_file(a)  # both files hold the same observations: only the instruction differs
    obs = dict(images=np.stack([policy_image(df, 0, t) for t in (0, 5, 10)]),
               joints=df.joints[0][[0, 5, 10]], ee_pose=df.ee_pose[0][[0, 5, 10]])
    preds = {}
    for k in (0, 1):
        out = policy.predict(obs["images"], [TASKS[k].language] * 3, obs["joints"], obs["ee_pose"],
                             num_flow_steps=10, generator=torch.Generator().manual_seed(0))
        preds[k] = out[..., :6].mean()
    # demonstrated arm actions: mean about -0.4 (task 0) and +0.4 (task 1); a text-blind policy predicts
    # the same for both
    assert preds[1] - preds[0] > 0.4, preds
    rows = (tmp_path / "run" / "val_per_task.csv").read_text().splitlines()
    assert rows[0] == "step,task_index,val_loss,val_mse_n10"
    assert sorted(r.split(",")[1] for r in rows[1:]) == ["0", "1"]


def test_files_must_be_exactly_the_configured_tasks(tmp_path):
    a, b = two_files(tmp_path, task1=2)
    files = [open_demo_file(a), open_demo_file(b)]
    specs, file_task = check_tasks(tiny("env.task=[0,2]").env, files)
    assert [s.index for s in specs] == [0, 2] and file_task == [0, 2]
    with pytest.raises(UserError, match=r"b_demo.hdf5.*not among env.task"):
        check_tasks(tiny("env.task=[0,1]").env, files)
    with pytest.raises(UserError, match=r"no --data file for task\(s\) 1 "):
        check_tasks(tiny("env.task=0-2").env, files)
    other_suite = write_demo_file(tmp_path / "c_demo.hdf5", n_demos=2, task_name=TASKS[0].name,
                                  generation={**GEN, "suite": "libero_goal"})
    with pytest.raises(UserError, match=r"libero_goal"):
        check_tasks(tiny("env.task=0").env, [open_demo_file(other_suite)])


def test_files_and_config_must_agree_on_render_settings(tmp_path):
    small = {**GEN, "env": {"render": {"fast": False, "camera_size": 96}}}
    a, b = two_files(tmp_path, gen1=small)
    files = [open_demo_file(a), open_demo_file(b)]
    with pytest.raises(UserError, match=r"disagree on render.camera_size.*128.*96"):
        check_settings(tiny().env, files)
    assert check_settings(tiny().env, files[:1]) == {"render.fast": False, "render.camera_size": 128,
                                                     "settle_steps": 10}
    with pytest.raises(UserError, match=r"render.fast=False but the config has env.render.fast=True"):
        check_settings(tiny("env.render.fast=true").env, files[:1])
    wrist_only = {**GEN, "env": {"render": {"fast": False, "camera_size": 128, "cameras": ["robot0_eye_in_hand"]}}}
    c = write_demo_file(tmp_path / "c_demo.hdf5", n_demos=6, length=16, seed=3, task_name=TASKS[0].name,
                        instruction=TASKS[0].language, generation=wrist_only)
    with pytest.raises(UserError, match=r"render.cameras=\['robot0_eye_in_hand'\] but the config has"):
        check_settings(tiny().env, [open_demo_file(c)])


def test_task_lists_resolve_every_form():
    from envs.tasks import resolve_tasks

    assert [t.index for t in resolve_tasks("libero_spatial", "all")] == list(range(len(TASKS)))
    assert [t.index for t in resolve_tasks("libero_spatial", "0-2,7")] == [0, 1, 2, 7]
    assert [t.index for t in resolve_tasks("libero_spatial", [3, TASKS[5].name])] == [3, 5]
    with pytest.raises(UserError, match="listed twice"):
        resolve_tasks("libero_spatial", [1, 1])
    with pytest.raises(UserError, match="unknown task 12"):
        resolve_tasks("libero_spatial", "0,12")


def test_eval_refuses_tasks_the_checkpoint_never_trained_on():
    from eval.config import EvalConfig
    from eval.evaluate import check_trained_tasks

    ckpt = {"extra": {"experiment": {"env": {"suite": "libero_spatial", "task": [0, 1]}}}}
    check_trained_tasks(ckpt, "c.pt", EvalConfig(tasks=[0, 1]), TASKS[:2])
    with pytest.raises(UserError, match=r"trained on 2 task\(s\) of libero_spatial, not on libero_spatial "
                                        r"task\(s\) 3.*allow_task_transfer"):
        check_trained_tasks(ckpt, "c.pt", EvalConfig(tasks=[0, 3]), [TASKS[0], TASKS[3]])
    check_trained_tasks(ckpt, "c.pt", EvalConfig(tasks=[3], allow_task_transfer=True), [TASKS[3]])
    check_trained_tasks({"extra": {}}, "c.pt", EvalConfig(tasks=[3]), [TASKS[3]])  # records nothing


def test_eval_refuses_other_render_settings_than_the_checkpoints():
    from envs.config import EnvConfig, RenderConfig
    from eval.config import EvalConfig
    from eval.evaluate import check_trained_settings

    ckpt = {"extra": {"experiment": {"env": {"suite": "libero_spatial", "task": 0, "settle_steps": 10,
                                             "render": {"fast": True, "camera_size": 128}}}}}
    same = EnvConfig(render=RenderConfig(fast=True))
    check_trained_settings(ckpt, "c.pt", EvalConfig(), same)
    other = EnvConfig(render=RenderConfig(fast=True, camera_size=96))
    with pytest.raises(UserError, match=r"render.camera_size: checkpoint 128, evaluation 96.*"
                                        r"env.render.camera_size=128"):
        check_trained_settings(ckpt, "c.pt", EvalConfig(), other)
    check_trained_settings(ckpt, "c.pt", EvalConfig(allow_setting_mismatch=True), other)  # warns only
    ckpt["extra"]["experiment"]["env"]["render"]["cameras"] = ["agentview"]
    with pytest.raises(UserError, match=r"render.cameras: checkpoint \['agentview'\], evaluation .*"
                                        r"env.render.cameras=\[agentview\]"):
        check_trained_settings(ckpt, "c.pt", EvalConfig(), same)
