"""A robustness run: one policy on an original LIBERO suite and its LIBERO-PRO variants, in one command.

    vla-flow eval --checkpoint C --suites libero_spatial,libero_spatial_swap,libero_spatial_lan --out DIR ...
    vla-flow eval --checkpoint C --suites robustness_spatial --out DIR ...   # the base + every working variant

Each suite gets its own evaluation folder ``DIR/<suite>/`` (episodes.parquet + run.json, written by
``eval.evaluate``, so each table stays one suite and resumes on its own); ``DIR/robustness.json`` says how
the suites pair. Every suite runs the same task list, init-state indices, seeds and N list.

Pairing. ``--tasks`` names tasks of the base suite. A variant's task is its paired base task
(``envs.tasks.pair_tasks``: same task name, else same benchmark instruction, else same BDDL instruction),
so ``libero_spatial_with_milk`` task 5 runs for base task 1. Episodes then pair by (base task, init state,
seed, N) and reports/robustness.py tests each drop with McNemar. The pairing is weaker than a paired N
sweep: a variant's init states come from its own file (``_lan``/``_object``/``_task`` share one file that
differs from the base's by up to ~7 cm; ``_swap`` moves objects; ``_with_*`` add a body), and the flow
noise is drawn per suite (``eval.episodes.noise_seed`` hashes the suite). ``DIR/robustness.json`` records
for each suite what differs from the base (instruction, init states, scene, goal).

Trained tasks. The base tasks must be tasks the checkpoint was trained on (``eval.evaluate.trained_tasks``),
unless ``--allow-task-transfer``; a variant task paired with a trained base task is the point of the run
and is accepted; a variant task without a pair is refused (it has no base to be compared with).
"""
from __future__ import annotations

import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np

from vla_flow.errors import UserError

RUN_FILE = "robustness.json"


def expand_suites(text: str) -> list[str]:
    """``"libero_spatial,libero_spatial_swap"`` or a preset ``robustness_spatial`` (the base and every working
    variant, read from the benchmark) -> suites, the base first. All must share one base suite."""
    from envs.conventions import base_suite
    from envs.tasks import ORIGINAL_SUITES, check_suite, variants

    out: list[str] = []
    for name in [s.strip() for s in str(text).split(",") if s.strip()]:
        m = re.fullmatch(r"robustness_(\w+)", name)
        if m:
            base = f"libero_{m.group(1)}"
            if base not in ORIGINAL_SUITES:
                presets = ", ".join(f"robustness_{b[len('libero_'):]}" for b in ORIGINAL_SUITES if variants(b))
                raise UserError(f"--suites: unknown preset '{name}'; presets: {presets}")
            out += [base, *variants(base)]
        else:
            check_suite(name)
            out.append(name)
    out = list(dict.fromkeys(out))
    if not out:
        raise UserError("--suites: empty list; e.g. --suites libero_spatial,libero_spatial_swap or robustness_spatial")
    bases = {base_suite(s) for s in out}
    if len(bases) != 1 or None in bases:
        raise UserError(f"--suites: {', '.join(out)} do not share one original suite (bases: "
                        f"{', '.join(sorted(map(str, bases)))}); run one robustness run per original suite")
    base = bases.pop()
    if base not in out:
        print(f"note: adding the base suite {base}: every drop is measured against it", file=sys.stderr)
    return [base] + [s for s in out if s != base]


@dataclasses.dataclass
class SuitePlan:
    """One suite of the run: its eval config (this suite's task indices) and how it relates to the base."""

    suite: str
    cfg: object  # eval.config.EvalConfig
    pairs: list[dict]  # one per base task: base_task, task, name, instruction, instruction_source, goal
    differs: list[str]  # what differs from the base: instruction, init states, scene, goal


