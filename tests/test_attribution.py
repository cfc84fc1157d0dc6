"""Where a step's time goes: the sweep that shares wall time among categories, each backend's
classifier on a real ``tiny`` step (nothing left in "other"), the JAX HLO reading, the single-op
micro-benchmark, and the named variants' bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import attribution, profiles
from benchmarks.run import main as bench_main
from common.config import build_configs

REPO = Path(__file__).resolve().parents[1]


def ev(name, ts, dur, tid=1, **args):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def test_the_sweep_shares_wall_time_and_sums_to_it():
    events = [
        ev("train_step", 0, 100),
        ev("mm", 10, 20), ev("t", 12, 8),  # an op and a view inside it: the outer op owns the time
        ev("gelu", 40, 20), ev("attn", 50, 20, tid=2),  # two threads at once share 50..60
        ev("dot", 80, 2), ev("end: dot", 95, 0.0),  # launched, then done asynchronously at 95
        ev("softmax", 90, 2, tid=2),  # while the async dot's tail runs: the real op takes the time
    ]
    cats = {"mm": "forward matmul", "t": "copies/layout", "gelu": "elementwise", "attn": "attention",
            "dot": "weight-grad matmul", "softmax": "attention"}
    totals = attribution.attribute(events, lambda name, args, anc: cats.get(name), [(0, 100)])
    assert totals["forward matmul"] == pytest.approx(20)
    assert totals["elementwise"] == pytest.approx(10 + 5)
    assert totals["attention"] == pytest.approx(5 + 10 + 2)
    assert totals["weight-grad matmul"] == pytest.approx(2 + (95 - 82) - 2)  # its tail, minus softmax's 2
    assert totals["copies/layout"] == 0
    assert sum(totals.values()) == pytest.approx(100)
    assert totals["framework"] == pytest.approx(100 - 20 - 15 - 17 - 13)


def _tiny_trainer(name, **overrides):
    from backends import load_backend

    module = load_backend(name)
    mc, tc = build_configs("tiny", {"device": "cpu", "warmup_iters": 0} | overrides)
    trainer = module.Trainer(mc, tc)
    x = np.random.default_rng(0).integers(0, mc.vocab_size, (tc.batch_size, mc.block_size)).astype(np.int32)
    trainer.compile(x, x)
    return trainer, x


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_every_op_of_a_tiny_step_has_a_category(name, tmp_path):
    import importlib

    bench = importlib.import_module(f"backends.{name}.bench")
    trainer, x = _tiny_trainer(name)
    bench.profile(trainer, x, x, 2, tmp_path)
    events = profiles.load_events(profiles.find_trace(tmp_path, name))
    result = attribution.categories_of_trace(events, bench.op_classifier(trainer))
    assert result["steps"] == 2
    assert sum(result["seconds"].values()) == pytest.approx(result["step_s"], rel=1e-6)
    assert result["shares"]["other"] < 0.03, result["shares"]
    for category in ("forward matmul", "weight-grad matmul", "input-grad matmul", "attention", "layernorm",
                     "optimizer"):
        assert result["seconds"][category] > 0, (category, result["seconds"])


@pytest.mark.parametrize("kernel, category", [
    ("graph_0_cpp_fused_native_layer_norm_0", "layernorm"),
    ("graph_1_cpp_fused_add_native_layer_norm_native_layer_norm_backward_view_4", "layernorm"),
    ("graph_1_cpp_fused__log_softmax__to_copy_add_nll_loss_forward_3", "loss"),
    ("graph_1_cpp_fused__softmax_masked_fill_2", "attention"),
    ("graph_0_cpp_fused_gelu_gelu_backward_sum_1", "elementwise"),
    ("graph_1_cpp_fused_cat_transpose_view_5", "copies/layout"),
    ("triton_per_fused_native_layer_norm_0", "layernorm"),  # a GPU's Triton kernels, by the same rules
    ("triton_poi_fused_add_mul_2", "elementwise"),
    ("## Call CompiledFxGraph fl3gydwz ##", None),  # the wrapper around them is not an op
    ("CompiledFunctionBackward", None),
])
def test_inductor_kernels_are_classified_by_the_ops_they_fuse(kernel, category):
    from backends.torch import bench

    assert bench.fused_kernel_category(kernel) == category
    assert bench.op_classifier(_FakeTrainer())(kernel, {}, ()) == category


class _FakeTrainer:
    class train_config:
        batch_size = 4

    class model_config:
        block_size = 16


def test_torch_compile_kernels_are_named_in_the_profile(tmp_path):
    """Under torch.compile the C++ kernels record under their own names for the trace, so the
    fusions holding LayerNorm, the loss and GELU count there, not as "framework"."""
    from backends.torch import bench

    trainer, x = _tiny_trainer("torch", compile=True)
    bench.profile(trainer, x, x, 2, tmp_path)
    events = profiles.load_events(profiles.find_trace(tmp_path, "torch"))
    assert any("cpp_fused_" in e["name"] for e in events)
    result = attribution.categories_of_trace(events, bench.op_classifier(trainer))
    assert result["shares"]["other"] < 0.03, result["shares"]
    for category in ("forward matmul", "layernorm", "loss", "elementwise", "optimizer"):
        assert result["seconds"][category] > 0, (category, result["seconds"])


def test_hlo_reading_finds_every_linear_matmul():
    from backends.jax import bench, hlo

    trainer, _ = _tiny_trainer("jax")
    mc, tc = trainer.model_config, trainer.train_config
    table = hlo.categories(trainer.compiled_step.as_text(), tokens=tc.batch_size * mc.block_size,
                           vocab=mc.vocab_size, n_embd=mc.n_embd)
    # 4 Linears a layer and the tied head, each forward, for the weight and for the input gradient
    # (XLA may fuse two gradients of one input into one op: at most that many, at least the layers')
    for category in ("forward matmul", "weight-grad matmul", "input-grad matmul"):
        assert mc.n_layer * 2 <= list(table.values()).count(category) <= 4 * mc.n_layer + 1, category
    assert bench.op_classifier(trainer)("not an op", {}, ()) is None


def test_the_micro_benchmark_times_every_category_in_both_frameworks(tmp_path):
    out = tmp_path / "ops.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ops", "--preset", "tiny", "--repeats", "1",
                           "--seconds", "0.05", "--device", "cpu", "--json", str(out), "--dropout=0.1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = proc.stdout.splitlines()[1].split()
    assert header[:2] == ["op", "shape"] and "jax/torch" in header
    results = json.loads(out.read_text())["results"]
    expected = {"forward matmul", "weight-grad matmul", "input-grad matmul", "attention", "elementwise: GELU",
                "elementwise: dropout", "layernorm", "loss", "optimizer", "copies/layout"}
    for name in ("torch", "jax"):
        assert set(results[name]) == expected
        assert all(min(r["times_s"]) > 0 for r in results[name].values())
    assert results["torch"]["forward matmul"]["flops"] == 2.0 * 4 * 16 * 32 * 128  # (B*T, C) @ (C, 4C)
    # both frameworks' ops ran under the same process settings, and the output says so
    settings = json.loads(out.read_text())["process_settings"]
    assert settings["lanes"] == ["torch", "jax"] and settings["differs"] == []
    assert "every lane ran under the same process settings" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--backend", "jax", "--compile-mode", "max-autotune"], "--compile-mode applies to the torch backend"),
    (["--backend", "torch", "--xla-variant", "onednn"], "--xla-variant applies to the jax backend"),
    (["--compile-mode", "fastest"], "choose from eager, default"),
    (["--xla-variant", "onednn,onednn"], "twice"),
    (["--compile", "--compile-mode", "default"], "keep one"),
    (["--compile_mode=default"], "own flag"),
])
def test_variants_that_do_not_apply_are_refused_in_one_line(args, words, capsys):
    code = bench_main(["--preset", "tiny", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_the_headline_peak_is_the_best_engine_cached_for_the_device():
    from benchmarks import machine_peak
    from common import matmul_rate

    rates = lambda f: {1024: {"best": f, "median": f, "repeats": 5}}  # noqa: E731
    matmul_rate.record_peak("torch | float32 | blas", rates(2e11), lambda n: "probe a", engine="torch.matmul", device="cpu|X")
    matmul_rate.record_peak("torch | float32 | onednn", rates(3e11), lambda n: "probe b", engine="torch oneDNN", device="cpu|X")
    matmul_rate.record_peak("jax | float32 | xla", rates(2.5e11), lambda n: "probe c", engine="XLA", device="cpu|X")
    matmul_rate.record_peak("jax | float32 | other", rates(9e11), lambda n: "probe d", engine="XLA", device="cpu|Y")
    best = machine_peak.headline("cpu|X")
    assert best["flops_per_s"] == 3e11 and best["engine"] == "torch oneDNN" and "torch oneDNN" in best["source"]
    assert matmul_rate.machine_best("cpu|X", ["XLA", "torch"])[1] == []  # every framework's engines cached
    assert matmul_rate.machine_best("cpu|Y", ["XLA", "torch"])[1] == ["torch"]  # torch was never probed there
    # a busier moment's lower probe does not replace the best seen
    again = matmul_rate.record_peak("torch | float32 | onednn", rates(1e11), lambda n: "probe e", engine="torch oneDNN",
                                    device="cpu|X")
    assert again["flops_per_s"] == 3e11 and again["this_probe_flops_per_s"] == 1e11 and again["probes"] == 2


def test_collectives_are_communication_in_both_classifiers():
    """Many devices: torch.distributed's collectives and XLA's are their own category."""
    from backends.jax import hlo
    from backends.torch import bench

    class _T:  # what op_classifier reads of a trainer
        class train_config: batch_size = 4
        class model_config: block_size = 16
    classify = bench.op_classifier(_T())
    for name in ("c10d::allreduce_", "gloo:all_reduce", "nccl:all_gather", "record_param_comms",
                 "_c10d_functional::reduce_scatter_tensor"):
        assert classify(name, {}, ()) == "communication", name
    assert classify("aten::broadcast_to", {}, ()) != "communication"
    text = """HloModule m

ENTRY %main (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %all-reduce.1 = f32[8]{0} all-reduce(f32[8]{0} %p), replica_groups={{0,1}}, to_apply=%add
}
"""
    assert hlo.categories(text, tokens=8, vocab=65, n_embd=8) == {"all-reduce.1": "communication"}


def test_the_micro_benchmark_never_replaces_its_json_without_overwrite(tmp_path, capsys):
    from benchmarks import ops

    out = tmp_path / "ops.json"
    out.write_text("earlier results")
    code = ops.main(["--preset", "tiny", "--repeats", "1", "--seconds", "0.05", "--device", "cpu",
                     "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "already exists" in captured.err and "--overwrite" in captured.err
    assert captured.out == "" and out.read_text() == "earlier results"
