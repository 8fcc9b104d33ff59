"""The same sales job written with the classic API: ``Task`` subclasses, a ``DAG``, a ``Workflow``.

Run it from the repository root::

    python -m examples.sample_workflow
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from flowforge import DAG, Task, Workflow

HERE = Path(__file__).resolve().parent
DATA_FILE = HERE / "data" / "sales.csv"
OUTPUT_DIR = HERE / "output"


class ExtractSales(Task):
    """Read the raw CSV rows."""

    def run(self, **inputs: Any) -> list[dict[str, str]]:
        with DATA_FILE.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


class CleanSales(Task):
    """Convert types and drop rows with missing, non-numeric or negative values."""

    def run(self, **inputs: Any) -> dict[str, Any]:
        raw = inputs["extract"]
        rows = []
        for row in raw:
            try:
                quantity = int(row["quantity"])
                unit_price = float(row["unit_price"])
            except (KeyError, TypeError, ValueError):
                continue
            if quantity <= 0 or unit_price < 0:
                continue
            rows.append(
                {
                    "region": row["region"],
                    "product": row["product"],
                    "revenue": round(quantity * unit_price, 2),
                }
            )
        return {"rows": rows, "rejected": len(raw) - len(rows)}


class AggregateSales(Task):
    """Revenue totals per region and per product."""

    def run(self, **inputs: Any) -> dict[str, Any]:
        clean = inputs["clean"]
        by_region: dict[str, float] = defaultdict(float)
        by_product: dict[str, float] = defaultdict(float)
        for row in clean["rows"]:
            by_region[row["region"]] += row["revenue"]
            by_product[row["product"]] += row["revenue"]
        return {
            "kept": len(clean["rows"]),
            "rejected": clean["rejected"],
            "by_region": {k: round(v, 2) for k, v in sorted(by_region.items())},
            "by_product": {k: round(v, 2) for k, v in sorted(by_product.items())},
        }


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
