"""The flow loop with the first layer's blocks as strided slices (the sampler before commit 0013009) against
contiguous copies reused until the weights change (the sampler now), side by side in one process:

    python docs/results/suite_long_distill0/bench_sampler_copies.py [--repeats 300]

The suite preset's head (chunk 8, 1024 hidden, 3 layers), batch 1, N = 1 and 10, the four variants
interleaved in every repeat so a load on the machine hits them alike; per torch thread count the median ms
of ``sample_actions`` + copy out (what ``predict`` times as ``flow_ms``) and N=1 / N=10.
"""
import argparse
import statistics
import time

import torch

from policy import flow
from policy.bench import build_bench_policy
from policy.modeling import time_embedding
from vla_flow.experiment import load_experiment


def slice_sampler(head, cond, num_steps):
    """The sampler as it was: products with column slices of the first layer's weight, every call."""
    first, n_x = head.net[0], head.horizon * head.action_dim
    w_x, w_t, w_c = first.weight.split([n_x, head.time_dim, first.in_features - n_x - head.time_dim], dim=1)
    base = torch.addmm(first.bias, cond, w_c.t())
    grid = torch.tensor(flow.eval_times(num_steps), dtype=cond.dtype)
    t_terms = time_embedding(grid, head.time_dim) @ w_t.t()
    step = {float(t): k for k, t in enumerate(grid.tolist())}
    rest = head.net[1:]

    def velocity(x_t, t):
        h = torch.addmm(base + t_terms[step[float(t[0])]], x_t.flatten(1), w_x.t())
        return rest(h).view(-1, head.horizon, head.action_dim)

    return velocity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    policy = build_bench_policy(load_experiment("configs/suite_spatial.yaml"))
    cond = torch.randn(1, policy.cfg.embed_dim, generator=torch.Generator().manual_seed(0))
    noise = policy.make_noise(1, torch.Generator().manual_seed(0))

    def run(kind: str, n: int):
        if kind == "copies":
            return policy.sample_actions(cond, n, noise).float().cpu().numpy()
        x1 = flow.integrate(slice_sampler(policy.head, cond, n), noise, n)
        return policy.normalizer.unnormalize("actions", x1).clamp(-1, 1).float().cpu().numpy()

    default = torch.get_num_threads()
    print("| threads | sampler | N=1 ms | N=10 ms | N=1 / N=10 |")
    print("|---|---|---|---|---|")
    for threads in (1, default):
        torch.set_num_threads(threads)
        keys = [(k, n) for k in ("slices", "copies") for n in (1, 10)]
        times = {key: [] for key in keys}
        with torch.inference_mode():
            diff = max(abs(run("slices", n) - run("copies", n)).max() for n in (1, 10))
            for _ in range(20):
                for key in keys:
                    run(*key)
            for _ in range(args.repeats):
                for key in keys:
                    t0 = time.perf_counter()
                    run(*key)
                    times[key].append((time.perf_counter() - t0) * 1e3)
        for kind in ("slices", "copies"):
            one, ten = statistics.median(times[(kind, 1)]), statistics.median(times[(kind, 10)])
            print(f"| {threads} | {kind} | {one:.3f} | {ten:.3f} | {one / ten:.3f} |")
        print(f"(largest action difference between the two samplers: {diff:.1e})")
    torch.set_num_threads(default)


if __name__ == "__main__":
    main()
