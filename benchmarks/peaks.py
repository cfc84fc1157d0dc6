"""The peaks MFU is measured against. Framework-free.

1. Vendor peak FLOP/s of known GPUs (dense, no structured sparsity), per precision in use.
Sources: NVIDIA A100 Tensor Core GPU datasheet (2021); NVIDIA H100 Tensor Core GPU
datasheet (2023); NVIDIA H200 Tensor Core GPU datasheet (2024). The datasheets quote
TF32/BF16 "with sparsity"; the dense figures below are half of those.
Any other device (every CPU included) gets None: "n/a" rather than a wrong number.

2. The matmul peak during a run (probes just before and after its steps); the timing loop
of a probe and the per-machine cache of the device's best are ``common.matmul_rate``.
"""

from __future__ import annotations

from typing import Any

T = 1e12

# name -> (match(device name) , {precision: FLOP/s}); precision is fp32, tf32 or bf16
_GPUS: list[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, float]]] = [
    # label, substrings that must all appear, substrings that must not, peaks
    ("H200 NVL", ("H200", "NVL"), (), {"fp32": 60 * T, "tf32": 417.5 * T, "bf16": 835.5 * T}),
    ("H200 SXM", ("H200",), ("NVL",), {"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T}),
    ("H100 NVL", ("H100", "NVL"), (), {"fp32": 60 * T, "tf32": 417.5 * T, "bf16": 835.5 * T}),
    ("H100 PCIe", ("H100", "PCIE"), (), {"fp32": 51 * T, "tf32": 378 * T, "bf16": 756 * T}),
    ("H100 SXM", ("H100",), ("NVL", "PCIE"), {"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T}),
    ("A100", ("A100",), (), {"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T}),
]
_SOURCES = {"A100": "NVIDIA A100 datasheet", "H100": "NVIDIA H100 datasheet", "H200": "NVIDIA H200 datasheet"}


def precision_in_use(dtype: str, tf32: bool) -> str | None:
    if dtype == "bfloat16":
        return "bf16"
    if dtype == "float32":
        return "tf32" if tf32 else "fp32"
    return None  # float64 and the rest: no tensor-core figure


def vendor_peak(device_type: str, device_name: str, dtype: str, tf32: bool) -> dict:
    """``{"flops_per_s": float | None, "source": str}`` for the device and the precision in use."""
    if device_type != "cuda" and device_type != "gpu":
        return {"flops_per_s": None, "source": f"n/a: no vendor peak for {device_type} devices"}
    upper = device_name.upper()
    precision = precision_in_use(dtype, tf32)
    for label, must, must_not, peaks in _GPUS:
        if all(s in upper for s in must) and not any(s in upper for s in must_not):
            if precision is None:
                return {"flops_per_s": None, "source": f"n/a: no {dtype} figure for {label}"}
            return {"flops_per_s": peaks[precision],
                    "source": f"{_SOURCES[label[:4]]}: {label} dense {precision.upper()} "
                              f"{peaks[precision] / T:g} TFLOP/s"}
    return {"flops_per_s": None, "source": f"n/a: {device_name!r} is not a GPU with a known vendor peak"}


def during_run(before: dict[int, dict[str, float]], after: dict[int, dict[str, float]]) -> dict[str, Any]:
    """The matmul peak available while the steps ran: the device-peak probe's sizes, timed again
    just before and just after the timed steps, in the same process. On a shared machine the
    rate the hardware gives drifts by tens of percent over seconds (other tenants on the same
    cores); a step and a probe taken together see the same conditions, so their ratio is the
    stable figure. The best (size, side) wins, as for the device peak."""
    flops, n, side = max((rates["best"], n, side) for side, probe in (("before", before), ("after", after))
                         for n, rates in probe.items())
    return {"flops_per_s": flops, "n": n, "side": side,
            "before": {str(k): v for k, v in before.items()}, "after": {str(k): v for k, v in after.items()},
            "source": f"n x n matmul probes ({'/'.join(map(str, before))}) just before and after the timed steps; "
                      f"the best median of 5 fastest repeats (n={n}, {side})"}


