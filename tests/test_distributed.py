"""Multi-process runs on the CPU: gloo, 2 processes, the tiny model.

The pure parts (aggregation, layouts, launcher arguments, failure messages) are tested
in this process. One 2-process job (torch.multiprocessing) checks FSDP2 training and
tensor-parallel inference against a single process and the runner's energy sums;
two ``carbonbench run --nproc-per-node 2`` runs check the launcher end to end, one of
them with a rank killed halfway.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import ROOT
from support.meters import ConstantMeter
from support.scenarios import scenario_text

from carbonbench import scenario as sc
from carbonbench.distributed.aggregate import agree, combine
from carbonbench.distributed.context import topology
from carbonbench.distributed.launch import failure_report, torchrun_args, worker_args
from carbonbench.distributed.parallel import Layout, layout_for
from carbonbench.errors import ConfigError, UserError
from carbonbench.meters.base import ComponentEnergy, Measurement
from carbonbench.opt.card import find_card
from carbonbench.records import PointRecord

GB = 10**9


# -- aggregation --------------------------------------------------------------------------
def _meas(rank_components, start=100.0, duration=2.0):
    comps = tuple(ComponentEnergy(name, kind, energy, "counter", "fake") for name, kind, energy in rank_components)
    return Measurement("w", start, duration, comps)


def test_energy_is_summed_over_ranks_and_node_meters_count_once():
    # 2 nodes x 2 GPUs. Every rank (wrongly) reports its host's CPU and DRAM too, and
    # rank 1 also sees GPU 0 of its node: only the node leader's CPU/DRAM and each
    # rank's own GPU may count.
    ranks = topology(
        [
            (0, 0, 0, "a", "cuda:0"),
            (1, 1, 0, "a", "cuda:1"),
            (2, 0, 1, "b", "cuda:0"),
            (3, 1, 1, "b", "cuda:1"),
        ]
    )
    assert [r.node_leader for r in ranks] == [True, False, True, False]
    gpu = {0: 100.0, 1: 110.0, 2: 120.0, 3: 130.0}
    cpu = {"a": 50.0, "b": 60.0}
    measurements = []
    for r in ranks:
        local = r.device.split(":")[1]
        comps = [(f"gpu{local}", "gpu", gpu[r.rank]), ("cpu", "cpu", cpu[r.hostname]), ("dram", "dram", 7.0)]
        if r.local_rank == 1:
            comps.append(("gpu0", "gpu", 999.0))  # not this rank's GPU
        measurements.append(_meas(comps, start=100.0 + r.rank * 0.01, duration=2.0 + r.rank * 0.01))
    total, detail = combine(measurements, ranks, [{"steps": 5}] * 4)

    names = [c.component for c in total.components]
    assert sorted(names) == sorted(
        [
            "rank0/gpu0",
            "node0/cpu",
            "node0/dram",
            "rank1/gpu1",
            "rank2/gpu0",
            "node1/cpu",
            "node1/dram",
            "rank3/gpu1",
        ]
    )
    assert total.energy_by_kind("gpu") == pytest.approx(sum(gpu.values()))  # summed, not averaged
    assert total.energy_by_kind("cpu") == pytest.approx(50.0 + 60.0)  # once per node
    assert total.energy_by_kind("dram") == pytest.approx(14.0)
    assert total.energy_j == pytest.approx(sum(c.energy_j for c in total.components))
    assert total.start_unix_s == 100.0 and total.duration_s == pytest.approx(2.03)

    by_rank = {row["rank"]: row for row in detail["ranks"]}
    assert by_rank[0]["energy_j"] == pytest.approx(100 + 50 + 7)
    assert by_rank[1]["energy_j"] == pytest.approx(110)
    assert by_rank[1]["components"] == ["rank1/gpu1"] and by_rank[1]["steps"] == 5
    assert sum(row["energy_j"] for row in detail["ranks"]) == pytest.approx(total.energy_j)
    nodes = {row["hostname"]: row for row in detail["nodes"]}
    assert nodes["a"]["ranks"] == [0, 1] and nodes["b"]["ranks"] == [2, 3]
    assert nodes["a"]["gpu_energy_j"] == pytest.approx(210) and nodes["b"]["cpu_energy_j"] == pytest.approx(60)
    assert sum(row["energy_j"] for row in detail["nodes"]) == pytest.approx(total.energy_j)
    assert detail["world_size"] == 4


def test_a_rank_without_a_reading_adds_nothing_and_says_so():
    ranks = topology([(0, 0, 0, "a", "cpu"), (1, 1, 0, "a", "cpu")])
    total, detail = combine([_meas([("cpu", "cpu", 5.0)]), _meas([("gpu", "gpu", None)])], ranks)
    assert total.energy_j == 5.0
    assert detail["ranks"][1]["energy_j"] is None
    assert total.component("rank1/gpu").energy_j is None  # the null reading stays visible


def test_a_point_failed_on_any_rank_failed():
    record = PointRecord(key="k", status="ok", error=None, peak_memory_bytes=10)
    out = agree(
        record,
        [
            {"status": "ok", "error": None, "peak_memory_bytes": 10},
            {"status": "oom", "error": "CUDA out of memory", "peak_memory_bytes": 30},
        ],
    )
    assert out.status == "oom" and out.error == "rank 1: CUDA out of memory"
    assert out.peak_memory_bytes == 30 and [r["rank"] for r in out.ranks] == [0, 1]
    assert agree(record, [{"status": "ok", "peak_memory_bytes": 1}] * 2).status == "ok"


# -- layouts, scenario, launcher -------------------------------------------------------
def _point(workload, batch=2):
    return sc.Point(
        "m",
        workload,
        batch,
        prompt_tokens=16,
        new_tokens=4 if workload == "decode" else 0,
        seq_len=16 if workload == "train" else 0,
    )


def test_layouts_follow_the_strategy():
    tiny, big = find_card("opt-tiny"), find_card("opt-66b")
    auto, tp, fsdp = sc.ParallelConfig(), sc.ParallelConfig("tp", 2), sc.ParallelConfig("fsdp")
    f32 = torch.float32
    assert layout_for(_point("train"), auto, 8, 8, tiny, f32, 80 * GB) == Layout(
        "fsdp", dp=8, reason="training: FSDP2 data parallel over every rank"
    )
    assert layout_for(_point("prefill"), auto, 8, 8, tiny, f32, 80 * GB).mode == "replicate"
    assert layout_for(_point("decode"), fsdp, 8, 8, tiny, f32, 80 * GB).mode == "replicate"
    assert layout_for(_point("decode"), auto, 1, 1, big, f32, 80 * GB).mode == "single"
    lay = layout_for(_point("decode"), tp, 8, 8, tiny, f32, 80 * GB)
    assert (lay.mode, lay.tp, lay.dp) == ("tp", 2, 4)
    lay = layout_for(_point("decode"), sc.ParallelConfig("tp"), 8, 4, tiny, f32, 80 * GB)
    assert (lay.mode, lay.tp, lay.dp) == ("tp", 4, 2)  # default: a node's ranks
    lay = layout_for(_point("decode"), sc.ParallelConfig("tp"), 2, 1, tiny, f32, 80 * GB)
    assert (lay.mode, lay.tp, lay.dp) == ("tp", 2, 1)  # one GPU per node: across nodes
    assert layout_for(_point("decode"), sc.ParallelConfig("tp", 1), 2, 2, tiny, f32, 80 * GB).mode == "replicate"
    # OPT-66B in bf16 is ~132 GB of weights: auto picks the smallest degree that holds it.
    lay = layout_for(_point("decode"), auto, 8, 8, big, torch.bfloat16, 80 * GB)
    assert (lay.mode, lay.tp, lay.dp) == ("tp", 2, 4)
    lay = layout_for(_point("decode"), auto, 8, 8, big, torch.bfloat16, 40 * GB)
    assert (lay.mode, lay.tp, lay.dp) == ("tp", 4, 2)
    with pytest.raises(UserError, match="does not divide the 6 ranks"):
        layout_for(_point("prefill"), sc.ParallelConfig("tp", 4), 6, 6, tiny, f32, 80 * GB)
    with pytest.raises(UserError, match="4 attention heads"):
        layout_for(_point("prefill"), sc.ParallelConfig("tp", 8), 8, 8, tiny, f32, 80 * GB)


def test_data_parallel_ranks_take_their_own_rows():
    ids = torch.arange(12).reshape(6, 2)
    assert Layout("fsdp", dp=3, dp_rank=1).local_rows(ids).tolist() == [[4, 5], [6, 7]]
    assert Layout("tp", dp=1, tp=2).local_rows(ids) is ids


def test_parallel_section_is_validated_and_round_trips(tiny_scenario):
    s = sc.load(tiny_scenario("parallel: {strategy: tp, tp_size: 2, timeout_s: 20}\n"))
    assert s.parallel == sc.ParallelConfig("tp", 2, 20.0)
    assert sc.from_dict(s.to_dict(), source="copy") == s
    assert sc.load(tiny_scenario()).parallel == sc.ParallelConfig()
    with pytest.raises(ConfigError, match=r"parallel.tp_size: is for strategy tp or auto"):
        sc.load(tiny_scenario("parallel: {strategy: fsdp, tp_size: 2}\n"))
    with pytest.raises(ConfigError, match=r"parallel.strategy: expected one of"):
        sc.load(tiny_scenario("parallel: {strategy: zero3}\n"))


def test_torchrun_arguments():
    assert torchrun_args(2) == ["--nproc-per-node=2", "--nnodes=1", "--max-restarts=0", "--standalone"]
    assert torchrun_args(8, "2", rdzv_endpoint="n1:29400", rdzv_id="42")[3:] == [
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=n1:29400",
        "--rdzv-id=42",
    ]
    assert torchrun_args(8, "2", node_rank=1, rdzv_endpoint="n1:29500")[3:] == [
        "--rdzv-backend=static",
        "--master-addr=n1",
        "--master-port=29500",
        "--node-rank=1",
    ]
    with pytest.raises(UserError, match="needs --rdzv-endpoint"):
        torchrun_args(8, "2")
    with pytest.raises(UserError, match="HOST:PORT"):
        torchrun_args(8, "2", rdzv_endpoint="n1")
    assert worker_args(Path("s.yaml"), Path("out"), "cpu", True, False) == [
        "run",
        "s.yaml",
        "--out",
        "out",
        "--device",
        "cpu",
        "--quick",
    ]


def test_failure_report_names_the_rank_that_died(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    error_file = tmp_path / "error.json"
    error_file.write_text(
        json.dumps(
            {
                "message": {
                    "message": "DistributedFailure: rank 0: a collective failed (RuntimeError: Connection closed by peer)",
                    "extraInfo": {"py_callstack": "...", "timestamp": "1"},
                }
            }
        )
    )
    code, msg = failure_report(
        {
            0: ProcessFailure(local_rank=0, pid=10, exitcode=1, error_file=str(error_file)),
            1: ProcessFailure(local_rank=1, pid=11, exitcode=-9, error_file="<N/A>"),
        }
    )
    assert code == 1
    assert msg.startswith(
        "distributed run failed: rank 1 (local rank 1, pid 11) was killed by SIGKILL; rank 0: a collective"
    )
    # Ranks that exited 1 (a point failed) without an error file have said why already.
    assert failure_report({0: ProcessFailure(local_rank=0, pid=10, exitcode=1, error_file="<N/A>")}) == (1, "")


# -- a 2-process job: FSDP2, tensor parallel and the runner --------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(rank: int, world: int, port: int, out: str, scenario_path: str) -> None:
    """One rank of the 2-process job; results go to out/rank<R>.json."""
    import torch.distributed as dist

    from carbonbench.distributed import init_from_env
    from carbonbench.distributed.parallel import build_model, build_sharded
    from carbonbench.meters.base import MeterSet
    from carbonbench.meters.cpu import CpuEstimateMeter, DramEstimateMeter
    from carbonbench.opt import decode_step, load, prefill
    from carbonbench.opt.tokenizer import synthetic_prompts
    from carbonbench.runner import Runner
    from carbonbench.workloads import Inputs, Train

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        GROUP_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ctx = init_from_env("cpu", timeout_s=60)
    card = find_card("opt-tiny")
    result: dict = {}

    # FSDP2 training on this rank's half of a global batch of 4, activation checkpointing on.
    ids = synthetic_prompts(4, 16, card.arch.vocab_size, seed=1)
    point = sc.Point("opt-tiny", "train", 2, seq_len=16)
    layout = Layout("fsdp", dp=world, dp_rank=rank)
    model = build_model(card, layout, ctx, torch.float32, seed=0)
    train = Train(
        model, point, Inputs(layout.local_rows(ids)), lambda: None, lr=1e-3, autocast_dtype=None, recompute=True
    )
    losses = []
    for _ in range(5):
        train.step()
        loss = train.last_loss.clone()
        dist.all_reduce(loss)
        losses.append(float(loss) / world)
    result["fsdp_losses"] = losses
    result["fsdp_shard_rows"] = model.layers[0].fc1.weight.to_local().shape[0]
    train.close()
    if rank == 0:  # the same steps on one process, whole batch, no checkpointing
        ref = load("opt-tiny", dtype=torch.float32, seed=0)
        ref_train = Train(ref, point, Inputs(ids), lambda: None, lr=1e-3, autocast_dtype=None, recompute=False)
        result["single_losses"] = []
        for _ in range(5):
            ref_train.step()
            result["single_losses"].append(float(ref_train.last_loss))

    # Tensor-parallel inference: logits of a forward, a prefill and decode steps.
    tp_layout = Layout("tp", dp=1, tp=world)
    tp_model = build_model(card, tp_layout, ctx, torch.float32, seed=0).eval()
    ref = load("opt-tiny", dtype=torch.float32, seed=0).eval()
    prompt = synthetic_prompts(2, 8, card.arch.vocab_size, seed=2)
    diffs = {}
    with torch.inference_mode():
        diffs["forward"] = (tp_model(prompt) - ref(prompt)).abs().max().item()
        c_tp, c_ref = tp_model.new_cache(2, 12), ref.new_cache(2, 12)
        a, b = prefill(tp_model, prompt, c_tp), prefill(ref, prompt, c_ref)
        diffs["prefill"] = (a - b).abs().max().item()
        token = b.argmax(-1, keepdim=True)
        for i in range(3):
            a, b = decode_step(tp_model, token, c_tp, 8 + i), decode_step(ref, token, c_ref, 8 + i)
            diffs[f"decode{i}"] = (a - b).abs().max().item()
            token = b.argmax(-1, keepdim=True)
    result["tp_max_abs_diff"] = diffs
    result["tp_local_heads"] = tp_model.local_heads
    result["tp_cache_heads"] = c_tp.k.shape[2]

    # A model too large to load whole: built on meta, only the shards allocated.
    sharded = build_sharded(card, tp_layout, ctx, torch.float32, seed=0).eval()
    with torch.inference_mode():
        result["meta_tp_finite"] = bool(torch.isfinite(sharded(prompt)).all())
    del model, tp_model, ref, sharded

    # The runner: a fake GPU meter per rank plus the CPU and DRAM models on both ranks;
    # only rank 0 (the node leader) may keep the latter.
    meters = MeterSet([ConstantMeter(f"gpu{rank}", "gpu", 100.0 + 10 * rank), CpuEstimateMeter(), DramEstimateMeter()])
    outcome = Runner(sc.load(scenario_path), Path(out) / "runs", dist=ctx, meters=meters).run()
    result["run_path"] = str(outcome.path)
    ctx.close()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip torch's slow interpreter teardown (seconds on a busy machine)


@pytest.fixture(scope="module")
def two_process_job(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("job")
    scenario = out / "tiny.yaml"
    scenario.write_text(
        scenario_text(
            name="tiny-dist",
            batch_sizes="[2]",
            workloads="{prefill: {prompt_tokens: [16]}, train: {seq_len: [16]}}",
            min_seconds=0.1,
            repeats=2,
            idle_baseline_s=0.1,
            extra="parallel: {strategy: tp, timeout_s: 60}\n",
        )
    )
    t0 = time.monotonic()
    mp.spawn(_job, args=(2, _free_port(), str(out), str(scenario)), nprocs=2, join=True)
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return results, time.monotonic() - t0


def test_fsdp2_training_follows_the_single_process_loss_trajectory(two_process_job):
    (rank0, rank1), _ = two_process_job
    assert rank0["fsdp_losses"] == rank1["fsdp_losses"]
    assert rank0["fsdp_losses"] == pytest.approx(rank0["single_losses"], rel=1e-5, abs=1e-5)
    assert rank0["fsdp_losses"][-1] < rank0["fsdp_losses"][0]  # it trains
    assert rank0["fsdp_shard_rows"] == 256 // 2  # parameters really are sharded


def test_tensor_parallel_inference_gives_the_single_process_logits(two_process_job):
    (rank0, rank1), _ = two_process_job
    for result in (rank0, rank1):
        for name, diff in result["tp_max_abs_diff"].items():
            assert diff < 1e-5, name
        assert result["tp_local_heads"] == result["tp_cache_heads"] == 2  # 4 heads over 2 ranks
        assert result["meta_tp_finite"]


def test_runner_sums_rank_energy_and_counts_the_node_once(two_process_job):
    (rank0, rank1), _ = two_process_job
    runs = list(Path(rank0["run_path"]).parent.glob("*.json"))
    assert runs == [Path(rank0["run_path"])]  # one file, from rank 0
    run = json.loads(runs[0].read_text())
    assert run["status"] == "complete" and run["world_size"] == 2 and run["device"]["count"] == 2
    assert run["nodes"] == [{"node": 0, "hostname": socket.gethostname(), "ranks": [0, 1], "devices": ["cpu", "cpu"]}]
    assert set(run["idle"]["power_w"]) == {"rank0/gpu0", "rank1/gpu1", "node0/cpu", "node0/dram"}
    # The job's window is the longest rank's: ranks open and close theirs together, within ms.
    assert run["idle"]["power_w"]["rank1/gpu1"] == pytest.approx(110.0, rel=0.02)
    # No model of a multi-process job is q/k/v-fused, and the run says so.
    assert run["engine"]["options"]["fused_qkv"] is False
    assert any(w.startswith("engine.fused_qkv ignored: the models of a 2-process job") for w in run["warnings"])
    modes = {p["workload"]: (p["parallel"]["mode"], p["parallel"]["global_batch_size"]) for p in run["points"]}
    assert modes == {"prefill": ("tp", 2), "train": ("fsdp", 4)}
    for point in run["points"]:
        assert point["status"] == "ok"
        for rep in point["repeats"]:
            comps = rep["components"]
            assert set(comps) == {"rank0/gpu0", "rank1/gpu1", "node0/cpu", "node0/dram"}
            assert rep["energy_j"] == pytest.approx(sum(c["energy_j"] for c in comps.values()))
            ranks = {r["rank"]: r for r in rep["ranks"]}
            assert ranks[1]["components"] == ["rank1/gpu1"]
            assert ranks[1]["energy_j"] == pytest.approx(110.0 * ranks[1]["duration_s"])
            assert ranks[0]["energy_j"] + ranks[1]["energy_j"] == pytest.approx(rep["energy_j"])
            assert rep["tokens"] == rep["steps"] * point["tokens_per_step"]
    train = next(p for p in run["points"] if p["workload"] == "train")
    assert train["tokens_per_step"] == 2 * 2 * 16  # both replicas' rows


# -- the launcher, end to end ----------------------------------------------------------------
def _carbonbench(*args: str, env_extra: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CARBONBENCH_FAULT"}
    env.update({"CARBONBENCH_MODEL_DIR": str(ROOT / "model"), **(env_extra or {})})
    return subprocess.run(
        [sys.executable, "-m", "carbonbench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_launch_writes_one_file_and_a_killed_rank_ends_the_run_naming_it(tmp_path):
    """`carbonbench run --nproc-per-node 2`: prefill and decode measured on both ranks,
    then rank 1 is SIGKILLed as the training point starts. The run ends, the message
    names rank 1, and rank 0's one file keeps the finished points with every rank's share."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        scenario_text(
            name="tiny-cli",
            batch_sizes="[2]",
            workloads=(
                "{prefill: {prompt_tokens: [16]}, decode: {prompt_tokens: [8], new_tokens: [2]}, train: {seq_len: [16]}}"
            ),
            min_seconds=0.1,
            repeats=2,
            idle_baseline_s=0.1,
            extra="parallel: {strategy: auto, timeout_s: 20}\n",
        )
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = _carbonbench(
        "run",
        str(scenario),
        "--out",
        str(out),
        "--nproc-per-node",
        "2",
        env_extra={"CARBONBENCH_FAULT": "1:kill:/train/"},
    )
    elapsed = time.monotonic() - t0
    assert "launching: torchrun --nproc-per-node=2" in proc.stderr
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "distributed run failed: rank 1 (local rank 1" in proc.stderr and "SIGKILL" in proc.stderr, proc.stderr[
        -3000:
    ]
    assert elapsed < 120  # bounded: torchrun stops rank 0 as soon as rank 1 is gone

    files = list(out.glob("*.json"))
    assert len(files) == 1  # rank 0's, for the whole job
    run = json.loads(files[0].read_text())
    assert run["status"] in ("interrupted", "failed") and run["world_size"] == 2
    assert run["distributed"]["backend"] == "gloo"
    assert run["distributed"]["meters_by_rank"][1] == []  # rank 1 has no CPU/DRAM meter of its own
    assert {p["workload"]: (p["status"], p["parallel"]["mode"]) for p in run["points"]} == {
        "prefill": ("ok", "replicate"),
        "decode": ("ok", "replicate"),
    }  # finished before the kill, kept
    for point in run["points"]:
        for rep in point["repeats"]:
            assert set(rep["components"]) == {"node0/cpu", "node0/dram"}  # counted once, by rank 0
            assert rep["energy_j"] == pytest.approx(sum(c["energy_j"] for c in rep["components"].values()))
            assert [r["rank"] for r in rep["ranks"]] == [0, 1] and rep["ranks"][1]["energy_j"] is None
            assert rep["nodes"][0]["energy_j"] == pytest.approx(rep["energy_j"])

    from carbonbench.results import load

    df = load(files[0], derive=False)
    assert set(df["n_devices"]) == {2}
    prefill = df[df["workload"] == "prefill"].iloc[0]
    assert prefill["tokens"] == prefill["steps"] * 2 * 2 * 16  # two replicas of batch 2 x 16 tokens
