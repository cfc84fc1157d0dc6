"""``python -m benchmarks.run --task sample``: the summary, table, CSV and JSON schema, from fake runs."""

from benchmarks import process_table, sampling, schema


def _report():
    runs = [{"backend": b, "repeat": r, "status": "ok", "tokens_per_s": t * (1 + r), "tokens_per_s_median": t,
             "ms_per_token": 1e3 / t, "first_call_s": 1.0, "calls_s": [0.1], "lane": b,
             "process": {"allocator": "reuse", "compute threads": "2"}}
            for r in range(2) for b, t in (("torch", 100.0), ("jax", 50.0))]
    settings = {"preset": "tiny", "block_size": 16, "num_samples": 1, "tokens": 10, "repeats": 2}
    return {"schema_version": sampling.SCHEMA_VERSION, "task": "sample", "created": "now", "command_line": "x",
            "settings": settings, "environment": {}, "runs": runs, "summary": sampling.summarize(runs, ["torch", "jax"]),
            "process_settings": process_table.compare(runs, [{"name": "torch"}, {"name": "jax"}])}


def test_summary_ratio_table_and_csv():
    report = _report()
    s = report["summary"]
    assert s["backends"]["torch"]["tokens_per_s"] == 150.0 and s["backends"]["jax"]["tokens_per_s"] == 75.0
    assert s["ratios"]["tokens_per_s"] == 0.5
    table = sampling.format_report(report)
    assert "jax/torch" in table and "150" in table and "0.50" in table
    assert "every lane ran under the same process settings" in table
    rows = sampling.to_csv(report).splitlines()
    assert rows[0].startswith("backend,") and rows[-1].startswith("jax/torch,,,0.5,") and len(rows) == 4
    assert schema.validate(report, sampling.SCHEMA) == []
    assert schema.validate({"task": "train"}, sampling.SCHEMA)
