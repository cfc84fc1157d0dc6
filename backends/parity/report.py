"""The parity report: one :class:`Row` per compared quantity, and the arithmetic behind a row.

Errors, per tensor ``a`` (candidate) against ``b`` (reference), both taken in float64:

* absolute error ``max|a - b|``;
* relative error ``max|a - b| / max|b|`` (normwise: the error against the tensor's scale,
  so that entries near zero do not blow it up);
* a tensor passes when ``max|a - b| <= atol + rtol * max|b|``; a row passes when every
  tensor in it passes, and names the tensor (or step, or position) closest to failing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from backends.parity.tolerances import INIT_SIGMAS, REFERENCE_BUDGETS, TOLERANCES, Tol
from common.config import PRESETS, ModelConfig
from common.params import param_layout

TINY = 1e-300  # floor of the denominator of a relative error


@dataclass
class Row:
    """One compared quantity."""

    quantity: str
    max_abs: float
    max_rel: float
    tolerance: str
    passed: bool
    worst: str = ""  # the tensor / step / position closest to (or furthest past) its tolerance
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = f" (worst: {self.worst})" if self.worst else ""
        note = f"; {self.note}" if self.note else ""
        return (f"{self.quantity}: max abs {_fmt(self.max_abs)}, max rel {_fmt(self.max_rel)}, "
                f"tolerance {self.tolerance}{where}{note}")


@dataclass
class ParityReport:
    rows: list[Row]
    dtype: str
    preset: str
    seed: int
    reference: str
    candidate: str
    steps: int
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    seconds: float = 0.0

    def _dropout_note(self) -> str:
        preset = PRESETS.get(self.preset, ({}, {}))[0].get("dropout", 0.0)
        if preset and not self.model_config.get("dropout"):
            return f" (the preset's dropout {preset:g} off: each framework draws its own masks)"
        return ""

    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    @property
    def passed(self) -> bool:
        """Every row within tolerance, and at least one row: a run that checked nothing never passes."""
        return bool(self.rows) and not self.failed()

    def row(self, quantity: str) -> Row:
        for r in self.rows:
            if r.quantity == quantity:
                return r
        raise KeyError(f"no row {quantity!r}; rows: {[r.quantity for r in self.rows]}")

    def failed_quantities(self) -> list[str]:
        return [r.quantity for r in self.failed()]

    def format_table(self) -> str:
        header = ("quantity", "max abs err", "max rel err", "tolerance", "result", "worst")
        body = [(r.quantity, _fmt(r.max_abs), _fmt(r.max_rel), r.tolerance, "pass" if r.passed else "FAIL",
                 "; ".join(x for x in (r.worst, r.note) if x)) for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        lines = [
            f"parity: {self.reference} (reference) vs {self.candidate}, {self.dtype}, preset {self.preset}, "
            f"seed {self.seed}" + self._dropout_note(),
            "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
        failed = self.failed()
        lines.append(f"{len(self.rows) - len(failed)}/{len(self.rows)} quantities within tolerance "
                     f"({self.seconds:.1f} s)")
        for r in failed:
            lines.append("FAIL " + r.describe())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "candidate": self.candidate, "dtype": self.dtype,
            "preset": self.preset, "seed": self.seed, "steps": self.steps, "passed": self.passed,
            "seconds": round(self.seconds, 3), "model_config": self.model_config,
            "train_config": self.train_config,
            "tolerances": {k: asdict(v) for k, v in (REFERENCE_BUDGETS if self.reference.endswith("float64")
                                                      else TOLERANCES)[self.dtype].items()},
            "error_definition": "per tensor: abs = max|a-b|, rel = max|a-b| / max|b| (b = reference); "
                                "passes when abs <= atol + rtol * max|b|",
            "rows": [asdict(r) for r in self.rows],
        }


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.2e}"


def compare(quantity: str, reference: dict[str, Any], candidate: dict[str, Any], tol: Tol,
            note: str = "") -> Row:
    """Compare two dicts of arrays tensor by tensor (see the module docstring for the errors)."""
    details: dict[str, Any] = {}
    worst, worst_ratio, max_abs, max_rel, passed = "", -1.0, 0.0, 0.0, True
    missing = sorted(set(reference) ^ set(candidate))
    for name in reference:
        if name not in candidate:
            continue
        b = np.asarray(reference[name], dtype=np.float64)
        a = np.asarray(candidate[name], dtype=np.float64)
        if a.shape != b.shape:
            abs_err, scale = math.inf, float(np.max(np.abs(b))) if b.size else 0.0
            details[name] = {"abs": abs_err, "rel": math.inf, "note": f"shape {a.shape} vs {b.shape}"}
        else:
            with np.errstate(invalid="ignore"):
                diff = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities count as equal
            diff = np.where(np.isnan(diff), math.inf, diff)
            abs_err = float(np.max(diff)) if diff.size else 0.0
            scale = float(np.max(np.abs(b[np.isfinite(b)]))) if np.isfinite(b).any() else 0.0
            details[name] = {"abs": abs_err, "rel": abs_err / max(scale, TINY)}
        bound = tol.bound(scale)
        ratio = (0.0 if abs_err == 0 else math.inf) if bound == 0 else abs_err / bound
        ok = abs_err <= bound
        passed &= ok
        max_abs = max(max_abs, abs_err)
        max_rel = max(max_rel, details[name]["rel"])
        if ratio > worst_ratio:
            worst, worst_ratio = name, ratio
    if missing:
        passed = False
        note = (note + "; " if note else "") + f"missing on one side: {', '.join(missing)}"
    return Row(quantity, max_abs, max_rel, tol.text(), passed, worst if len(reference) > 1 and max_abs > 0 else "",
               note, details)


def scalars(values: Iterable[float], label: str) -> dict[str, float]:
    return {f"{label} {i}": float(v) for i, v in enumerate(values)}


def init_std_row(quantity: str, weights: dict[str, np.ndarray], config: ModelConfig) -> Row:
    """A backend's own initialisation against ``common.params``: every random tensor's sample std
    within INIT_SIGMAS standard errors (std/sqrt(2n)) of its init_std, and mean within INIT_SIGMAS
    std/sqrt(n) of 0; biases exactly 0 and LayerNorm weights exactly 1."""
    details, worst, worst_z, max_abs, max_rel, passed = {}, "", -1.0, 0.0, 0.0, True
    for spec in param_layout(config):
        w = np.asarray(weights[spec.name], dtype=np.float64)
        if w.shape != spec.shape:
            details[spec.name] = {"note": f"shape {w.shape}, expected {spec.shape}"}
            passed, worst, worst_z = False, spec.name, math.inf
            continue
        if spec.init_std == 0:
            target = 1.0 if spec.kind == "norm" else 0.0
            abs_err = float(np.max(np.abs(w - target)))
            rel, z = abs_err / max(target, 1.0), (math.inf if abs_err else 0.0)
        else:
            n = w.size
            std, mean = float(w.std()), float(w.mean())
            abs_err, rel = abs(std - spec.init_std), abs(std / spec.init_std - 1.0)
            z = max(rel / math.sqrt(1.0 / (2 * n)), abs(mean) / (spec.init_std / math.sqrt(n)))
            details[spec.name] = {"std": std, "expected_std": spec.init_std, "mean": mean}
        details.setdefault(spec.name, {}).update({"abs": abs_err, "rel": rel, "z": z})
        ok = z <= INIT_SIGMAS
        passed &= ok
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel)
        if z > worst_z:
            worst, worst_z = spec.name, z
    return Row(quantity, max_abs, max_rel, f"std within {INIT_SIGMAS:g} std. errors", passed, worst,
               f"worst at {worst_z:.1f} std. errors", details)
