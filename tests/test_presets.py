"""The ``baby`` and ``shakespeare-char`` presets are nanoGPT's, key by key.

nanoGPT's values are written down here as data: ``train.py``'s defaults, overridden by
``config/train_shakespeare_char.py``, overridden (for ``baby``) by the CPU command of its README.
Every key both projects have must agree; the keys only nanoGPT has are listed with what
MicroGPT does instead (the README's table says the same)."""

from __future__ import annotations

import pytest

from common.config import build_configs, model_keys, to_dict, train_keys

# nanoGPT train.py, "default config values designed to train a gpt2 (124M) on OpenWebText"
TRAIN_PY_DEFAULTS = dict(
    out_dir="out", eval_interval=2000, log_interval=1, eval_iters=200, eval_only=False,
    always_save_checkpoint=True, init_from="scratch", wandb_log=False, wandb_project="owt", wandb_run_name="gpt2",
    dataset="openwebtext",
    gradient_accumulation_steps=5 * 8, batch_size=12, block_size=1024, n_layer=12, n_head=12, n_embd=768,
    dropout=0.0, bias=False, learning_rate=6e-4, max_iters=600000, weight_decay=1e-1, beta1=0.9, beta2=0.95,
    grad_clip=1.0, decay_lr=True, warmup_iters=2000, lr_decay_iters=600000, min_lr=6e-5, backend="nccl",
    device="cuda", dtype="bfloat16", compile=True,
)
# nanoGPT config/train_shakespeare_char.py
SHAKESPEARE_CHAR = dict(
    out_dir="out-shakespeare-char", eval_interval=250, eval_iters=200, log_interval=10,
    always_save_checkpoint=False, wandb_log=False, wandb_project="shakespeare-char", wandb_run_name="mini-gpt",
    dataset="shakespeare_char", gradient_accumulation_steps=1,
    batch_size=64, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, learning_rate=1e-3,
    max_iters=5000, lr_decay_iters=5000, min_lr=1e-4, beta2=0.99, warmup_iters=100,
)
# nanoGPT README: python train.py config/train_shakespeare_char.py --device=cpu --compile=False
#   --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
#   --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
README_CPU = dict(device="cpu", compile=False, eval_iters=20, log_interval=1, block_size=64, batch_size=12,
                  n_layer=4, n_head=4, n_embd=128, max_iters=2000, lr_decay_iters=2000, dropout=0.0)

NANOGPT = {
    "shakespeare-char": TRAIN_PY_DEFAULTS | SHAKESPEARE_CHAR,
    "baby": TRAIN_PY_DEFAULTS | SHAKESPEARE_CHAR | README_CPU,
}

# nanoGPT keys MicroGPT has no key for, and what it does instead
ONLY_IN_NANOGPT = {
    "out_dir": "--out on the command line",
    "log_interval": "the progress bar shows every step",
    "eval_only": "microgpt eval",
    "always_save_checkpoint": "OUT/best/ keeps the best val loss, OUT/last/ the latest (both nanoGPT behaviours)",
    "init_from": "--resume; microgpt convert --from-nanogpt",
    "wandb_log": "OUT/metrics.csv and OUT/loss.png",
    "wandb_project": "no wandb (see wandb_log)",
    "wandb_run_name": "no wandb (see wandb_log)",
    "dataset": "--data (tiny Shakespeare by default)",
    "decay_lr": "always True: get_lr's warmup and cosine decay",
    "backend": "chosen for --parallel: gloo on a CPU, NCCL on CUDA (nanoGPT: nccl)",
}
# keys MicroGPT has that mean something else, or defaults that differ on purpose
DIFFERENT_ON_PURPOSE = {
    "device": "auto picks a GPU, then the CPU (nanoGPT: cuda; its CPU command: cpu)",
    "dtype": "auto: bfloat16 on a GPU, float32 on a CPU (nanoGPT: bfloat16 or float16 on CUDA, float32 compute on a CPU)",
    "compile": "False: eager by default, as nanoGPT's CPU command (torch only; JAX always compiles)",
}
# keys only MicroGPT has
ONLY_IN_MICROGPT = {
    "vocab_size": "from the corpus (nanoGPT reads it from meta.pkl)",
    "seed": "1337, as nanoGPT's hard-coded torch.manual_seed(1337 + seed_offset), as a key",
    "attention": "fused or manual (nanoGPT picks flash attention when torch has it)",
    "tf32": "False, so that the backends compare (nanoGPT switches TF32 on)",
    "compile_mode": "torch.compile's mode (nanoGPT: the default)",
    "parallel": "none, ddp or fsdp (nanoGPT: DDP whenever torchrun starts it)",
    "devices": "data-parallel devices, 1 by default (nanoGPT: torchrun's WORLD_SIZE)",
}

README_BEGIN, README_END = "<!-- preset-differences:begin -->", "<!-- preset-differences:end -->"


def _show(value) -> str:
    return "—" if value is None else f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def differences_table() -> str:
    """Every key where MicroGPT's ``baby`` / ``shakespeare-char`` differ from nanoGPT's, and why: the
    README's table (``python -m tests.test_presets`` prints it; a test keeps the two identical)."""
    ours = {p: to_dict(m) | to_dict(t) for p, (m, t) in ((p, build_configs(p)) for p in NANOGPT)}
    lines = ["| key | nanoGPT `baby` / `shakespeare-char` | MicroGPT | why |", "|---|---|---|---|"]
    for table in (DIFFERENT_ON_PURPOSE, ONLY_IN_NANOGPT, ONLY_IN_MICROGPT):
        for key, why in table.items():
            values = []
            for source in (NANOGPT, ours):
                pair = [source[p].get(key) for p in NANOGPT]
                values.append(_show(pair[1]) if pair[0] == pair[1] else f"{_show(pair[1])} / {_show(pair[0])}")
            lines.append(f"| `{key}` | {values[0]} | {values[1]} | {why} |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("preset", list(NANOGPT))
def test_preset_matches_nanogpt_key_by_key(preset):
    model, train = build_configs(preset)
    ours = to_dict(model) | to_dict(train)
    theirs = NANOGPT[preset]
    shared = sorted((set(ours) & set(theirs)) - set(DIFFERENT_ON_PURPOSE))
    assert {"bias", "dropout", "beta2", "weight_decay", "grad_clip", "warmup_iters", "eval_iters"} <= set(shared)
    mismatched = {k: (ours[k], theirs[k]) for k in shared if ours[k] != theirs[k]}
    assert mismatched == {}
    assert set(theirs) - set(ours) == set(ONLY_IN_NANOGPT)


def test_every_key_is_accounted_for():
    ours = set(model_keys()) | set(train_keys())
    theirs = set(NANOGPT["baby"])
    only_ours = ours - theirs
    assert only_ours == set(ONLY_IN_MICROGPT)
    assert set(DIFFERENT_ON_PURPOSE) <= ours & theirs


def test_readme_table_is_the_data():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert README_BEGIN in readme and README_END in readme, "README.md lost its preset-differences markers"
    shown = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"
    assert shown == differences_table(), "README.md's table is stale: paste `python -m tests.test_presets`"


if __name__ == "__main__":
    print(differences_table(), end="")
