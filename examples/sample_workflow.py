"""The same sales job written with the classic API: ``Task`` subclasses, a ``DAG``, a ``Workflow``.

Run it from the repository root::

    python -m examples.sample_workflow
"""

from __future__ import annotations

import json
from typing import Any

from flowforge import DAG, Task, Workflow

from .sales import OUTPUT_DIR, clean_rows, read_rows, summarize


class ExtractSales(Task):
    """Read the raw CSV rows."""

    def run(self, **inputs: Any) -> list[dict[str, str]]:
        return read_rows()


class CleanSales(Task):
    """Convert types and drop rows with missing, non-numeric or negative values."""

    def run(self, **inputs: Any) -> dict[str, Any]:
        return clean_rows(inputs["extract"])


class AggregateSales(Task):
    """Revenue totals per region and per product."""

    def run(self, **inputs: Any) -> dict[str, Any]:
        return summarize(inputs["clean"])


def save_summary(aggregate: dict[str, Any]) -> str:
    """Write the summary as JSON and return its path."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / "sales_summary_classic.json"
    path.write_text(json.dumps(aggregate, indent=2) + "\n", encoding="utf-8")
    return str(path)


dag = DAG()
dag.add_task(ExtractSales("extract"))
dag.add_task(CleanSales("clean", depends_on=["extract"]))
dag.add_task(AggregateSales("aggregate"))
dag.add_task(Task("load", save_summary, depends_on=["aggregate"]))
dag.add_dependency("aggregate", "clean")  # aggregate depends on clean

wf = Workflow("sales-classic", dag=dag, executor="thread")


def main() -> int:
    print("order:", " -> ".join(dag.topological_order()))
    result = wf.run()
    print(f"workflow {result.workflow!r}: {result.status.value} in {result.duration:.2f}s")
    if not result.ok:
        print(f"error: {result.error!r}")
        return 1
    summary = result["aggregate"]
    print(f"rows kept: {summary['kept']}, rejected: {summary['rejected']}")
    for region, revenue in summary["by_region"].items():
        print(f"  {region:<6} {revenue:>10.2f}")
    print(f"summary written to {result['load']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
