"""Everything the loop needs from the data: the policy with its statistics, the train/val frame tables,
and ``gather(table, rows)`` -> a ``compute_loss`` batch, from cached features or encoding on the fly.

Batch (B rows, H = policy chunk_size): ``image_feat (B, D)`` (cached) or ``image (B, 224, 224, 3) uint8``
(on the fly, optionally random-shifted), ``text_feat (B, 512)``, ``joints (B, 7)``, ``ee_pose (B, 7)``,
``gripper (B, 2)``, ``actions (B, H, 7)`` raw, ``action_mask (B, H)``; with ``policy.vision.use_wrist_image``
also ``wrist_feat (B, D)`` or ``wrist_image (B, 224, 224, 3)`` from the file's ``eye_in_hand_rgb`` frames (cached
separately: the cache key holds the image key). The policy normalizes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs import conventions as C
from train.dataset import DemoFile, FrameTable, build_frames, open_demo_file, split_demos
from vla_flow.errors import UserError

AUG_PAD = 8  # random-shift augmentation: pad by 8 px (edge) and crop back to 224 (DrQ-style shift)


@dataclass
class TrainData:
    policy: torch.nn.Module
    policy_cfg: object
    files: list[DemoFile]
    train: FrameTable
    val: FrameTable | None
    mode: str  # "cached" | "on_the_fly"
    augment: bool
    seed: int
    text_feat: torch.Tensor  # (n_files, Dt)
    image_feat: torch.Tensor | None = None  # (sum of F_file, D) all files' frames, cached mode only
    file_offsets: np.ndarray | None = None  # (n_files,) first row of each file in image_feat
    cache_info: list[dict] = field(default_factory=list)
    wrist_files: list[DemoFile] | None = None  # the same files opened on the wrist camera's key
    wrist_feat: torch.Tensor | None = None  # (sum of F_file, D), cached mode with the wrist camera
    file_task: list[int] = field(default_factory=list)  # task index of each file (multi-task validation)
    tasks: list = field(default_factory=list)  # envs.tasks.TaskSpec of env.task, config order
    settings: dict = field(default_factory=dict)  # render/settle settings the files were recorded with

    def gather(self, table: FrameTable, rows, step: int, device, augment: bool | None = None) -> dict:
        """The ``compute_loss`` batch for ``rows`` of ``table`` (train or val) at ``step``."""
        rows = np.asarray(rows, dtype=np.int64)
        actions, mask = table.chunk(rows)
        fidx = table.file_idx[rows]
        batch = {"joints": table.joints[rows], "ee_pose": table.ee_pose[rows], "gripper": table.gripper[rows],
                 "actions": actions, "action_mask": mask}
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}
        batch["text_feat"] = self.text_feat[torch.from_numpy(fidx)].to(device)
        if self.mode == "cached":
            idx = torch.from_numpy(self.file_offsets[fidx] + table.frame_in_file[rows])
            batch["image_feat"] = self.image_feat[idx].to(device)
            if self.wrist_feat is not None:
                batch["wrist_feat"] = self.wrist_feat[idx].to(device)
        else:
            aug = self.augment if augment is None else augment
            images = [self._image(self.files, table, r, step, aug) for r in rows.tolist()]
            batch["image"] = torch.from_numpy(np.stack(images)).to(device)
            if self.wrist_files is not None:
                wrist = [self._image(self.wrist_files, table, r, step, aug) for r in rows.tolist()]
                batch["wrist_image"] = torch.from_numpy(np.stack(wrist)).to(device)
        return batch

    def _image(self, files: list[DemoFile], table: FrameTable, row: int, step: int, augment: bool) -> np.ndarray:
        df = files[table.file_idx[row]]
        img = C.to_policy_image(df.read_image(int(table.demo_idx[row]), int(table.t[row])))
        if not augment:
            return img
        seed = int.from_bytes(hashlib.blake2b(f"aug:{self.seed}:{step}:{row}".encode(), digest_size=8).digest(),
                              "little")
        dy, dx = np.random.default_rng(seed).integers(0, 2 * AUG_PAD + 1, size=2)
        padded = np.pad(img, ((AUG_PAD, AUG_PAD), (AUG_PAD, AUG_PAD), (0, 0)), mode="edge")
        return padded[dy:dy + img.shape[0], dx:dx + img.shape[1]]

    def predict(self, policy, batch: dict, num_flow_steps: int) -> torch.Tensor:
        """Raw actions (B, H, 7) from a gathered batch, Euler from ``batch['noise']`` (for validation MSE)."""
        image_feat, wrist_feat = batch.get("image_feat"), batch.get("wrist_feat")
        if image_feat is None:
            image_feat = policy.encode_images(batch["image"])
        if wrist_feat is None and "wrist_image" in batch:
            wrist_feat = policy.encode_images(batch["wrist_image"])
        cond = policy.condition(image_feat, batch["text_feat"], batch["joints"], batch["ee_pose"],
                                batch.get("gripper"), wrist_feat)
        return policy.sample_actions(cond, num_flow_steps, batch["noise"])


def check_tasks(env_cfg, files: list[DemoFile]) -> tuple[list, list[int]]:
    """The data must be exactly the tasks ``env.task`` names (one task, a list, or ``all``): every file
    belongs to the configured suite and to one of the tasks, and every task has a file. Returns the
    TaskSpecs in config order and each file's task index. A file is matched by its BDDL file name (or, for files without one, its
    instruction); files from another suite fail even when the task name exists there too."""
    from envs.libero import resolve_tasks

    specs = resolve_tasks(env_cfg.suite, env_cfg.task)
    by_name = {s.name: s for s in specs}
    covered: set[str] = set()
    file_task: list[int] = []
    for df in files:
        stem = Path(df.bddl_file_name).stem if df.bddl_file_name else ""
        gen_suite = df.generation.get("suite")
        spec = by_name.get(stem) or next((s for s in specs if not stem and df.instruction == s.language), None)
        if gen_suite and gen_suite != env_cfg.suite:
            spec = None
        if spec is None:
            want = ", ".join(f"{s.index}" for s in specs)
            raise UserError(f"{df.path}: holds demos of '{stem or df.instruction}'"
                            f"{f' ({gen_suite})' if gen_suite else ''}, which is not among env.task="
                            f"{env_cfg.task!r} of {env_cfg.suite} (tasks {want}). Pass only files of those "
                            "tasks with --data, or set env.task to the files' tasks (a list, or all).")
        covered.add(spec.name)
        file_task.append(spec.index)
    missing = [s for s in specs if s.name not in covered]
    if missing:
        listing = ", ".join(f"{s.index} ({s.name})" for s in missing)
        raise UserError(f"no --data file for task(s) {listing} of env.task={env_cfg.task!r}; generate them "
                        "(`vla-flow demos --task K`) and pass one file per task, or drop them from env.task")
    return specs, file_task


def data_settings(df: DemoFile) -> dict:
    """The settings a demo file was recorded with that evaluation must reproduce (``envs.config.
    AGREED_SETTINGS``): {} for official LIBERO files (which record none of ours)."""
    from envs.config import agreed_settings

    gen = df.generation
    return agreed_settings({**(gen.get("env") or {}), **({"settle_steps": gen["settle_steps"]}
                                                          if "settle_steps" in gen else {})})


def check_settings(env_cfg, files: list[DemoFile]) -> dict:
    """Files must agree with each other and with the config's ``env`` on the settings of ``data_settings``:
    a policy trained on 128 px fast-render frames and evaluated at 96 px (or full render) is a silent
    train/eval mismatch. Returns the agreed settings ({} when no file records any)."""
    from envs.config import agreed_settings
    from vla_flow.config import to_dict

    config = agreed_settings(to_dict(env_cfg))
    agreed: dict = {}
    first: dict = {}
    for df in files:
        for key, value in data_settings(df).items():
            if key in agreed and agreed[key] != value:
                raise UserError(f"demo files disagree on {key}: {first[key]} has {agreed[key]!r}, {df.path} has "
                                f"{value!r}. Train on files recorded with the same settings (regenerate one).")
            agreed.setdefault(key, value)
            first.setdefault(key, df.path)
    for key, value in agreed.items():
        if config[key] != value:
            raise UserError(f"{first[key]} was recorded with {key}={value!r} but the config has env.{key}="
                            f"{config[key]!r}; set env.{key}={value} (or regenerate the demos) so training "
                            "and evaluation see the frames the demos saw")
    return agreed


def _policy(pcfg, table: FrameTable, device, init_from: str | None = None):
    """A fresh policy with statistics of ``table`` (the train split), or, fine-tuning, the ``init_from``
    checkpoint's weights and statistics (see ``TrainConfig.init_from``)."""
    from policy.modeling import FlowPolicy
    from policy.normalize import compute_stats

    if init_from:
        from policy.checkpoint import load_policy
        from train.checkpoints import check_init_from

        check_init_from(init_from, pcfg)
        return load_policy(init_from, device).train()
    policy = FlowPolicy(pcfg)
    stats = compute_stats(table.actions, table.joints, table.ee_pose,
                          table.gripper if pcfg.use_gripper_state else None)
    policy.set_stats(stats)
    return policy.to(device)


