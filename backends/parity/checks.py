"""The checks: one function each, ``check(session) -> rows``. :data:`CHECKS` lists them in the
order the report shows them; each starts from a state it asks the session for, so they are
independent of each other and of the order they run in.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from backends.parity.report import Row, compare, init_std_row, scalars
from backends.parity.session import Session
from backends.parity.tolerances import EXACT, GREEDY_GAP, LN_STRESS_MEAN, SAMPLING_MARGIN
from common.params import param_layout


def forward(s: Session) -> list[Row]:
    """Eval-mode logits, the loss, and the gradient of every parameter, at the canonical init."""
    ref, cand = s.fresh()
    x, y = s.batch()
    rows = [compare("logits", {"logits": ref.logits(x)}, {"logits": cand.logits(x)}, s.tol["logits"])]
    (loss_r, grads_r), (loss_c, grads_c) = ref.loss_and_grads(x, y), cand.loss_and_grads(x, y)
    rows.append(compare("loss", {"loss": loss_r}, {"loss": loss_c}, s.tol["loss"]))
    rows.append(compare("grads", grads_r, grads_c, s.tol["grads"], note=f"{len(grads_r)} tensors"))
    return rows


def adam(s: Session) -> list[Row]:
    """One AdamW step from the canonical init: parameters with and without decay, both moments."""
    ref, cand = s.fresh()
    x, y = s.batch()
    ref.step(x, y)
    cand.step(x, y)
    w_r, w_c = ref.weights(), cand.weights()
    decayed = {p.name for p in param_layout(s.mc) if p.decay}
    rows = []
    for label, names in (("decayed", decayed), ("not decayed", set(w_r) - decayed)):
        rows.append(compare(f"adam step: params ({label})", {n: w_r[n] for n in w_r if n in names},
                            {n: w_c[n] for n in w_c if n in names}, s.tol["adam_params"],
                            note=f"{len(names)} tensors"))
    s_r, s_c = ref.optimizer_state(), cand.optimizer_state()
    for key in ("exp_avg", "exp_avg_sq"):
        rows.append(compare(f"adam step: {key}", {k: v for k, v in s_r.items() if k.startswith(key + "/")},
                            {k: v for k, v in s_c.items() if k.startswith(key + "/")}, s.tol["adam_moments"]))
    rows.append(compare("adam step: step count", {"step": s_r["step"]}, {"step": s_c["step"]}, EXACT))
    return rows


def run(s: Session) -> list[Row]:
    """The shared training run: the loss at every step, the final parameters, the lr applied."""
    result = s.run()
    return [
        compare(f"{s.steps}-step loss curve", scalars(result.losses[0], "step"), scalars(result.losses[1], "step"),
                s.tol["loss_curve"]),
        compare(f"{s.steps}-step final params", result.weights[0], result.weights[1], s.tol["final_params"]),
        compare(f"lr applied in the {s.steps}-step run", scalars(result.lrs[0], "step"),
                scalars(result.lrs[1], "step"), s.tol["lr_applied"], note="inferred from each AdamW update"),
    ]


def schedule(s: Session) -> list[Row]:
    """``get_lr`` of each backend at every step of the preset's full run, and 10 beyond."""
    n = max(s.tc.max_iters, s.tc.lr_decay_iters) + 10
    ref_mod, cand_mod = s.mods
    return [compare("lr schedule (get_lr)", scalars((ref_mod.get_lr(i, s.tc) for i in range(n)), "step"),
                    scalars((cand_mod.get_lr(i, s.tc) for i in range(n)), "step"), s.tol["lr"], note=f"{n} steps")]


def eval_(s: Session) -> list[Row]:
    """``estimate_loss()`` on the same evaluation batches, with the trained weights."""
    ref, cand = s.loaded(s.run().weights[0])
    est_r = ref.estimate_loss(s.sampler(200).get_batch, s.tc.eval_iters)
    est_c = cand.estimate_loss(s.sampler(200).get_batch, s.tc.eval_iters)
    return [compare("estimate_loss", est_r, est_c, s.tol["estimate_loss"], note=f"{s.tc.eval_iters} batches/split")]


