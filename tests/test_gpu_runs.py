"""On a CUDA GPU (issue 20): what a user runs there. Skipped with the reason without one
(``gpu_missing`` in conftest.py); each test takes seconds to a minute on one H100, on one GPU.

- ``baby`` trains 200 steps on the GPU (bfloat16, the default there) along the CPU's float32 curve;
- the benchmark on ``--device gpu`` writes a complete report (vendor-peak MFU, device peak memory);
- sampling on the GPU picks the tokens the CPU's model gives;
- a checkpoint written on the GPU resumes on the CPU, in the other backend too;
- DDP and FSDP through NCCL on a world of one GPU (torch), and a mesh of one GPU (JAX), equal one device.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import load_backend, process, trainloop
from common.batches import BatchSampler
from common.checkpoint import load_checkpoint
from common.config import build_configs
from common.corpus import load_corpus, read_text
from common.params import init_weights
from common.tokenizer import CharTokenizer

REPO = Path(__file__).resolve().parents[1]
ON_GPU = {b: pytest.param(b, marks=pytest.mark.gpu(b)) for b in ("torch", "jax")}
BABY_STEPS = 200
# bfloat16 on the GPU against float32 on the CPU, step by step, relative. Measured on a CPU (where both
# backends compute bfloat16 too: oneDNN's matmuls, like a GPU's tensor cores, accumulate in float32):
# the worst of 200 steps 3.0e-4 (torch) and 3.6e-4 (JAX), the mean 5.9e-5 and 3.9e-5; about 10x that.
CURVE_BUDGET = 3e-3
CURVE_MEAN_BUDGET = 5e-4  # the drift is not one-sided: the mean stays small
SAME = 1e-10  # one device against a world or mesh of one, float64: round-off of another summation
ACROSS = 1e-4  # a float32 run resumed on another device and backend against one that never moved
SAMPLING_MARGIN = 1e-4  # float32 GPU against CPU: a uniform this close to a CDF step may go either way


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shakespeare_path) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_bytes(shakespeare_path.read_bytes()[:100_000])
    return path


def losses(out: Path) -> list[float]:
    with open(out / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def weights_gap(a: Path, b: Path) -> float:
    wa, wb = load_checkpoint(a / "last").weights, load_checkpoint(b / "last").weights
    assert set(wa) == set(wb)
    return max(float(np.max(np.abs(np.asarray(wa[k], np.float64) - np.asarray(wb[k], np.float64)))) for k in wa)


# -- training: the loss curve --------------------------------------------------------------------

def _baby_curve(backend: str, device: str, dtype: str, shakespeare_path: Path) -> list[float]:
    tokenizer = CharTokenizer.from_text(read_text(shakespeare_path))
    data = load_corpus(shakespeare_path, tokenizer)
    module = load_backend(backend)
    mc, tc = build_configs("baby", dict(device=device, dtype=dtype), tokenizer.vocab_size)
    with process.settings(module, tc):
        trainer = module.Trainer(mc, tc)  # nanoGPT's init from the config's seed: the same weights everywhere
        assert trainer.dtype == ("bfloat16" if device == "cuda" else "float32")
        sampler = BatchSampler({"train": data.train, "val": data.val}, tc.batch_size, mc.block_size, tc.seed)
        return [float(trainer.step(*sampler.get_batch("train"))) for _ in range(BABY_STEPS)]


@pytest.mark.parametrize("backend", ON_GPU.values())
def test_baby_trains_on_the_gpu_along_the_cpus_curve(backend, shakespeare_path):
    gpu = np.asarray(_baby_curve(backend, "cuda", "auto", shakespeare_path))
    cpu = np.asarray(_baby_curve(backend, "cpu", "auto", shakespeare_path))
    rel = np.abs(gpu - cpu) / cpu
    assert gpu[-20:].mean() < gpu[:5].mean() - 1.0  # it learns: from ln(65) = 4.17 to below 3 nats
    assert rel.max() <= CURVE_BUDGET and rel.mean() <= CURVE_MEAN_BUDGET, (int(rel.argmax()), rel.max(), rel.mean())


# -- the benchmark ----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_benchmark_on_the_gpu_writes_a_complete_report(tmp_path, shakespeare_path):
    from benchmarks import peaks, schema

    out = tmp_path / "bench.json"
    env = dict(os.environ, MICROGPT_DATA_DIR=str(shakespeare_path.parent))
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--device", "gpu", "--preset", "tiny", "--steps",
                           "5", "--warmup", "2", "--repeats", "1", "--quiet", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert schema.validate(report) == []
    assert {d["type"] for d in report["settings"]["backend_devices"].values()} == {"cuda"}
    for run in report["runs"]:
        assert run["status"] == "ok", run.get("error")
        device, metrics = run["environment"]["device"], run["metrics"]
        assert device["type"] == "cuda" and run["environment"]["dtype"] == "bfloat16"
        assert metrics["device_peak_bytes"] > 0
        known = peaks.vendor_peak("cuda", device["name"], "bfloat16", False)["flops_per_s"]
        assert metrics["vendor_peak"]["flops_per_s"] == known, metrics["vendor_peak"]
        assert (0 < metrics["mfu_vendor"] < 1) if known else metrics["mfu_vendor"] is None
    group = report["summary"][0]
    assert set(group["backends"]) == {"torch", "jax"} and group["ratios"]["step_s.median"] > 0
    assert done.stdout.startswith("devices: torch on cuda (") and ", jax on cuda (" in done.stdout.splitlines()[0]
    assert "vendor peak" in done.stdout and "device peak memory" in done.stdout


# -- sampling ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ON_GPU.values())
def test_sampling_on_the_gpu_picks_the_tokens_the_cpus_model_gives(backend):
    """From the same weights, in float32 (TF32 off): the tokens the GPU samples, fed the same
    uniforms, are the inverse-CDF picks of the CPU model's probabilities for that very sequence
    (teacher-forced), but where a uniform lies within the margin of a CDF step; greedy picks are
    the CPU's most likely token but for near-ties; seeded sampling in bfloat16 repeats itself."""
    module = load_backend(backend)
    mc, tc = build_configs("baby", dict(device="cuda", dtype="float32", tf32=False), 65)
    weights = init_weights(mc, 7)
    rng = np.random.Generator(np.random.PCG64(0))
    prompts = rng.integers(0, mc.vocab_size, (4, 1), dtype=np.int32)
    n = mc.block_size - 1  # the whole sequence fits one context: teacher forcing sees what sampling saw
    uniforms = rng.random((n, prompts.shape[0]))
    with process.settings(module, tc):
        gpu = module.Trainer(mc, tc, weights)
        sampled = gpu.generate(prompts, n, temperature=0.8, top_k=200, uniforms=uniforms)
        greedy = gpu.generate(prompts, n, temperature=0.0)
    cpu_config = build_configs("baby", dict(device="cpu", dtype="float32"), 65)[1]
    with process.settings(module, cpu_config):
        cpu = module.Trainer(mc, cpu_config, weights)
        logits = {name: cpu.logits(seq[:, :-1]).astype(np.float64) for name, seq in (("s", sampled), ("g", greedy))}
    assert sampled.shape == greedy.shape == (4, 1 + n) and (sampled[:, :1] == prompts).all()
    z = logits["s"] / 0.8
    probs = np.exp(z - z.max(-1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(-1, keepdims=True), axis=-1)  # (B, n, V)
    chosen = sampled[:, 1:]
    low = np.where(chosen > 0, np.take_along_axis(cdf, np.maximum(chosen - 1, 0)[..., None], -1)[..., 0], 0.0)
    high = np.take_along_axis(cdf, chosen[..., None], -1)[..., 0]
    u = uniforms.T  # (B, n)
    assert ((low - SAMPLING_MARGIN <= u) & (u < high + SAMPLING_MARGIN)).all()
    top = np.take_along_axis(logits["g"], greedy[:, 1:, None], -1)[..., 0]
    assert (logits["g"].max(-1) - top <= SAMPLING_MARGIN).all()
    auto = build_configs("baby", dict(device="cuda"), 65)[1]
    with process.settings(module, auto):
        trainer = module.Trainer(mc, auto, weights)
        assert trainer.dtype == "bfloat16"
        runs = [trainer.generate(prompts, 20, temperature=0.8, top_k=200, seed=5) for _ in range(2)]
    assert np.array_equal(*runs) and runs[0].min() >= 0 and runs[0].max() < mc.vocab_size


# -- checkpoints: written on the GPU, resumed on the CPU -------------------------------------------

@pytest.mark.parametrize("writer, reader", [
    pytest.param("torch", "jax", marks=pytest.mark.gpu("torch")),
    pytest.param("jax", "torch", marks=pytest.mark.gpu("jax")),
    pytest.param("torch", "torch", marks=pytest.mark.gpu("torch")),  # the GPU's RNG state too
])
def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu(writer, reader, corpus, tmp_path):
    """4 float32 steps of tiny on the GPU, 4 more on the CPU in ``reader``: the same losses and
    weights as 8 steps of ``reader`` on the CPU, within float32 round-off; the GPU's checkpoint
    also samples on the GPU, the same text twice."""
    base = dict(dtype="float32", eval_interval=2)
    out, ref = tmp_path / "moved", tmp_path / "stayed"
    trainloop.train(writer, "tiny", base | dict(device="cuda", max_iters=4), str(corpus), out, progress=False)
    written = load_checkpoint(out / "last")
    assert (written.train_config.device, written.step, written.backend) == ("cuda", 4, writer)
    texts = [trainloop.sample(out, writer, "KING", 30, 0.8, 200, 1, "cuda") for _ in range(2)]
    assert texts[0] == texts[1] and texts[0][0].startswith("KING") and len(texts[0][0]) == 34
    trainloop.train(reader, "tiny", dict(device="cpu", max_iters=8), None, out, resume=True, progress=False)
    trainloop.train(reader, "tiny", base | dict(device="cpu", max_iters=8), str(corpus), ref, progress=False)
    resumed = load_checkpoint(out / "last")
    assert (resumed.step, resumed.backend, resumed.train_config.device) == (8, reader, "cpu")
    got, want = losses(out), losses(ref)
    assert len(got) == len(want) == 8 and np.max(np.abs(np.subtract(got, want))) <= ACROSS, (got, want)
    assert weights_gap(out, ref) <= ACROSS


# -- many devices, on one GPU ----------------------------------------------------------------------

TORCH_NCCL = """
import json, sys
import torch.distributed as dist
from backends import trainloop
data, root = sys.argv[1:3]
base = dict(device="cuda", dtype="float64", max_iters=4, eval_interval=2)
for name, extra in {"one": {}, "ddp": dict(parallel="ddp", devices=1), "fsdp": dict(parallel="fsdp", devices=1)}.items():
    trainloop.train("torch", "tiny", base | extra, data, f"{root}/{name}", progress=False)
print(json.dumps({"backend": dist.get_backend() if dist.is_initialized() else None, "world": dist.get_world_size()}))
"""


@pytest.fixture(scope="module")
def torch_nccl(tmp_path_factory, corpus):
    """One process (torch's default group lives as long as it): a plain run, then ddp and fsdp on a
    world of one, each 4 float64 steps of tiny on the GPU."""
    root = tmp_path_factory.mktemp("nccl")
    done = subprocess.run([sys.executable, "-c", TORCH_NCCL, str(corpus), str(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.gpu("torch")
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torch_ddp_and_fsdp_through_nccl_on_one_gpu_equal_one_device(mode, torch_nccl):
    root, info = torch_nccl
    assert info == {"backend": "nccl", "world": 1}
    assert np.max(np.abs(np.subtract(losses(root / mode), losses(root / "one")))) <= SAME
    assert weights_gap(root / mode, root / "one") <= SAME


@pytest.mark.gpu("jax")
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_jax_ddp_and_fsdp_on_a_mesh_of_one_gpu_equal_one_device(mode, corpus, tmp_path):
    base = dict(device="cuda", dtype="float64", max_iters=4, eval_interval=2)
    for name, extra in (("one", {}), (mode, dict(parallel=mode, devices=1))):
        trainloop.train("jax", "tiny", base | extra, str(corpus), tmp_path / name, progress=False)
    assert load_checkpoint(tmp_path / mode / "last").train_config.parallel == mode
    assert np.max(np.abs(np.subtract(losses(tmp_path / mode), losses(tmp_path / "one")))) <= SAME
    assert weights_gap(tmp_path / mode, tmp_path / "one") <= SAME
    assert math.isfinite(losses(tmp_path / mode)[-1])