def load_train_data(exp, paths: list[str], device, check=None) -> TrainData:
    """Open + validate the files, split by demo, build the policy (stats from the TRAIN split only) and
    the features (cache hit, cache build, or nothing for on_the_fly). ``check(policy)``, when given, runs
    before the features: a caller's test of the statistics fails there, not after a feature cache of hours."""
    from train import features

    cfg = exp.train
    if not paths:
        raise UserError("no dataset: pass --data FILE.hdf5 (made by `vla-flow demos`) or set train.data")
    files = [open_demo_file(p, cfg.image_key) for p in paths]
    specs, file_task = check_tasks(exp.env, files)
    settings = check_settings(exp.env, files)
    train_demos, val_demos = split_demos(files, cfg.val_fraction, cfg.seed)
    horizon = exp.policy.chunk_size
    train, val = build_frames(files, train_demos, horizon), build_frames(files, val_demos, horizon)
    policy = _policy(exp.policy, train, device, cfg.init_from)
    if check is not None:
        check(policy)
    vision = exp.policy.vision
    encoder_name = f"{vision.model}|{vision.pretrained}|{vision.image_feature}|{policy.encoder.compute_dtype}"
    if vision.image_feature == "patch_tokens":
        encoder_name += f"|grid{vision.patch_grid}"
    wrist_files = None
    if vision.use_wrist_image:
        if cfg.image_key == C.H5_WRIST:
            raise UserError(f"train.image_key is already the wrist camera ({C.H5_WRIST}); with "
                            "policy.vision.use_wrist_image=true set train.image_key=agentview_rgb")
        wrist_files = [open_demo_file(p, C.H5_WRIST) for p in paths]
    image_feat, wrist_feat, text_feat, infos = [], [], [], []

    def cached(df):
        img, txt, info = features.build_or_load(policy, df, encoder_name=encoder_name,
                                                image_size=C.POLICY_IMAGE_SIZE, batch_size=cfg.cache_batch_size,
                                                cache_dir=cfg.cache_dir, device=device)
        infos.append(info)
        return torch.from_numpy(img), torch.from_numpy(txt)

    for i, df in enumerate(files):
        if cfg.features == "cached":
            img, txt = cached(df)
            image_feat.append(img)
            text_feat.append(txt)
            if wrist_files is not None:
                wrist_feat.append(cached(wrist_files[i])[0])
        else:
            text_feat.append(policy.encode_text([df.instruction])[0].float().cpu())
    offsets = np.cumsum([0] + [df.num_frames for df in files[:-1]]).astype(np.int64)
    return TrainData(policy=policy, policy_cfg=exp.policy, files=files, train=train,
                     val=val if len(val) else None, mode=cfg.features, augment=cfg.augment, seed=cfg.seed,
                     text_feat=torch.stack(text_feat), image_feat=torch.cat(image_feat) if image_feat else None,
                     file_offsets=offsets, cache_info=infos, wrist_files=wrist_files,
                     wrist_feat=torch.cat(wrist_feat) if wrist_feat else None, file_task=file_task,
                     tasks=specs, settings=settings)
