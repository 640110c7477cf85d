"""The training loop: one process or DistributedDataParallel under torchrun (gloo on CPU, nccl on CUDA).

Determinism is by construction, so that resume and DDP are exact:
  * batch order: ``DistributedSampler(shuffle=True, seed, drop_last=True).set_epoch(epoch)`` per epoch;
    step s uses per-rank batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``. The sampler
    interleaves ranks, so the union of the K per-rank batches of step s is exactly the 1-process batch of
    step s (global batch B = K x B/K). Resuming at step k rebuilds the same order, no iterator state.
  * flow noise x0 (H, 7) and time t: drawn per SAMPLE from a generator seeded by (seed, step, sample row),
    so 1 process and K processes draw identical noise, and a resumed run draws what the uninterrupted one did.
  * the loss is a per-sample mean, DDP averages gradients over ranks: K ranks x B/K == 1 rank x B.
Only rank 0 writes (TensorBoard, metrics.csv, checkpoints); the logged loss is the all-reduced mean.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from train import distributed as D
from train.dataset import FrameTable
from train.logs import MetricsLogger
from train.data import TrainData, load_train_data
from train import checkpoints as ckpt
from vla_flow.errors import UserError


class TrainingDiverged(UserError):
    """A non-finite loss: the message names the step, the batch's demos and the last good checkpoint."""


