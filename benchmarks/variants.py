"""Named variants: how fast each framework can go, beside how fast its default is.

A *lane* is one backend with one variant; every lane runs in its own workers and gets its own
column in the report. The defaults are the idiomatic out-of-the-box code, eager torch and JAX
with XLA's own flags, both under the same process settings (``backends/process.py``). Variants,
each named in the report:

- torch: ``--compile-mode eager,default,reduce-overhead,max-autotune,max-autotune-no-cudagraphs``
  (``torch.compile`` with that mode; ``eager`` is no compile);
- JAX: ``--xla-variant default,eigen,onednn``, XLA:CPU's engine for the dots, set through
  ``XLA_FLAGS`` before JAX starts (each lane's own flags, after any the user set);
- both: ``--malloc reuse,system,jemalloc,tcmalloc``, the C allocator of the worker process
  (``backends/host_memory.py``), each value a column for each backend.

A lane *declares* the process settings its variant changes (``declares``: the settings table's
row names): the report marks those rows as a variant's, and any other row that differs between
lanes as a difference nobody asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends import host_memory
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
MALLOC_ROWS = ("allocator", "$LD_PRELOAD", f"${host_memory.ENV}")  # the settings rows an allocator changes


@dataclass
class Lane:
    name: str  # the report's column: "torch", "torch compile=max-autotune", "jax xla=onednn", "jax malloc=system"
    backend: str
    variant: str
    overrides: dict = field(default_factory=dict)  # config keys the lane sets
    xla_flags: str = ""
    malloc: str = field(default_factory=host_memory.selected)  # the worker's allocator (MICROGPT_MALLOC)
    declares: dict = field(default_factory=dict)  # settings row -> the variant that changes it


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


def lanes(backends: list[str], compile_flag: bool, compile_modes: str | None, xla_variants: str | None,
          mallocs: str | None = None) -> list[Lane]:
    """The lanes to time, checked: a variant of a backend that is not timed is refused, and so is
    an allocator that is not installed (one line naming its Debian package)."""
    if compile_modes is not None and "torch" not in backends:
        raise UserError("--compile-mode applies to the torch backend; add --backend torch or --backend all")
    if xla_variants is not None and "jax" not in backends:
        raise UserError("--xla-variant applies to the jax backend; add --backend jax or --backend all")
    if compile_flag and compile_modes is not None:
        raise UserError("--compile and --compile-mode both choose torch.compile; keep one (--compile is "
                        "--compile-mode default)")
    default_malloc = host_memory.selected()  # MICROGPT_MALLOC in the parent's environment, else the default
    names = parse_names("--malloc", mallocs, host_memory.ALLOCATORS, default_malloc)
    for name in names:
        host_memory.check_available(name)
    out = []
    for backend in backends:
        for malloc in names:
            suffix = "" if malloc == default_malloc else f" malloc={malloc}"
            declares = {} if malloc == default_malloc else dict.fromkeys(MALLOC_ROWS, f"malloc={malloc}")
            if backend == "torch":
                modes = parse_names("--compile-mode", compile_modes, TORCH_MODES, "default" if compile_flag else "eager")
                for mode in modes:
                    name = "torch" if mode == "eager" else ("torch compile" if mode == "default" else f"torch compile={mode}")
                    out.append(Lane(name + suffix, "torch", mode, {"compile": mode != "eager", "compile_mode":
                                                                   "default" if mode == "eager" else mode},
                                    malloc=malloc, declares=declares))
            else:
                for variant in parse_names("--xla-variant", xla_variants, XLA_VARIANTS, "default"):
                    name = "jax" if variant == "default" else f"jax xla={variant}"
                    flags = XLA_VARIANTS[variant][1]
                    out.append(Lane(name + suffix, "jax", variant, {}, flags, malloc=malloc,
                                    declares=declares | ({"$XLA_FLAGS": f"xla={variant}"} if flags else {})))
    return out


def pairs(lanes: list[Lane]) -> list[tuple[str, str]]:
    """(jax lane, torch lane) compared by a jax/torch ratio: the default variants, once per allocator."""
    out = []
    for jax_lane in lanes:
        if jax_lane.backend == "jax" and jax_lane.variant == "default":
            twin = next((t for t in lanes if t.backend == "torch" and t.malloc == jax_lane.malloc
                         and t.variant == "eager"), None)
            if twin is not None:
                out.append((jax_lane.name, twin.name))
    return out


def describe(lane: Lane) -> str:
    malloc = f"; allocator {lane.malloc}" if lane.declares.get("allocator") else ""
    if lane.backend == "jax":
        return (f"{lane.name}: {XLA_VARIANTS[lane.variant][0]}" + (f" (XLA_FLAGS {lane.xla_flags})" if lane.xla_flags
                                                                   else "") + malloc)
    return f"{lane.name}: " + ("eager" if lane.variant == "eager" else f"torch.compile(mode={lane.variant!r})") + malloc
