"""The parity suite itself: its error arithmetic, its tolerances, the clean float64 and float32
runs of torch against jax (every quantity within tolerance), and ``microgpt parity``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.cli import main
from backends.parity import (CHECKS, TOLERANCES, ParityReport, Tol, compare, init_std_row, run_parity)
from common.config import ModelConfig
from common.params import init_weights, param_layout

REPO = Path(__file__).resolve().parents[1]
TOL = Tol(1e-12, 1e-8, "test")


# -- the arithmetic (numpy only) ---------------------------------------------------------------


def test_identical_tensors_have_zero_error():
    a = {"w": np.arange(6.0).reshape(2, 3), "b": np.zeros(3)}
    row = compare("q", a, {k: v.copy() for k, v in a.items()}, TOL)
    assert row.passed and row.max_abs == 0 and row.max_rel == 0 and row.worst == ""


def test_relative_error_is_normwise_per_tensor():
    b = np.array([2.0, -1.0, 1e-9])
    a = b.copy()
    a[2] += 1e-9  # 100% off elementwise, tiny next to the tensor's scale
    row = compare("q", {"t": b}, {"t": a}, Tol(0.0, 1e-8, "test"))
    assert row.max_abs == pytest.approx(1e-9)
    assert row.max_rel == pytest.approx(1e-9 / 2.0)  # max|a-b| / max|b|
    assert row.passed  # 1e-9 <= 1e-8 * 2
    a[0] += 1e-7
    assert not compare("q", {"t": b}, {"t": a}, Tol(0.0, 1e-8, "test")).passed


def test_worst_tensor_is_named_and_nan_fails():
    ref = {"small": np.ones(3), "big": np.ones(3)}
    cand = {"small": np.ones(3) + 1e-13, "big": np.array([1.0, 1.0, 1.1])}
    row = compare("q", ref, cand, TOL)
    assert not row.passed and row.worst == "big" and row.max_abs == pytest.approx(0.1)
    assert "big" in row.describe()
    row = compare("q", {"t": np.ones(2)}, {"t": np.array([1.0, np.nan])}, TOL)
    assert not row.passed and math.isinf(row.max_abs)


def test_shape_mismatch_and_missing_tensors_fail():
    assert not compare("q", {"t": np.ones(3)}, {"t": np.ones((3, 1))}, TOL).passed
    row = compare("q", {"t": np.ones(3), "u": np.ones(2)}, {"t": np.ones(3)}, TOL)
    assert not row.passed and "u" in row.note


def test_init_std_row_accepts_canonical_init_and_names_a_wrong_std():
    cfg = ModelConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
    weights = init_weights(cfg, seed=3)
    assert init_std_row("init", weights, cfg).passed
    bad = dict(weights)
    name = "transformer.h.1.mlp.c_proj.weight"
    bad[name] = bad[name] * math.sqrt(2 * cfg.n_layer)  # the unscaled GPT-2 projection init
    row = init_std_row("init", bad, cfg)
    assert not row.passed and row.worst == name
    bad = dict(weights)
    bad["transformer.h.0.ln_1.bias"] = bad["transformer.h.0.ln_1.bias"] + 1e-3  # biases start at exactly 0
    assert not init_std_row("init", bad, cfg).passed


def test_tolerances_are_the_issues_and_each_has_a_reason():
    f64, f32 = TOLERANCES["float64"], TOLERANCES["float32"]
    assert f64["logits"].atol == f64["loss"].atol == 1e-10
    assert (f64["grads"].atol, f64["grads"].rtol) == (1e-12, 1e-8)
    assert f64["adam_params"].atol == 1e-12
    assert f64["loss_curve"].atol == 1e-9
    assert f32["logits"].atol == f32["loss"].atol == 1e-5
    assert f32["grads"].rtol == 1e-5
    assert f32["loss_curve"].atol == 1e-4
    assert set(f64) == set(f32)
    assert all(len(t.reason) > 20 for table in TOLERANCES.values() for t in table.values())


# -- torch against torch: the machinery compares like with like --------------------------------


def test_torch_against_itself_is_exact():
    report = run_parity("float64", "tiny", seed=1, reference="torch", candidate="torch", steps=5,
                        checks=["forward", "adam", "run", "greedy", "sampling", "crossload", "submodules"],
                        device="cpu")
    assert report.passed, report.format_table()
    exact = [r for r in report.rows if r.max_abs == 0]
    assert len(exact) == len(report.rows), report.format_table()


# -- torch against jax -------------------------------------------------------------------------

pytest.importorskip("jax")
pytest.importorskip("torch")

# every comparison the issue lists, by the row that reports it
EXPECTED_ROWS = [
    "logits", "loss", "grads",  # 1, 2
    "adam step: params (decayed)", "adam step: params (not decayed)", "adam step: exp_avg",
    "adam step: exp_avg_sq", "adam step: step count",  # 3
    "50-step loss curve", "50-step final params", "lr applied in the 50-step run",  # 4
    "lr schedule (get_lr)",  # 5
    "estimate_loss",  # 6
    "greedy tokens",  # 7
    "sampled tokens (T=0.8, top-k=10)",  # 8
    "cross-load torch→jax: logits", "cross-load torch→jax: resumed step",
    "cross-load jax→torch: logits", "cross-load jax→torch: resumed step",  # 9
    "sub: embeddings", "sub: layernorms", "sub: h.0.attn", "sub: h.0.mlp", "sub: h.0 (block)",
    "sub: h.1.attn", "sub: h.1.mlp", "sub: h.1 (block)", "sub: ln_f + lm_head",  # 10
    "native init std (torch)", "native init std (jax)",
]


@pytest.fixture(scope="module")
def float64_report() -> tuple[ParityReport, bool, bool]:
    import jax

    before = jax.config.jax_enable_x64
    report = run_parity("float64", "tiny", seed=0, device="cpu")
    print(report.format_table())
    return report, before, jax.config.jax_enable_x64


@pytest.mark.slow
def test_float64_suite_passes(float64_report):
    report, _, _ = float64_report
    assert [r.quantity for r in report.rows] == EXPECTED_ROWS
    assert report.passed, "\n".join(r.describe() for r in report.failed())


@pytest.mark.slow
def test_float64_agrees_to_round_off(float64_report):
    """Not just within tolerance: far inside it, so float64 really is float64 on both sides."""
    report, _, _ = float64_report
    for q in ("logits", "loss", "grads", "50-step loss curve", "sub: ln_f + lm_head"):
        assert report.row(q).max_abs < 1e-13, report.row(q).describe()
    for q in ("greedy tokens", "sampled tokens (T=0.8, top-k=10)"):
        assert "48/48 tokens compared" in report.row(q).note  # no near-ties skipped


@pytest.mark.slow
def test_float64_leaves_jax_x64_as_it_was(float64_report):
    _, before, after = float64_report
    assert before == after


@pytest.mark.slow
def test_cli_float32_prints_the_table_writes_json_and_exits_0(tmp_path, capsys):
    out = tmp_path / "parity.json"
    code = main(["parity", "--dtype", "float32", "--device", "cpu", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "quantity" in stdout and "max abs err" in stdout and "tolerance" in stdout
    assert "FAIL" not in stdout and f"{len(EXPECTED_ROWS)}/{len(EXPECTED_ROWS)} quantities" in stdout
    report = json.loads(out.read_text())
    assert report["passed"] and report["dtype"] == "float32" and report["reference"] == "torch"
    assert [r["quantity"] for r in report["rows"]] == EXPECTED_ROWS
    assert all(r["passed"] for r in report["rows"])
    assert set(report["rows"][2]["details"]) == {s.name for s in param_layout(
        ModelConfig(**report["model_config"]))}  # per-tensor errors for every gradient


@pytest.mark.parametrize("args, words", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--dtype", "float16"], "unknown parity dtype 'float16'"),
    (["--dtype", "bfloat16", "--against", "backend"], "bfloat16 is compared against float64"),
    (["--dtype", "float64", "--against", "float64"], "--against float64 checks bfloat16 or float32"),
    (["--dtype", "bfloat16", "--checks", "forward"], "leave it out with --against float64"),
    (["--checks", "forward,bogus"], "unknown check(s) bogus"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--seed", "x"], "invalid int value"),
    (["--checks", ""], "no check was named"),
    (["--checks", ","], "no check was named"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, words, capsys):
    code = main(["parity", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_cli_parser_imports_no_framework():
    code = ("import sys; from backends.cli import build_parser;"
            "args = build_parser().parse_args(['parity', '--dtype', 'float32']); assert args.func;"
            "assert not {'torch','jax','flax','optax'} & set(sys.modules), sorted(set(sys.modules) & {'torch','jax'})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_readme_shows_the_tolerance_table_the_code_renders():
    from backends.parity.tolerances import markdown_table

    text = (REPO / "backends/parity/README.md").read_text(encoding="utf-8")
    shown = text.split("<!-- tolerances:begin -->\n", 1)[1].split("<!-- tolerances:end -->", 1)[0]
    assert shown == markdown_table()


@pytest.mark.slow
def test_checks_give_the_same_rows_in_any_order():
    """Each check asks the session for the state it starts from: running them in another order
    (after the run, after a cross-load, ...) changes no row, to the last bit."""
    from backends.parity import Session, make_configs, running
    from backends.parity.checks import CHECKS as by_name

    mc, tc = make_configs("tiny", "float64", 0, device="cpu")

    def rows(order):
        session = Session("torch", "jax", mc, tc, "float64", seed=0, steps=3)
        with running(session):
            found = {name: by_name[name](session) for name in order}
        return {r.quantity: (r.max_abs, r.max_rel, r.worst) for name in sorted(found) for r in found[name]}

    first = rows(["forward", "adam", "eval", "crossload"])
    assert first == rows(["crossload", "eval", "adam", "forward"])
    assert len(first) == 3 + 5 + 1 + 4


def test_every_check_has_a_name_on_the_command_line():
    assert CHECKS == ("forward", "adam", "run", "schedule", "eval", "greedy", "sampling", "crossload",
                      "submodules", "init")


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_attention_weights_are_each_blocks_causal_softmax_and_leave_the_trainer_as_it_was(
        name, model_config, train_config, batch):
    """What ``--against float64`` compares as the attention weights: per block, (B, nh, T, T),
    rows summing to 1, nothing above the diagonal, equal across backends in float64; the
    Trainer's forward (fused attention, no capture) and its next step are as before."""
    import dataclasses

    from backends import load_backend, process
    from backends.parity.hooks import HOOKS

    mod = load_backend(name)
    tc = dataclasses.replace(train_config, dtype="float64", attention="fused")
    w = init_weights(model_config, 0, dtype=np.float64)
    x, y = batch()
    with process.settings(mod, tc):
        trainer = mod.Trainer(model_config, tc, w)
        before = trainer.logits(x)
        weights = HOOKS[name]().attention_weights(trainer, x)
        assert np.array_equal(trainer.logits(x), before)
        assert math.isfinite(float(trainer.step(x, y)))
    with process.settings(load_backend("torch"), tc):  # the other side: torch's float64 weights
        truth = HOOKS["torch"]().attention_weights(load_backend("torch").Trainer(model_config, tc, w), x)
    assert list(weights) == [f"h.{i}" for i in range(model_config.n_layer)]
    for block, a in weights.items():
        assert a.shape == (4, model_config.n_head, 16, 16)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)
        assert not np.triu(a, 1).any()  # position t attends to 0..t only
        np.testing.assert_allclose(a, truth[block], atol=1e-13)
        assert a.std() > 0  # not a constant standing in for the capture


def test_parity_switches_the_presets_dropout_off_and_says_so():
    """Each framework draws its own dropout masks: a parity run at shakespeare-char (dropout 0.2)
    would compare two random masks. Off by default, an explicit override kept."""
    from backends.parity import make_configs
    from common.config import to_dict

    mc, tc = make_configs("shakespeare-char", "float32", 0)
    assert mc.dropout == 0.0
    assert make_configs("shakespeare-char", "float32", 0, model_overrides={"dropout": 0.1})[0].dropout == 0.1
    header = ParityReport([], "float32", "shakespeare-char", 0, "torch", "jax", 1, to_dict(mc), to_dict(tc)).format_table()
    assert "dropout 0.2 off" in header.splitlines()[0]
    tiny = ParityReport([], "float32", "tiny", 0, "torch", "jax", 1, to_dict(make_configs("tiny", "float32", 0)[0]), {})
    assert "dropout" not in tiny.format_table().splitlines()[0]