def sample_seed(seed: int, step: int, row: int, tag: str = "train") -> int:
    """A 63-bit generator seed from (seed, step, row): independent streams per sample and step."""
    digest = hashlib.blake2b(f"{tag}:{seed}:{step}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def draw_noise(rows, step: int, seed: int, horizon: int, action_dim: int, time_sampling: str,
               tag: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample noise (B, H, A) ~ N(0, I) and times (B,) from ``policy.flow.sample_time``."""
    from policy import flow

    noise, times = [], []
    for row in np.asarray(rows).tolist():
        g = torch.Generator().manual_seed(sample_seed(seed, step, row, tag))
        times.append(flow.sample_time(1, time_sampling, generator=g))
        noise.append(torch.randn(horizon, action_dim, generator=g))
    return torch.stack(noise), torch.cat(times)


def lr_lambda(total_steps: int, warmup: int, min_ratio: float):
    """Linear warmup for ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total_steps``."""
    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


@dataclass
class Schedule:
    """Step arithmetic shared by the loop and its tests."""

    n_train: int
    batch_size: int
    world: int
    epochs: int
    max_steps: int | None

    def __post_init__(self):
        if self.batch_size % self.world:
            raise UserError(f"train.batch_size={self.batch_size} is not divisible by the {self.world} processes; "
                            "pick a global batch that is a multiple of --nproc_per_node")
        if self.n_train < self.batch_size:
            raise UserError(f"train.batch_size={self.batch_size} is larger than the {self.n_train} training samples; "
                            "lower train.batch_size or add demos")
        self.steps_per_epoch = self.n_train // self.batch_size
        self.total_steps = self.epochs * self.steps_per_epoch
        if self.max_steps is not None:
            self.total_steps = min(self.total_steps, self.max_steps)

    def batches_of_epoch(self, epoch: int, rank: int, seed: int) -> list[list[int]]:
        """This rank's batches (lists of table rows) for ``epoch``, via DistributedSampler."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(self.n_train), num_replicas=self.world, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        per_rank = self.batch_size // self.world
        return [idx[i * per_rank:(i + 1) * per_rank] for i in range(self.steps_per_epoch)]


class LossModule(torch.nn.Module):
    """``forward(batch) = policy.compute_loss(batch)`` so DDP's forward/backward hooks see the loss."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict):
        return self.policy.compute_loss(batch)


def _wrap_ddp(policy, device):
    if not D.is_initialized():
        return LossModule(policy)
    from torch.nn.parallel import DistributedDataParallel as DDP

    module = LossModule(policy)
    frozen = [f"policy.{n}" for n, p in policy.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(module, frozen)  # frozen CLIP: identical, never synced
    # buffers (normalization stats, CLIP constants) never change during training: no per-step broadcast
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def _batch(data: TrainData, table: FrameTable, rows, step: int, seed: int, device, tag="train") -> dict:
    """Gathered batch plus per-sample flow noise and times (see ``draw_noise``)."""
    pcfg = data.policy_cfg
    batch = data.gather(table, rows, step, device, augment=None if tag == "train" else False)
    noise, t = draw_noise(rows, step, seed, pcfg.chunk_size, pcfg.action_dim, pcfg.time_sampling, tag)
    batch["noise"], batch["t"] = noise.to(device), t.to(device)
    return batch


@torch.no_grad()
def validate(policy, data: TrainData, seed: int, max_samples: int, device) -> dict:
    """Validation loss (fixed noise) and action MSE of ``predict`` at N=1 and N=10 on a fixed subset, over all
    rows and per task (``val_loss_task<k>``, ``val_mse_n10_task<k>``; multi-task data only)."""
    table = data.val
    if table is None or len(table) == 0:
        return {}
    rows = np.linspace(0, len(table) - 1, min(max_samples, len(table))).round().astype(np.int64)
    rows = np.unique(rows)
    file_task = np.asarray(data.file_task or [0] * len(data.files), dtype=np.int64)
    row_task = file_task[table.file_idx[rows]]
    was_training = policy.training
    policy.eval()
    sums: dict[int, dict[str, float]] = {}
    for task in np.unique(row_task).tolist():
        task_rows = rows[row_task == task]
        acc = sums.setdefault(task, {"n": 0.0, "loss": 0.0, "mse1": 0.0, "mse10": 0.0})
        for chunk in np.array_split(task_rows, max(1, math.ceil(len(task_rows) / 64))):
            batch = _batch(data, table, chunk, 0, seed, device, tag="val")
            if "image" in batch:  # on the fly: encode once for the loss and both predictions
                batch["image_feat"] = policy.encode_images(batch.pop("image"))
            loss, _ = policy.compute_loss(batch)
            acc["n"] += len(chunk)
            acc["loss"] += float(loss) * len(chunk)
            actions, mask = batch["actions"], batch["action_mask"]
            for n, key in ((1, "mse1"), (10, "mse10")):
                pred = data.predict(policy, batch, n)
                err = ((pred - actions) ** 2).mean(-1) * mask
                acc[key] += float(err.sum() / mask.sum().clamp_min(1)) * len(chunk)
    policy.train(was_training)
    total = sum(a["n"] for a in sums.values())
    out = {"val_loss": sum(a["loss"] for a in sums.values()) / total,
           "val_mse_n1": sum(a["mse1"] for a in sums.values()) / total,
           "val_mse_n10": sum(a["mse10"] for a in sums.values()) / total}
    if len(set(file_task.tolist())) > 1:
        for task, a in sorted(sums.items()):
            out[f"val_loss_task{task}"] = a["loss"] / a["n"]
            out[f"val_mse_n10_task{task}"] = a["mse10"] / a["n"]
    return out


def write_val_per_task(out: Path, step: int, val: dict) -> None:
    """Append the per-task validation numbers of one validation pass to ``RUN/val_per_task.csv``
    (columns step, task_index, val_loss, val_mse_n10); metrics.csv keeps its fixed columns."""
    tasks = sorted(int(k[len("val_loss_task"):]) for k in val if k.startswith("val_loss_task"))
    if not tasks:
        return
    path = out / "val_per_task.csv"
    new = not path.exists()
    with open(path, "a") as fh:
        if new:
            fh.write("step,task_index,val_loss,val_mse_n10\n")
        for t in tasks:
            fh.write(f"{step},{t},{val[f'val_loss_task{t}']:.6g},{val[f'val_mse_n10_task{t}']:.6g}\n")


def _check_finite(loss_mean: torch.Tensor, step: int, table: FrameTable, rows, last_ckpt) -> None:
    if torch.isfinite(loss_mean):
        return
    ids = table.sample_ids(rows)
    raise TrainingDiverged(
        f"non-finite loss ({float(loss_mean)}) at step {step}; this rank's batch held {len(ids)} samples, "
        f"first ones: {', '.join(ids[:8])}. Last good checkpoint: {last_ckpt or 'none saved yet'}. "
        "Lower train.lr, check the data (vla-flow demos --inspect FILE), or resume from that checkpoint.")


def train(exp, out: str | Path, data_paths: list[str] | None = None, resume: str | None = None,
          on_step=None) -> dict:
    """Run training for the experiment config ``exp``; returns a summary dict (rank 0 meaningful).

    ``on_step(step)`` is a test hook called after each optimizer step.
    """
    cfg = exp.train
    out = Path(out)
    device = D.pick_device(cfg.device)
    D.setup(device)
    try:
        return _train(exp, cfg, out, device, data_paths, resume, on_step)
    finally:
        D.teardown()


def use_bf16(requested: bool, device) -> bool:
    """Whether ``train.bf16`` autocasts here: CUDA, or a CPU with native bf16 (else a note, and float32)."""
    if not requested or device.type == "cuda":
        return requested
    from policy.encoders import cpu_native_bf16

    if cpu_native_bf16():
        return True
    if D.is_main():
        print("note: train.bf16=true on a CPU without native bf16 (no AMX / AVX512-BF16): training in float32, "
              "since emulated bf16 is slower")
    return False


def _train(exp, cfg, out: Path, device, data_paths, resume, on_step) -> dict:
    rank, world = D.rank(), D.world_size()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = load_train_data(exp, data_paths or cfg.data, device)
    policy = data.policy
    sched = Schedule(len(data.train), cfg.batch_size, world, cfg.epochs, cfg.max_steps)
    model = _wrap_ddp(policy, device)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                            fused=True)  # one kernel per step (CPU and CUDA): the for-loop Adam cost ~70% of a step
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(sched.total_steps, cfg.warmup_steps, cfg.min_lr_ratio))
    state = ckpt.resume_state(resume, out, policy, opt, lr_sched, device)
    step = state["step"]
    logger = MetricsLogger(out, enabled=D.is_main(), resume_step=step, window=state.get("window"))
    if D.is_main():
        ckpt.write_run_info(out, exp, data, sched, world, device)
    last_ckpt, epoch_batches, epoch_of = state.get("path"), None, None
    policy.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg.bf16, device))
    while step < sched.total_steps:
        epoch, pos = divmod(step, sched.steps_per_epoch)
        if epoch_of != epoch:
            epoch_batches, epoch_of = sched.batches_of_epoch(epoch, rank, cfg.seed), epoch
        rows = epoch_batches[pos]
        batch = _batch(data, data.train, rows, step, cfg.seed, device)
        with autocast:
            loss, _ = model(batch)
        loss_mean = D.mean_across_ranks(loss.detach().float())
        _check_finite(loss_mean, step, data.train, rows, last_ckpt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        lr = lr_sched.get_last_lr()[0]
        lr_sched.step()
        step += 1
        logger.accumulate(float(loss_mean), float(grad_norm), cfg.batch_size)
        val, t_val = {}, time.perf_counter()
        if D.is_main() and ((cfg.val_every and step % cfg.val_every == 0) or step == sched.total_steps):
            val = validate(policy, data, cfg.seed, cfg.val_max_samples, device)
            write_val_per_task(out, step, val)
        if step % cfg.log_every == 0 or step == sched.total_steps or val:
            logger.row(step, step / sched.steps_per_epoch, lr, val, exclude_s=time.perf_counter() - t_val)
        if step % cfg.save_every == 0 or step == sched.total_steps:
            if D.is_main():
                last_ckpt = ckpt.save(out, policy, opt, lr_sched, step, step // sched.steps_per_epoch, exp,
                                      logger.window_state(), cfg.keep_last)
            D.barrier()
        if on_step is not None:
            on_step(step)
    logger.close()
    return {"steps": step, "last_checkpoint": last_ckpt, "metrics": str(out / "metrics.csv"),
            "cache": data.cache_info, "world": world}