def plan_suites(cfg, suites: list[str], checkpoint: str | Path) -> list[SuitePlan]:
    """Every check before any worker starts: suites, trained tasks, pairing, init-state ranges."""
    from envs.tasks import list_tasks
    from eval.evaluate import trained_tasks, validate
    from policy.checkpoint import read_checkpoint

    base = suites[0]
    base_specs = list_tasks(base)
    wanted = base_task_indices(base, base_specs, cfg.tasks)
    _check_trained(trained_tasks(read_checkpoint(checkpoint)), base, [base_specs[i] for i in wanted], cfg)
    plans = []
    for suite in suites:
        mine = paired_tasks(suite, base, base_specs, wanted)
        init_states = list(cfg.init_states)
        if suite != base:
            init_states = _available_init_states(suite, mine, init_states)
        sub = dataclasses.replace(cfg, suite=suite, tasks=[s.index for s in mine], init_states=init_states,
                                  allow_task_transfer=cfg.allow_task_transfer or suite != base)
        validate(sub, checkpoint)  # init-state ranges, chunk size, ... (raises UserError naming the suite)
        pairs = [{"base_task": i, **{k: v for k, v in s.record().items() if k != "bddl_file"}}
                 for i, s in zip(wanted, mine)]
        plans.append(SuitePlan(suite, sub, pairs, _differs(mine, [base_specs[i] for i in wanted], init_states)))
    return plans


def base_task_indices(base: str, base_specs: list, tasks) -> list[int]:
    """``"all"`` or a list of task indices of the base suite -> the indices, each checked to exist."""
    wanted = list(range(len(base_specs))) if tasks == "all" else list(tasks)
    bad = [i for i in wanted if not 0 <= i < len(base_specs)]
    if bad:
        raise UserError(f"unknown task index {bad} in {base}: it has tasks 0..{len(base_specs) - 1}")
    return wanted


def paired_tasks(suite: str, base: str, base_specs: list, wanted: list[int]) -> list:
    """The TaskSpec of ``suite`` paired with each wanted base task (``envs.tasks.pair_tasks``), in order."""
    from envs.tasks import list_tasks

    specs = base_specs if suite == base else list_tasks(suite)
    by_base = {s.base_task: s for s in specs if s.base_task is not None}
    missing = [i for i in wanted if i not in by_base]
    if missing:
        raise UserError(f"{suite} has no task paired with {base} task(s) {missing} (pairing by task name, "
                        f"then instruction, found none); leave them out with --tasks or drop {suite}")
    return [by_base[i] for i in wanted]


def _available_init_states(suite: str, specs: list, asked: list[int]) -> list[int]:
    """The asked init-state indices that every task of this variant ships.

    Some variants ship fewer starts than the base (LIBERO-PRO's ``FLOOR_SCENE1`` distractor suites: 10 per
    task against 50), so one robustness command over all variants would otherwise be refused. A variant runs
    the asked indices it has (they still pair with the base's same indices); the cut is printed and recorded
    per suite in robustness.json and the report counts the episodes. A variant with none of them is an error.
    """
    have = min(t.n_init_states for t in specs)
    kept = [i for i in asked if i < have]
    if not kept:
        raise UserError(f"{suite} ships {have} init states per task (0..{have - 1}), none of the asked "
                        f"{asked[:5]}{'...' if len(asked) > 5 else ''}; ask for some of 0-{have - 1} or drop {suite}")
    if len(kept) < len(asked):
        print(f"note: {suite} ships {have} init states per task: it runs {len(kept)} of the {len(asked)} asked "
              f"(0-{have - 1}), paired with the base's same indices", file=sys.stderr)
    return kept


def _check_trained(trained, base: str, specs: list, cfg) -> None:
    if trained is None or cfg.allow_task_transfer:
        return
    suite, names = trained
    unseen = [s.index for s in specs if suite != base or s.name not in names]
    if unseen:
        raise UserError(f"the checkpoint was trained on {len(names)} task(s) of {suite}, not on {base} task(s) "
                        f"{unseen}: a robustness run compares a policy with itself on its own tasks. Pass "
                        "--tasks with its tasks, or --allow-task-transfer for a deliberate transfer test")


