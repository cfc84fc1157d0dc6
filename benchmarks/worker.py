"""One benchmark run in a fresh process: ``python -m benchmarks.worker < spec.json > result.json``.

The parent (``benchmarks.run``) starts one worker per backend, configuration and repeat,
so the thread pools of numpy, torch and XLA never share a process. The spec arrives as
a JSON file named by ``MICROGPT_BENCH_SPEC`` (the parent's way: torch's ranks under torchrun
share no stdin), or as JSON on stdin when that is unset; the result leaves as one JSON object
on stdout (anything else the frameworks print is sent to stderr). A problem the user can fix comes back as
``{"status": "user_error", "error": "..."}``; a crash as ``{"status": "error", ...}``.

The phases, in order (only the last two are timed as steady state):

1. set-up: corpus, configs, ``Trainer``, the device's matmul peak, every batch on the device;
2. cold: ``trainer.compile`` (JAX: AOT lower + compile), then the first step, waited for;
3. warmup: ``warmup - 1`` steps on fresh batches, then one more on the first step's batch,
   so the sanity gate can compare the loss on the same batch before and after: the initial
   loss must be near ln(vocab) and must have fallen; otherwise the run is "invalid", untimed;
4. latency: ``steps`` steps, each waited for before the clock stops;
5. throughput: ``steps`` more steps queued back to back, one wait at the end;
   (a short matmul probe just before 4 and just after 5: the peak available meanwhile;
   the compilation and peak-memory counts cover 4 and 5 alone)
6. then, outside the timed run: an optional profile.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import traceback
from typing import Any

# Before any framework import: JAX must not grab most of a GPU's memory up front, and the
# harness says so in its environment report (the parent sets it too).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

from benchmarks import peaks, sysinfo, timing  # noqa: E402
from common import matmul_rate  # noqa: E402
from common import config as config_mod  # noqa: E402
from common.batches import BatchSampler, synthetic_tokens  # noqa: E402
from common.corpus import load_corpus  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.tokenizer import CharTokenizer  # noqa: E402

SYNTHETIC_TOKENS = 1_000_000
INITIAL_LOSS_TOLERANCE = 0.5  # nats around ln(vocab) that an untrained model's loss may stray
PROBE_BUDGET_S = 0.5  # per matmul size, for the probes just before and after the timed steps
RANK = int(os.environ.get("RANK", "0"))  # this torch rank under torchrun (--devices N); 0 otherwise
SYNTHETIC_RISE_TOLERANCE = 0.05  # random tokens cannot be learned; the loss must merely not rise


def load_tokens(data: dict[str, Any]) -> tuple[dict[str, np.ndarray], int]:
    """Train/val token ids and the vocabulary size, from a corpus file or synthetic."""
    if data["kind"] == "synthetic":
        vocab = int(data["vocab_size"])
        ids = synthetic_tokens(SYNTHETIC_TOKENS, vocab, seed=int(data.get("seed", 0)))
        n = int(len(ids) * 0.9)
        return {"train": ids[:n], "val": ids[n:]}, vocab
    from common.corpus import read_text

    text = read_text(data["path"])
    tokenizer = CharTokenizer.from_text(text)
    corpus = load_corpus(data["path"], tokenizer)
    return {"train": corpus.train, "val": corpus.val}, tokenizer.vocab_size


class _Progress:
    """A tqdm bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, desc: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_description(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sanity_gate(initial: float, again: float, warmup_losses: list[float], vocab: int, synthetic: bool) -> dict[str, Any]:
    """Is this a model that trains? Checked before anything is timed."""
    expected = math.log(vocab)
    problems = []
    if not all(math.isfinite(v) for v in [initial, again, *warmup_losses]):
        problems.append("a loss is not finite")
    if not abs(initial - expected) <= INITIAL_LOSS_TOLERANCE:
        problems.append(f"initial loss {initial:.4f} is not within {INITIAL_LOSS_TOLERANCE} of ln({vocab}) = {expected:.4f}")
    if synthetic:
        rule = f"loss on the first batch must not rise by more than {SYNTHETIC_RISE_TOLERANCE} (random tokens)"
        if not again <= initial + SYNTHETIC_RISE_TOLERANCE:
            problems.append(f"loss on the first batch rose from {initial:.4f} to {again:.4f} over the warmup")
    else:
        rule = "loss on the first batch must fall over the warmup"
        if not again < initial:
            problems.append(f"loss on the first batch did not fall over the warmup ({initial:.4f} -> {again:.4f})")
    return {"valid": not problems, "problems": problems, "initial_loss": initial, "expected_initial_loss": expected,
            "loss_after_warmup_same_batch": again, "warmup_losses": warmup_losses, "rule": rule,
            "initial_tolerance": INITIAL_LOSS_TOLERANCE}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from backends import load_backend, process

    backend = spec["backend"]
    t_start = time.perf_counter()
    result: dict[str, Any] = {"backend": backend, "status": "ok", "loadavg_start": sysinfo.loadavg()}

    splits, vocab = load_tokens(spec["data"])
    model_config, train_config = config_mod.build_configs(spec["preset"], spec.get("overrides") or {}, vocab)
    if spec["data"]["kind"] != "synthetic":
        for split, ids in splits.items():
            if len(ids) < model_config.block_size + 1:
                raise UserError(f"the {split} split of the corpus has {len(ids)} tokens, fewer than "
                                f"block_size + 1 = {model_config.block_size + 1}")
    result["config"] = {"model": config_mod.to_dict(model_config), "train": config_mod.to_dict(train_config)}

    train = load_backend(backend)
    bench = importlib.import_module(f"backends.{backend}.bench")
    # precision, seeds and 64-bit mode, as `microgpt train` makes them (the allocator: main, at the start)
    with process.settings(train, train_config):
        return _measure(spec, train, bench, model_config, train_config, splits, vocab, result, t_start)


def _measure(spec, train, bench, model_config, train_config, splits, vocab, result, t_start) -> dict[str, Any]:
    from backends import process

    backend = spec["backend"]
    steps, warmup = int(spec["steps"]), int(spec["warmup"])
    progress = bool(spec.get("progress"))
    label = spec.get("label", backend)
    t0 = time.perf_counter()
    trainer = train.Trainer(model_config, train_config)
    result["cold"] = {"trainer_init_s": time.perf_counter() - t0,
                      "framework_import_and_setup_s": t0 - t_start}
    result["environment"] = bench.environment(trainer)
    result["process"] = process.speed_settings(train, trainer.device, trainer.dtype)  # compared across lanes
    if RANK == 0:  # many torch ranks: only rank 0 reports, so only rank 0 probes (the others would compete)
        # every engine this framework brings (the machine's peak is the best of all installed), its own first
        result["engine_peaks"] = bench.engine_peaks(trainer.device, bool(spec.get("fresh_peak")))
        result["matmul_peak"] = result["engine_peaks"][0]
        # the peak probe's sizes, timed again just before and just after the timed steps
        sizes = [int(n) for n in result["matmul_peak"].get("sizes") or ()] or [int(result["matmul_peak"].get("n") or 1024)]

    def probe_matmul() -> dict[int, dict[str, float]]:
        if RANK:
            return {}
        return matmul_rate.probe_rates(lambda n: bench.matmul_probe(trainer.device, "float32", n), sizes, PROBE_BUDGET_S)

    # Every batch is drawn and put on the device before anything is timed.
    sampler = BatchSampler(splits, train_config.batch_size, model_config.block_size, int(spec.get("seed", 1337)))
    host_batches = [sampler.get_batch("train") for _ in range(warmup + 2 * steps)]
    batches = [(trainer.to_device(x), trainer.to_device(y)) for x, y in host_batches]
    bench.ready([a for pair in batches for a in pair])
    first, warm = batches[0], batches[1:warmup]
    timed_latency, timed_throughput = batches[warmup:warmup + steps], batches[warmup + steps:]

    bar = _Progress(progress, 1 + warmup + 2 * steps, f"{label} warmup")
    try:
        # -- cold costs ------------------------------------------------------------------------
        compiles_before = bench.compile_stats()
        compile_wall, compile_info = timing.timed(lambda: trainer.compile(*first), lambda _: None)
        first_s, loss = timing.timed(lambda: trainer.step(*first), trainer.wait)
        initial_loss = float(loss)
        compiles_first = bench.compile_stats()
        bar.update(1)
        # -- warmup and the sanity gate -----------------------------------------------------
        warm_losses = []
        for x, y in warm:
            loss = trainer.step(x, y)
            trainer.wait(loss)
            warm_losses.append(loss)
            bar.update(1)
        warm_losses = [float(v) for v in warm_losses]
        loss = trainer.step(*first)  # the last warmup step: the first batch again
        trainer.wait(loss)
        again = float(loss)
        bar.update(1)
        gate = sanity_gate(initial_loss, again, warm_losses, vocab, spec["data"]["kind"] == "synthetic")
        result["sanity"] = gate
        cold = result["cold"]
        cold.update({"compile_call_s": compile_wall, "first_step_s": first_s, **{k: float(v) for k, v in compile_info.items()}})
        cold["compilations_first_step"] = compiles_first["compilations"] - compiles_before["compilations"]
        cold["compile_s"] = _compile_seconds(compile_info, compiles_before, compiles_first)
        cold["compile_source"] = ("trainer.compile: lower_s + compile_s (AOT)" if compile_info
                                  else compiles_first.get("source"))
        if not gate["valid"]:
            result["status"] = "invalid"
            result["error"] = "; ".join(gate["problems"])
            return result
        compiles_warm = bench.compile_stats()
        cold["compilations_warmup"] = compiles_warm["compilations"] - compiles_first["compilations"]

        # -- steady state, between two matmul probes ---------------------------------------------
        # the compilation and peak-memory counts cover the timed steps alone, not the probes
        probe_before = probe_matmul()
        compiles_timed = bench.compile_stats()
        reset = bench.reset_peak_memory(trainer)
        bar.set_description(f"{label} timed")
        times, loss = timing.latency(trainer.step, trainer.wait, timed_latency, after_each=bar.update)
        total, loss = timing.throughput(trainer.step, trainer.wait, timed_throughput)
        bar.update(len(timed_throughput))
        compiles_after = bench.compile_stats()
        result["memory"] = dict(bench.peak_memory(trainer), host_rss_at_start_bytes=reset.get("rss_at_reset_bytes"))
        probe_after = probe_matmul()
    finally:
        bar.close()
    if RANK == 0:
        result["matmul_during_run"] = peaks.during_run(probe_before, probe_after)
    result["latency"] = {"times_s": times}
    result["throughput"] = {"steps": len(timed_throughput), "total_s": total, "step_s": total / len(timed_throughput)}
    result["final_loss"] = float(loss)
    result["final_iter"] = int(trainer.iter_num)
    result["recompilations"] = compiles_after["compilations"] - compiles_timed["compilations"]
    result["compile_stats"] = compiles_after
    result["loadavg_end"] = sysinfo.loadavg()

    # -- outside the timed run --------------------------------------------------------------------
    if spec.get("profile_dir"):
        if RANK:  # torch ranks all trace (their collectives pair up); rank 0 reports
            spec = spec | {"profile_dir": os.path.join(spec["profile_dir"], f"rank{RANK}")}
        path = bench.profile(trainer, *first, int(spec.get("profile_steps", 3)), spec["profile_dir"])
        result["profile"] = {"trace": path, "steps": int(spec.get("profile_steps", 3))}
        try:
            from benchmarks import attribution, profiles

            result["profile"]["summary"] = profiles.summarize_dir(spec["profile_dir"], backend)
            events = profiles.load_events(profiles.find_trace(spec["profile_dir"], backend))
            result["profile"]["categories"] = attribution.categories_of_trace(events, bench.op_classifier(trainer))
        except Exception as exc:  # a summary is a convenience; the trace is what counts
            result["profile"]["summary_error"] = repr(exc)
    result["wall_s"] = time.perf_counter() - t_start
    return result


def _compile_seconds(info: dict, before: dict, after: dict) -> float | None:
    """JAX: lower + compile from the AOT call. torch.compile: the seconds dynamo reports for
    the graphs it compiled during the first step. Eager torch: 0."""
    if info:
        return float(sum(v for k, v in info.items() if k in ("lower_s", "compile_s")))
    if before.get("compile_s") is None or after.get("compile_s") is None:
        return None
    return float(after["compile_s"] - before["compile_s"])


def engine_peaks(spec: dict[str, Any]) -> dict[str, Any]:
    """Task ``engine_peaks``: probe (or read from the cache) the matmul engines of one framework."""
    from backends import load_backend

    train = load_backend(spec["backend"])
    bench = importlib.import_module(f"backends.{spec['backend']}.bench")
    peaks = bench.engine_peaks(train.select_device(spec.get("device", "auto")), bool(spec.get("fresh")))
    return {"status": "ok", "engine_peaks": peaks}


def main() -> int:
    # Frameworks may print to stdout; keep the real stdout for the one JSON result.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(os.dup(2), "w", buffering=1)
    try:
        from backends import process

        process.start()  # the allocator the parent chose for this lane (MICROGPT_MALLOC, LD_PRELOAD)
        spec_file = os.environ.get("MICROGPT_BENCH_SPEC")  # benchmarks/parallel.py: torch ranks share no stdin
        spec = json.loads(open(spec_file).read() if spec_file else sys.stdin.read())
        if spec.get("task") == "sample":  # python -m benchmarks.run --task sample
            from benchmarks import sampling

            result = sampling.run(spec)
        else:
            result = engine_peaks(spec) if spec.get("task") == "engine_peaks" else run(spec)
    except UserError as exc:
        result = {"status": "user_error", "error": str(exc)}
    except KeyboardInterrupt:
        result = {"status": "error", "error": "interrupted"}
    except Exception as exc:  # reported to the parent, which decides what to show
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with os.fdopen(result_fd, "w") as out:
        if RANK:  # many torch ranks: rank 0 reports
            return 0
        json.dump(result, out, allow_nan=True)
        out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
