"""`vla-flow predict` end to end on a tiny checkpoint and a real PNG file; and the bench's table."""
import numpy as np
import pytest
from PIL import Image

from policy.bench import bench_flow, bench_policy
from policy.checkpoint import save_checkpoint
from tests.policy.test_modeling import make_policy
from vla_flow.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:random-init CLIP encoders")


def test_predict_command_prints_seven_numbers(tmp_path, capsys):
    policy = make_policy()
    save_checkpoint(tmp_path / "p.pt", policy)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)).save(tmp_path / "obs.png")
    args = ["predict", "--checkpoint", str(tmp_path / "p.pt"), "--image", str(tmp_path / "obs.png"),
            "--instruction", "put the bowl on the plate", "--proprio", *["0.1"] * 7,
            "--ee-pose", "0.5", "0", "1", "0", "0", "0", "1", "--num-flow-steps", "50"]
    assert main(args) == 0
    values = [float(v) for v in capsys.readouterr().out.split()]
    assert len(values) == 7 and all(-1.0 <= v <= 1.0 for v in values)
    args[args.index("--checkpoint") + 1] = str(tmp_path / "missing.pt")
    assert main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_bench_policy_rows():
    rows = bench_policy("cpu", batches=(1, 2), flow_steps=(1, 3), repeats=1, policy=make_policy())
    assert [(r["batch"], r["flow_steps"]) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert set(rows[0]) == {"device", "batch", "flow_steps", "encode_ms", "flow_ms", "total_ms"}
    assert all(r["total_ms"] >= r["encode_ms"] > 0 and r["flow_ms"] > 0 for r in rows)


def test_bench_flow_rows_and_ratios():
    """Rows per (threads, batch, N), N values timed round-robin; each row's ratio is its median over the
    largest N's median at the same threads and batch (no timing is asserted: speed lives in the bench)."""
    rows = bench_flow(flow_steps=(1, 10), batches=(1, 2), threads=(1,), repeats=5, policy=make_policy())
    keys = [(r["threads"], r["batch"], r["flow_steps"]) for r in rows]
    assert keys == [(1, 1, 1), (1, 1, 10), (1, 2, 1), (1, 2, 10)]
    assert all(0 < r["flow_ms_min"] <= r["flow_ms_p50"] for r in rows)
    for one, ten in zip(rows[::2], rows[1::2]):
        assert ten["ratio_p50"] == 1.0
        assert one["ratio_p50"] == pytest.approx(one["flow_ms_p50"] / ten["flow_ms_p50"])
