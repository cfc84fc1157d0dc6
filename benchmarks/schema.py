"""The JSON that ``--json`` writes: its schema (JSON Schema, draft 2020-12) and a small checker.

``validate`` covers the subset of JSON Schema used here (type, properties, required,
additionalProperties, items, enum, minimum), so the harness needs no jsonschema package;
the tests also run the real ``jsonschema`` validator over the same schema where installed.
"""

from __future__ import annotations

from typing import Any

# 2: the matmul peak during the run, and MFU against it; 3: lanes (variants), categories;
# 4: every run's process settings and their comparison across lanes, allocator lanes, a ratio per pair
SCHEMA_VERSION = 4

NUM = {"type": ["number", "null"]}
INT = {"type": ["integer", "null"]}
STR = {"type": ["string", "null"]}

SUMMARY_STATS = {
    "type": "object",
    "required": ["n", "median", "p10", "p90", "min", "max"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "median": NUM, "p10": NUM, "p90": NUM,
                   "min": NUM, "max": NUM, "mean": NUM},
}

RUN = {
    "type": "object",
    "required": ["backend", "lane", "repeat", "sweep", "status", "spec"],
    "properties": {
        "backend": {"type": "string", "enum": ["torch", "jax"]},
        "lane": {"type": "string"},
        "repeat": {"type": "integer", "minimum": 0},
        "sweep": {"type": ["object", "null"]},
        "status": {"type": "string", "enum": ["ok", "invalid", "error", "user_error"]},
        "error": STR,
        "spec": {"type": "object"},
        "config": {"type": "object", "required": ["model", "train"],
                   "properties": {"model": {"type": "object"}, "train": {"type": "object"}}},
        "cold": {"type": "object", "properties": {
            "compile_s": NUM, "lower_s": NUM, "first_step_s": NUM, "trainer_init_s": NUM,
            "compilations_first_step": INT}},
        "sanity": {"type": "object", "required": ["valid", "initial_loss", "expected_initial_loss"],
                   "properties": {"valid": {"type": "boolean"}, "initial_loss": NUM,
                                  "expected_initial_loss": NUM, "loss_after_warmup_same_batch": NUM,
                                  "warmup_losses": {"type": "array", "items": NUM},
                                  "problems": {"type": "array", "items": {"type": "string"}}}},
        "latency": {"type": "object", "required": ["times_s"],
                    "properties": {"times_s": {"type": "array", "items": {"type": "number", "minimum": 0}}}},
        "throughput": {"type": "object", "required": ["steps", "total_s", "step_s"],
                       "properties": {"steps": {"type": "integer", "minimum": 1}, "total_s": {"type": "number"},
                                      "step_s": {"type": "number"}}},
        "final_loss": NUM,
        "recompilations": INT,
        "memory": {"type": "object", "required": ["host_rss_peak_bytes", "device_peak_bytes"],
                   "properties": {"host_rss_peak_bytes": INT, "device_peak_bytes": INT}},
        "matmul_peak": {"type": "object", "required": ["flops_per_s", "source"],
                        "properties": {"flops_per_s": NUM, "source": {"type": "string"}}},
        "matmul_during_run": {"type": "object", "required": ["flops_per_s", "source", "before", "after"],
                              "properties": {"flops_per_s": NUM, "source": {"type": "string"}}},
        "environment": {"type": "object"},
        "metrics": {"type": "object", "required": ["step_s", "tokens_per_s", "flops_per_s", "mfu_measured",
                                                   "mfu_vendor", "flops_per_iter", "tokens_per_iter"],
                    "properties": {"step_s": SUMMARY_STATS, "tokens_per_s": NUM, "flops_per_s": NUM,
                                   "mfu_measured": NUM, "mfu_own_probe": NUM, "mfu_during_run": NUM,
                                   "mfu_vendor": NUM, "flops_per_iter": INT,
                                   "tokens_per_iter": INT}},
        "profile": {"type": "object"},
        "process": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

PROCESS_SETTINGS = {
    "type": "object",
    "required": ["lanes", "rows", "differs"],
    "properties": {
        "lanes": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {
            "type": "object", "required": ["setting", "values", "status", "variants"],
            "properties": {"setting": {"type": "string"},
                           "values": {"type": "object", "additionalProperties": {"type": "string"}},
                           "status": {"type": "string", "enum": ["same", "variant", "DIFFERS"]},
                           "variants": {"type": "array", "items": {"type": "string"}}}}},
        "differs": {"type": "array", "items": {"type": "string"}},
    },
}

AGGREGATE = {
    "type": "object",
    "required": ["runs", "valid_runs", "step_s", "per_repeat_median_step_s", "amortised_step_s", "tokens_per_s",
                 "tokens_per_s_amortised", "flops_per_iter", "flops_per_s", "measured_peak_flops_per_s",
                 "measured_peak_source", "mfu_measured", "own_probe_flops_per_s", "mfu_own_probe",
                 "peak_during_run_flops_per_s", "mfu_during_run",
                 "vendor_peak_flops_per_s", "vendor_peak_source", "mfu_vendor", "compile_s", "first_step_s", "final_loss", "recompilations",
                 "host_rss_peak_bytes", "device_peak_bytes"],
    "properties": {
        "runs": {"type": "integer", "minimum": 1}, "valid_runs": {"type": "integer", "minimum": 0},
        "step_s": SUMMARY_STATS, "per_repeat_median_step_s": {"type": "array", "items": NUM},
        "amortised_step_s": NUM, "tokens_per_s": NUM, "tokens_per_s_amortised": NUM, "flops_per_iter": INT,
        "tokens_per_iter": INT, "flops_per_s": NUM, "measured_peak_flops_per_s": NUM,
        "measured_peak_source": {"type": "string"}, "mfu_measured": NUM, "own_probe_flops_per_s": NUM,
        "mfu_own_probe": NUM, "peak_during_run_flops_per_s": NUM, "mfu_during_run": NUM,
        "vendor_peak_flops_per_s": NUM,
        "vendor_peak_source": {"type": "string"}, "mfu_vendor": NUM, "compile_s": NUM, "lower_s": NUM,
        "first_step_s": NUM, "initial_loss": NUM, "final_loss": NUM, "recompilations": INT,
        "host_rss_peak_bytes": INT, "device_peak_bytes": INT,
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "MicroGPT benchmark results",
    "type": "object",
    "required": ["schema_version", "created", "command", "command_line", "settings", "environment",
                 "process_settings", "runs", "summary"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "created": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "command_line": {"type": "string"},
        "settings": {
            "type": "object",
            "required": ["backends", "lanes", "preset", "device", "dtype", "compile", "steps", "warmup", "repeats",
                         "batch_size", "sweep", "data", "overrides", "order"],
            "properties": {
                "backends": {"type": "array", "items": {"type": "string", "enum": ["torch", "jax"]}},
                "lanes": {"type": "array", "items": {"type": "object", "required": ["name", "backend", "variant"],
                                                     "properties": {"name": {"type": "string"},
                                                                    "backend": {"type": "string",
                                                                                "enum": ["torch", "jax"]},
                                                                    "variant": {"type": "string"},
                                                                    "malloc": {"type": "string"},
                                                                    "declares": {"type": "object"}}}},
                "preset": {"type": "string"}, "device": {"type": "string"}, "dtype": {"type": "string"},
                "compile": {"type": "boolean"}, "steps": {"type": "integer", "minimum": 1},
                "warmup": {"type": "integer", "minimum": 1}, "repeats": {"type": "integer", "minimum": 1},
                "batch_size": INT,
                "sweep": {"type": ["object", "null"], "required": ["key", "values"],
                          "properties": {"key": {"type": "string"}, "values": {"type": "array"}}},
                "data": {"type": "object", "required": ["kind"],
                         "properties": {"kind": {"type": "string", "enum": ["corpus", "synthetic"]},
                                        "path": STR, "note": STR}},
                "overrides": {"type": "object"},
                "order": {"type": "array", "items": {"type": "string"}},
            },
        },
        "environment": {
            "type": "object",
            "required": ["packages", "host", "git", "backends"],
            "properties": {
                "packages": {"type": "object", "required": ["python", "torch", "jax", "jaxlib", "flax", "optax",
                                                            "numpy"]},
                "host": {"type": "object", "required": ["cpu_model", "cpu_count", "affinity", "env"]},
                "git": {"type": "object", "required": ["commit", "dirty"]},
                "backends": {"type": "object"},
            },
        },
        "process_settings": PROCESS_SETTINGS,
        "runs": {"type": "array", "items": RUN},
        "summary": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sweep", "batch_size", "block_size", "backends", "ratios", "pair_ratios"],
                "properties": {
                    "sweep": {"type": ["object", "null"]},
                    "batch_size": {"type": "integer"}, "block_size": {"type": "integer"},
                    "backends": {"type": "object", "additionalProperties": AGGREGATE},
                    "ratios": {"type": "object", "additionalProperties": NUM},
                    "pair_ratios": {"type": "object",
                                    "additionalProperties": {"type": "object", "additionalProperties": NUM}},
                },
            },
        },
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(instance: Any, schema: dict[str, Any] = SCHEMA, path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema``, as "path: problem" strings (empty if it conforms)."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](instance) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](instance) and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} < minimum {schema['minimum']}")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                errors.extend(validate(value, props[key], f"{path}.{key}"))
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors.extend(validate(value, extra, f"{path}.{key}"))
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors.extend(validate(item, schema["items"], f"{path}[{i}]"))
    return errors
