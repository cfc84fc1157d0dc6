"""Named variants: how fast each framework can go, beside how fast its default is.

A *lane* is one backend with one variant; every lane runs in its own workers and gets its own
column in the report. The defaults are the idiomatic out-of-the-box code: eager torch, and JAX
with XLA's own flags. Variants, each named in the report:

- torch: ``--compile-mode eager,default,reduce-overhead,max-autotune,max-autotune-no-cudagraphs``
  (``torch.compile`` with that mode; ``eager`` is no compile);
- JAX: ``--xla-variant default,eigen,onednn``, XLA:CPU's engine for the dots, set through
  ``XLA_FLAGS`` before JAX starts (each lane's own flags, after any the user set).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import COMPILE_MODES
from common.errors import UserError

TORCH_MODES = ("eager",) + COMPILE_MODES
# name -> (what it is, XLA_FLAGS it adds)
XLA_VARIANTS = {
    "default": ("XLA's defaults (on a CPU: YNNPACK fusions for the dots)", ""),
    "eigen": ("dots through Eigen, no YNNPACK fusions", "--xla_cpu_experimental_ynn_fusion_type="),
    "onednn": ("dots through oneDNN, no YNNPACK fusions",
               "--xla_cpu_experimental_onednn_fusion_type=dot --xla_cpu_experimental_ynn_fusion_type="),
}


@dataclass
class Lane:
    name: str  # the report's column: "torch", "torch compile=max-autotune", "jax", "jax xla=onednn"
    backend: str
    variant: str
    overrides: dict = field(default_factory=dict)  # config keys the lane sets
    xla_flags: str = ""


def parse_names(flag: str, text: str | None, allowed, default: str) -> list[str]:
    if text is None:
        return [default]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        raise UserError(f"{flag} {text!r}: choose from {', '.join(allowed)} (comma-separated)")
    if len(set(names)) != len(names):
        raise UserError(f"{flag} names a variant twice")
    return names


def lanes(backends: list[str], compile_flag: bool, compile_modes: str | None, xla_variants: str | None) -> list[Lane]:
    """The lanes to time, checked: a variant of a backend that is not timed is refused."""
    if compile_modes is not None and "torch" not in backends:
        raise UserError("--compile-mode applies to the torch backend; add --backend torch or --backend all")
    if xla_variants is not None and "jax" not in backends:
        raise UserError("--xla-variant applies to the jax backend; add --backend jax or --backend all")
    if compile_flag and compile_modes is not None:
        raise UserError("--compile and --compile-mode both choose torch.compile; keep one (--compile is "
                        "--compile-mode default)")
    out = []
    for backend in backends:
        if backend == "torch":
            modes = parse_names("--compile-mode", compile_modes, TORCH_MODES, "default" if compile_flag else "eager")
            for mode in modes:
                name = "torch" if mode == "eager" else ("torch compile" if mode == "default" else f"torch compile={mode}")
                out.append(Lane(name, "torch", mode, {"compile": mode != "eager", "compile_mode":
                                                      "default" if mode == "eager" else mode}))
        else:
            for variant in parse_names("--xla-variant", xla_variants, XLA_VARIANTS, "default"):
                name = "jax" if variant == "default" else f"jax xla={variant}"
                out.append(Lane(name, "jax", variant, {}, XLA_VARIANTS[variant][1]))
    return out


def describe(lane: Lane) -> str:
    if lane.backend == "jax":
        return f"{lane.name}: {XLA_VARIANTS[lane.variant][0]}" + (f" (XLA_FLAGS {lane.xla_flags})" if lane.xla_flags
                                                                 else "")
    return f"{lane.name}: " + ("eager" if lane.variant == "eager" else f"torch.compile(mode={lane.variant!r})")
