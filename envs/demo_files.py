"""The demo dataset on disk: one finished episode as an atomic part file, and the dataset assembled from
the previous dataset plus the parts, so generation resumes without losing or duplicating an episode.

Split from ``envs.demos`` (which runs the episodes): this module only knows the HDF5 layout
(LIBERO ``scripts/create_dataset.py``; docs/interfaces.md) and the ``vla_flow`` attribute that carries the
generation settings and the failure ledger (``GEN_ATTR``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from envs import conventions as C
from envs.config import DemoConfig, EnvConfig
from vla_flow.errors import UserError
from vla_flow.io import atomic_path

GEN_ATTR = C.H5_GENERATION  # data.attrs[GEN_ATTR]: JSON with generation settings + failure ledger


def _write_group(group, result: dict, render: dict, compression: Optional[str]) -> None:
    """Fill an HDF5 group with one successful episode (datasets + per-demo attrs)."""
    for key, arr in result["arrays"].items():
        image = arr.ndim == 4
        group.create_dataset(key, data=arr, compression=compression if image else None,
                             chunks=(1, *arr.shape[1:]) if image else None)
    group.attrs["num_samples"] = len(result["arrays"]["actions"])
    group.attrs["init_state"] = result["arrays"]["states"][0]  # LIBERO: the flattened start state
    group.attrs["init_state_index"] = -1 if result["init_state"] is None else int(result["init_state"])
    group.attrs["episode"] = int(result["index"])
    group.attrs["seed"] = int(result["seed"])
    group.attrs["success"] = bool(result["success"])
    group.attrs["start_step"] = int(result.get("start_step", 0))  # > 0: a takeover from that policy step
    group.attrs["render"] = json.dumps(render)


def write_part(parts: Path, result: dict, render: dict, compression: Optional[str] = "gzip") -> None:
    """One finished episode -> ``parts/ep_<i>.hdf5`` (success) or ``ep_<i>.json`` (failure), atomically."""
    import h5py

    name = f"ep_{result['index']:06d}"
    if not result["success"]:
        meta = {k: result[k] for k in ("index", "init_state", "seed", "success", "steps")}
        with atomic_path(parts / f"{name}.json") as tmp:
            tmp.write_text(json.dumps(meta))
        return
    with atomic_path(parts / f"{name}.hdf5") as tmp:
        with h5py.File(tmp, "w") as fh:
            _write_group(fh.create_group("demo"), result, render, compression)


def done_episodes(out: Path, parts: Path) -> tuple[set, dict]:
    """Episodes already finished: (successful episode indices, {failed index: steps})."""
    import h5py

    ok, failed = set(), {}
    if out.is_file():
        with h5py.File(out, "r") as fh:
            ok |= {int(g.attrs["episode"]) for g in fh["data"].values()}
            failed.update({int(k): v for k, v in json.loads(fh["data"].attrs[GEN_ATTR])["failed"].items()})
    if parts.is_dir():
        ok |= {int(p.stem[3:]) for p in parts.glob("ep_*.hdf5")}
        failed.update({int(p.stem[3:]): json.loads(p.read_text())["steps"] for p in parts.glob("ep_*.json")})
    return ok, failed


def assemble(out: Path, parts: Path, header: dict) -> int:
    """Atomically rewrite ``out`` = previous ``out`` + part files (sorted by episode, no duplicates).

    ``header``: the ``data`` attributes (JSON-able values); its ``vla_flow`` entry gets the merged
    failure ledger. Part files are deleted once the new dataset is in place. Returns ``num_demos``.
    """
    import h5py

    sources = []  # (episode, file path, group path)
    failed = {}
    if out.is_file():
        with h5py.File(out, "r") as fh:
            sources += [(int(g.attrs["episode"]), out, g.name) for g in fh["data"].values()]
            failed.update(json.loads(fh["data"].attrs[GEN_ATTR])["failed"])
    part_files = sorted(parts.glob("ep_*.hdf5")) if parts.is_dir() else []
    fail_files = sorted(parts.glob("ep_*.json")) if parts.is_dir() else []
    seen = {e for e, _, _ in sources}
    sources += [(int(p.stem[3:]), p, "demo") for p in part_files if int(p.stem[3:]) not in seen]
    failed.update({str(int(p.stem[3:])): json.loads(p.read_text())["steps"] for p in fail_files})
    sources.sort(key=lambda s: s[0])
    gen = dict(header[GEN_ATTR], failed=failed)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as dst:
            data = dst.create_group("data")
            handles: dict = {}
            total = 0
            for k, (_, path, gpath) in enumerate(sources):
                src = handles.setdefault(path, h5py.File(path, "r"))
                src.copy(src[gpath], data, name=f"{C.H5_DEMO_PREFIX}{k}")
                total += int(data[f"{C.H5_DEMO_PREFIX}{k}"].attrs["num_samples"])
            for h in handles.values():
                h.close()
            for key, value in header.items():
                data.attrs[key] = json.dumps(gen) if key == GEN_ATTR else value
            data.attrs["num_demos"] = len(sources)
            data.attrs["total"] = total
    for p in part_files + fail_files:
        p.unlink()
    return len(sources)


def dataset_header(env_meta: dict, task, cfg: DemoConfig, env_cfg: EnvConfig) -> dict:
    """``data`` attributes in LIBERO's format (env_args, problem_info, bddl) plus our settings."""
    text = Path(task.bddl_file).read_text()
    problem = {"problem_name": "libero_tabletop_manipulation", "domain_name": "robosuite",
               "language_instruction": task.language}
    env_args = {"type": 1, "env_name": "OffScreenRenderEnv", "problem_name": problem["problem_name"],
                "bddl_file": task.bddl_file,
                "env_kwargs": {"bddl_file_name": task.bddl_file, "camera_heights": env_cfg.render.camera_size,
                               "camera_widths": env_cfg.render.camera_size, "control_freq": C.CONTROL_HZ,
                               "camera_names": list(env_cfg.render.cameras), "controller": "OSC_POSE"}}
    gen = {"suite": task.suite, "task_index": task.index, "task": task.name, "layouts": cfg.layouts,
           "seed": cfg.seed, "first_init_state": cfg.first_init_state, "expert": "envs.expert.PickPlaceExpert",
           "settle_steps": env_cfg.settle_steps, "env": env_meta}
    return {"env_args": json.dumps(env_args), "problem_info": json.dumps(problem),
            "bddl_file_name": task.bddl_file, "bddl_file_content": text,
            "macros_image_convention": "opengl", GEN_ATTR: gen}


def check_same_settings(out: Path, header: dict) -> None:
    import h5py

    if not out.is_file():
        return
    keys = ("suite", "task_index", "layouts", "seed", "first_init_state", "settle_steps", "source", "env")
    try:
        with h5py.File(out, "r") as fh:
            old = json.loads(fh["data"].attrs[GEN_ATTR])
    except (OSError, KeyError) as exc:
        raise UserError(f"{out} exists but is not a dataset written by `vla-flow demos` ({exc}); "
                        "move it away or pick another --out") from None
    new = header[GEN_ATTR]
    diff = {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}
    if diff:
        raise UserError(f"{out} was generated with other settings {diff} (old, new); rerun with the same "
                        "arguments to resume, or pick another --out")