def _prompts(s: Session) -> np.ndarray:
    x, _ = s.sampler(300).get_batch("val")
    return x[:2, :4]


def _reference_logits(s: Session, ref, seq: np.ndarray, start: int) -> np.ndarray:
    """The reference's next-token logits at every generated position: (n_new, B, V)."""
    out = []
    for t in range(start, seq.shape[1]):
        ctx = seq[:, :t][:, -s.mc.block_size:]
        out.append(np.asarray(ref.logits(ctx), dtype=np.float64)[:, -1, :])
    return np.stack(out)


def _compare_tokens(quantity: str, seq_r, seq_c, start: int, ambiguous: np.ndarray) -> Row:
    """Walk each row until the sequences part: a split at a confident position is a mismatch;
    a split at a near-tie ends the comparison of that row (the contexts differ from then on)."""
    mismatches, compared, ties, first = 0, 0, 0, ""
    for b in range(seq_r.shape[0]):
        for i in range(seq_r.shape[1] - start):
            if seq_r[b, start + i] == seq_c[b, start + i]:
                compared += 1
                continue
            if ambiguous[i, b]:
                ties += 1
            else:
                mismatches += 1
                compared += 1
                first = first or f"row {b} token {i}: {seq_r[b, start + i]} vs {seq_c[b, start + i]}"
            break
    total = seq_r.shape[0] * (seq_r.shape[1] - start)
    note = f"{compared}/{total} tokens compared" + (f", {ties} row(s) stopped at a near-tie" if ties else "")
    return Row(quantity, float(mismatches), mismatches / max(compared, 1), "0 mismatches", mismatches == 0,
               first, note, {"reference": seq_r.tolist(), "candidate": seq_c.tolist()})


def greedy(s: Session) -> list[Row]:
    """Greedy generation past ``block_size`` from the trained weights: the same tokens."""
    ref, cand = s.loaded(s.run().weights[0])
    prompts = _prompts(s)
    n = s.mc.block_size + 8  # past block_size: the context gets cropped
    seq_r = np.asarray(ref.generate(prompts, n, temperature=0))
    seq_c = np.asarray(cand.generate(prompts, n, temperature=0))
    top2 = np.sort(_reference_logits(s, ref, seq_r, prompts.shape[1]), axis=-1)[..., -2:]
    ambiguous = (top2[..., 1] - top2[..., 0]) <= GREEDY_GAP
    return [_compare_tokens("greedy tokens", seq_r, seq_c, prompts.shape[1], ambiguous)]


def sampling(s: Session) -> list[Row]:
    """Temperature and top-k sampling fed the same uniforms: the same tokens."""
    ref, cand = s.loaded(s.run().weights[0])
    prompts = _prompts(s)
    n, temperature, top_k = s.mc.block_size + 8, 0.8, 10
    uniforms = np.random.Generator(np.random.PCG64(s.seed + 400)).random((n, prompts.shape[0]))
    seq_r = np.asarray(ref.generate(prompts, n, temperature=temperature, top_k=top_k, uniforms=uniforms))
    seq_c = np.asarray(cand.generate(prompts, n, temperature=temperature, top_k=top_k, uniforms=uniforms))
    # near-ties: a uniform within the margin of a CDF step, or a tie at the top-k cut
    logits = _reference_logits(s, ref, seq_r, prompts.shape[1]) / temperature
    k = min(top_k, logits.shape[-1])
    ordered = np.sort(logits, axis=-1)[..., ::-1]
    masked = np.where(logits < ordered[..., k - 1:k], -np.inf, logits)
    probs = np.exp(masked - masked.max(-1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(-1, keepdims=True), axis=-1)
    margin = SAMPLING_MARGIN[s.dtype]
    ambiguous = (np.abs(cdf - uniforms[..., None]) <= margin).any(-1)
    if k < logits.shape[-1]:
        ambiguous |= (ordered[..., k - 1] - ordered[..., k]) <= margin
    return [_compare_tokens(f"sampled tokens (T={temperature}, top-k={top_k})", seq_r, seq_c,
                            prompts.shape[1], ambiguous)]


def crossload(s: Session) -> list[Row]:
    """Each side's trained weights and AdamW state through ``common.checkpoint`` into the other:
    the same logits, and the same next (resumed) step."""
    from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from common.tokenizer import CharTokenizer

    result, trainers = s.run(), s.pair()
    tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(s.mc.vocab_size)])
    x, y = s.batch(500)
    rows = []
    with tempfile.TemporaryDirectory(prefix="microgpt-parity-") as tmp:
        for writer in (0, 1):
            reader = 1 - writer
            w, r = trainers[writer], trainers[reader]
            w.load_weights(result.weights[writer])
            w.load_optimizer_state(result.state[writer])
            path = Path(tmp) / s.label(writer)
            save_checkpoint(path, Checkpoint(s.mc, s.tc, tokenizer, result.weights[writer],
                                             optimizer=result.state[writer], step=s.steps, backend=s.label(writer)))
            ckpt = load_checkpoint(path)
            r.load_weights(ckpt.weights)
            arrow = f"{s.label(writer)}→{s.label(reader)}"
            rows.append(compare(f"cross-load {arrow}: logits", {"logits": w.logits(x)}, {"logits": r.logits(x)},
                                s.tol["crossload"]))
            r.load_optimizer_state(ckpt.optimizer)  # resume: one step on both from the writer's state
            w.step(x, y)
            r.step(x, y)
            rows.append(compare(f"cross-load {arrow}: resumed step", w.weights(), r.weights(), s.tol["adam_params"]))
    return rows


