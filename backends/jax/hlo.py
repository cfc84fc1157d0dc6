"""What each op of a compiled JAX step is, read from its optimized HLO (``compiled.as_text()``).

A JAX profile names XLA's ops (thunks) by their HLO instruction names: ``ynn_fusion.66``,
``copy_bitcast_fusion.10``, ``dot.44``. The name says little (a ``ynn_fusion`` may hold a
matmul or a reduction), so each top-level instruction of the entry computation is classified
by what its fused computation contains: the ops, their shapes, and the JAX primitive each
came from (``metadata={op_name=".../transpose(jvp())/dot_general"}``; ``jvp`` is the forward
pass inside ``value_and_grad``, ``transpose(jvp`` its backward, neither the optimizer).
The categories are ``benchmarks.attribution.CATEGORIES``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
_SHAPE = re.compile(r"^[a-z]+\d*\[([\d,]*)\]")
_MOVEMENT = {"copy", "transpose", "bitcast", "reshape", "broadcast", "concatenate", "slice", "dynamic-slice",
             "dynamic-update-slice", "pad", "gather", "scatter", "iota", "parameter", "constant", "tuple",
             "get-tuple-element", "convert", "reverse", "select"}
# collectives the compiler inserts on a device mesh (--parallel ddp|fsdp), sync or async halves
_COLLECTIVES = {"all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all", "all-reduce-start",
                "all-reduce-done", "all-gather-start", "all-gather-done", "collective-permute-start",
                "collective-permute-done"}
_RANDOM = {"random_bits", "threefry2x32", "random_wrap", "random_unwrap", "random_split", "random_fold_in",
           "shift_right_logical", "shift_left"}


@dataclass
class Instruction:
    name: str
    shape: tuple[int, ...]
    opcode: str
    rest: str  # operands and attributes
    primitive: str  # the JAX primitive the op came from ("" if none)
    op_name: str
    calls: list[str] = field(default_factory=list)

    def operand(self, index: int) -> str:
        return re.findall(r"%([\w.\-]+)", self.rest.split("),")[0])[index]


def _shape(text: str) -> tuple[int, ...]:
    m = _SHAPE.match(text.strip())
    return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def parse(text: str) -> tuple[str, dict[str, dict[str, Instruction]]]:
    """The entry computation's name and every computation's instructions by name."""
    computations: dict[str, dict[str, Instruction]] = {}
    entry, current = "", None
    for line in text.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            current = computations.setdefault(m.group(2), {})
            entry = m.group(2) if m.group(1) else entry
            continue
        m = _INSTRUCTION.match(line)
        if m and current is not None:
            name, type_text, opcode, rest = m.groups()
            op_name = (re.search(r'op_name="([^"]*)"', rest) or [None, ""])[1]
            current[name] = Instruction(name, _shape(type_text), opcode, rest, op_name.rsplit("/", 1)[-1], op_name,
                                        re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", rest))
    return entry, computations


def _inner(instr: Instruction, computations: dict) -> list[Instruction]:
    """The instruction and everything its fused (or called) computations hold."""
    out, todo = [instr], list(instr.calls)
    while todo:
        body = computations.get(todo.pop(), {})
        out += body.values()
        todo += [c for i in body.values() for c in i.calls]
    return out


def _dims(rest: str, key: str) -> list[int]:
    m = re.search(key + r"=\{([\d,]*)\}", rest)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def classify(instr: Instruction, computations: dict, every: dict[str, Instruction], *, tokens: int,
             vocab: int, n_embd: int) -> str:
    """The category of one top-level instruction (``every``: all instructions by name)."""
    inner = _inner(instr, computations)
    ops = {i.opcode for i in inner}
    primitives = {i.primitive for i in inner}
    named = [i.op_name for i in inner if i.op_name]
    if ops & _COLLECTIVES:
        return "communication"
    if named and not any("jvp(" in n for n in named):
        return "optimizer"  # outside value_and_grad: clipping, AdamW, weight decay, the lr
    for dot in (i for i in inner if i.opcode in ("dot", "convolution")):
        if _dims(dot.rest, "lhs_batch_dims"):
            return "attention"  # batched over (B, heads): q @ k^T, att @ v and their gradients
        if "transpose(" not in dot.op_name:
            return "forward matmul"
        lhs = every.get(dot.operand(0))
        contracted = [lhs.shape[d] for d in _dims(dot.rest, "lhs_contracting_dims")] if lhs else []
        return "weight-grad matmul" if contracted == [tokens] else "input-grad matmul"
    if primitives & _RANDOM or "rng-bit-generator" in ops:
        return "elementwise"  # dropout's random bits
    if "erf" in primitives or "erf" in ops:
        return "elementwise"  # GELU, forward or backward
    if any(len(i.shape) >= 4 and i.shape[-1] == i.shape[-2] for i in inner if i.opcode != "parameter"):
        return "attention"  # (.., T, T) scores: mask, softmax, attention dropout
    reduced = {every[i.operand(0)].shape[-1] for i in inner
               if i.opcode == "reduce" and i.operand(0) in every and every[i.operand(0)].shape}
    if vocab in reduced or any(i.shape and i.shape[-1] == vocab and i.opcode in ("log", "exponential") for i in inner):
        return "loss"
    if "rsqrt" in primitives or n_embd in reduced:
        return "layernorm"
    if ops <= _MOVEMENT or {"copy", "transpose", "gather", "scatter"} & ops:
        return "copies/layout"  # a layout change (an elementwise op fused into it rides along)
    return "elementwise"


def categories(text: str, *, tokens: int, vocab: int, n_embd: int) -> dict[str, str]:
    """Instruction name -> category, for every instruction that runs as an op of its own: those of
    the entry computation and of the computations it calls (a ``while`` body: at
    ``shakespeare-char`` the dropout masks' random bits are drawn in loops), not those fused."""
    entry, computations = parse(text)
    every = {name: instr for body in computations.values() for name, instr in body.items()}
    fused = {c for i in every.values() if i.opcode == "fusion" for c in i.calls}
    return {name: classify(instr, computations, every, tokens=tokens, vocab=vocab, n_embd=n_embd)
            for comp, body in computations.items() if comp not in fused
            for name, instr in body.items() if instr.opcode not in ("parameter", "tuple", "get-tuple-element")}
