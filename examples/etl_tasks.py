"""Plain functions that ``examples/etl_pipeline.yaml`` points at (``module:function``).

They know nothing of FlowForge: the YAML definition wires them together.
"""

from __future__ import annotations

import json
from typing import Any

from .sales import OUTPUT_DIR, clean_rows, read_rows, summarize


def extract(source: str, limit: int) -> dict[str, Any]:
    """The first ``limit`` rows of the sales file, and the regions they cover."""
    if source != "csv":
        raise ValueError(f"unknown source {source!r}; this example reads 'csv'")
    rows = read_rows()[:limit]
    return {"rows": rows, "files": sorted({r["region"] for r in rows if r.get("region")})}


def transform(rows: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(clean_rows(rows["rows"]))
    return {"count": summary["kept"], "summary": summary}


def load(rows: dict[str, Any]) -> str:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / "pipeline_summary.json"
    path.write_text(json.dumps(rows["summary"], indent=2))
    return str(path)


def notify() -> str:
    return "no rows survived cleaning: nothing loaded"


def parse(region: str) -> str:
    return region.strip().upper()


def handle_error(result: Any) -> None:
    print(f"pipeline {result.workflow} failed: {result.error}")