def submodules(s: Session) -> list[Row]:
    """Every layer on its own, with non-trivial norms and biases, so that a failure names it."""
    rng = np.random.Generator(np.random.PCG64(s.seed + 600))
    weights = {}
    for spec in param_layout(s.mc):
        w = s.w0[spec.name]
        if spec.kind == "norm":
            w = 1.0 + 0.1 * rng.standard_normal(spec.shape)
        elif spec.kind == "bias":
            w = 0.1 * rng.standard_normal(spec.shape)
        weights[spec.name] = np.asarray(w, dtype=s.np_dtype)
    ref, cand = s.loaded(weights)
    subs_r, subs_c = s.hooks[0].submodules(ref), s.hooks[1].submodules(cand)
    idx, _ = s.batch(700)
    x = rng.standard_normal((idx.shape[0], idx.shape[1], s.mc.n_embd)).astype(s.np_dtype)
    stress = (LN_STRESS_MEAN[s.dtype] + rng.standard_normal(x.shape)).astype(s.np_dtype)
    tol = s.tol["submodule"]

    def one(name, inp):
        return {name: subs_r[name](inp)}, {name: subs_c[name](inp)}

    rows = [compare("sub: embeddings", *one("embeddings", idx), tol)]
    norms_r, norms_c = {}, {}
    for name in [n for n in subs_r if n.endswith(("ln_1", "ln_2")) or n == "ln_f"]:
        for label, inp in (("", x), (f" (mean {LN_STRESS_MEAN[s.dtype]:g})", stress)):
            norms_r[name + label], norms_c[name + label] = subs_r[name](inp), subs_c[name](inp)
    rows.append(compare("sub: layernorms", norms_r, norms_c, tol, note=f"{len(norms_r)} cases"))
    for i in range(s.mc.n_layer):
        for part in ("attn", "mlp"):
            rows.append(compare(f"sub: h.{i}.{part}", *one(f"h.{i}.{part}", x), tol))
        rows.append(compare(f"sub: h.{i} (block)", *one(f"h.{i}", x), tol))
    rows.append(compare("sub: ln_f + lm_head", *one("ln_f+lm_head", x), tol))
    return rows


def init(s: Session) -> list[Row]:
    """Each backend's native initialisation against nanoGPT's stds (shared weights would hide it)."""
    return [init_std_row(f"native init std ({s.label(side)})", s.hooks[side].native_weights(s.mc, s.seed), s.mc)
            for side in (0, 1)]


CHECKS: dict[str, Callable[[Session], list[Row]]] = {
    "forward": forward, "adam": adam, "run": run, "schedule": schedule, "eval": eval_, "greedy": greedy,
    "sampling": sampling, "crossload": crossload, "submodules": submodules, "init": init,
}