def _differs(mine: list, base: list, init_states: list[int]) -> list[str]:
    """What a variant changes relative to the base, measured from the files (not from its name)."""
    from envs.tasks import load_init_states

    out = []
    if any(m.language != b.language for m, b in zip(mine, base)):
        out.append("instruction")
    a, b = load_init_states(mine[0]), load_init_states(base[0])
    rows = [i for i in init_states if i < min(len(a), len(b))]
    if a.shape[1] != b.shape[1]:
        out.append(f"scene (state size {a.shape[1]} vs {b.shape[1]}: objects added)")
    elif not np.array_equal(a[rows], b[rows]):
        out.append(f"init states (max |difference| {np.abs(a[rows] - b[rows]).max():.3f})")
    if any(_goal_changed(m, b) for m, b in zip(mine, base)):
        out.append("goal")
    elif any(m.goal != b.goal for m, b in zip(mine, base)):
        out.append("object names in the goal (new assets)")
    return out


def _goal_changed(mine, base) -> bool:
    """The goal names other objects of the base scene (``_task``: the second bowl), not renamed assets."""
    if mine.goal == base.goal:
        return False
    text = Path(base.bddl_file).read_text()
    names = set(re.findall(r"\(On\s+(\S+)\s+(\S+?)\)", mine.goal)[0]) if "(On" in mine.goal else set()
    return bool(names) and all(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", text) for n in names)


def write_run_file(out: Path, plans: list[SuitePlan], cfg, checkpoint) -> dict:
    """``DIR/robustness.json``: suites, grid and pairing; a resumed run keeps its start time."""
    import json

    from vla_flow.io import atomic_write_json

    path = out / RUN_FILE
    meta = {"base_suite": plans[0].suite, "suites": [p.suite for p in plans],
            "checkpoint": str(Path(checkpoint).resolve()),
            "tasks": [p["base_task"] for p in plans[0].pairs], "init_states": list(cfg.init_states),
            "flow_steps": list(cfg.flow_steps), "seeds": list(cfg.seeds),
            "pair_key": ["base_task", "init_state", "seed", "flow_steps"],
            "pairing": "variant task = the base task of the same name, else the same benchmark instruction, else the "
                       "same BDDL instruction (envs.tasks.pair_tasks); init-state index, seed and N equal",
            "suite_info": {p.suite: {"pairs": p.pairs, "differs": p.differs, "init_states": list(p.cfg.init_states)}
                           for p in plans},
            "command": " ".join(sys.argv), "start_time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("base_suite") != meta["base_suite"]:
            raise UserError(f"{path}: this folder holds a robustness run on {old.get('base_suite')}; use a new --out")
        meta["start_time"] = old.get("start_time", meta["start_time"])
        meta["resumed_at"] = [*old.get("resumed_at", []), time.strftime("%Y-%m-%dT%H:%M:%S")]
    atomic_write_json(path, meta)
    return meta


def run_suites(cfg, env_cfg, suites: list[str], checkpoint: str | Path, out_dir: str | Path,
               progress: bool = True) -> dict:
    """Plan (all checks first), then evaluate each suite into ``out_dir/<suite>``; rerun to resume."""
    from eval.evaluate import evaluate, hold_out_dir

    out = Path(out_dir)
    results = {}
    with hold_out_dir(out):  # one robustness run per folder; each suite folder is locked by evaluate
        plans = plan_suites(cfg, suites, checkpoint)
        write_run_file(out, plans, cfg, checkpoint)
        for i, p in enumerate(plans):
            if progress:
                print(f"[{i + 1}/{len(plans)}] {p.suite}: tasks {p.cfg.tasks} "
                      f"({', '.join(p.differs) or 'the base'})", file=sys.stderr, flush=True)
            sub_env = dataclasses.replace(env_cfg, suite=p.suite, task=p.cfg.tasks[0])
            results[p.suite] = evaluate(p.cfg, checkpoint, out / p.suite, env_cfg=sub_env, progress=progress)
    return results
