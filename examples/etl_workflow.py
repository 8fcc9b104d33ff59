"""A small sales ETL written with the ``@task`` DSL, run on the process executor.

Run it from the repository root::

    python -m examples.etl_workflow

The workflow is defined at module level so that process workers can import the tasks
by reference; ``wf.run()`` happens only inside :func:`main`.
"""

from __future__ import annotations

import csv
import json
from typing import Any

from flowforge import task, workflow

from .sales import OUTPUT_DIR, clean_rows, read_rows, summarize

with workflow("etl", executor="process", max_workers=2) as wf:

    @task
    def extract(limit: int | None = None) -> list[dict[str, str]]:
        # `flowforge run examples/etl_workflow.py -p limit=10` reads the first 10 rows.
        rows = read_rows()
        return rows if limit is None else rows[:limit]

    @task(retries=2, retry_delay=0.1)
    def clean(extract: list[dict[str, str]], ctx: Any) -> dict[str, Any]:
        # Simulates a flaky source: the first attempt always fails, the retry succeeds.
        # ctx.attempt is carried to the worker, so this is deterministic across processes.
        if ctx.attempt == 1:
            raise ConnectionError("simulated flaky source (attempt 1)")
        return clean_rows(extract)

    @task
    def aggregate(clean: dict[str, Any]) -> dict[str, Any]:
        return summarize(clean)


    @task
    def load(aggregate: dict[str, Any], ctx: Any) -> str:
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUTPUT_DIR / "sales_summary.json"
        path.write_text(json.dumps(aggregate, indent=2) + "\n", encoding="utf-8")
        csv_path = OUTPUT_DIR / "sales_summary.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["kind", "key", "revenue"])
            for region, revenue in aggregate["by_region"].items():
                writer.writerow(["region", region, revenue])
            for product, revenue in aggregate["by_product"].items():
                writer.writerow(["product", product, revenue])
        ctx.log.info("wrote", path=str(path))
        ctx.log.info("wrote", path=str(csv_path))
        return str(path)


def main() -> int:
    result = wf.run()
    print(f"workflow {result.workflow!r} run {result.run_id}: {result.status.value}")
    if result.ok:
        summary = result["aggregate"]
        print(f"rows kept: {summary['kept']}, rejected: {summary['rejected']}")
        print(f"clean attempts: {result.tasks['clean'].attempts}")
        for region, revenue in summary["by_region"].items():
            print(f"  {region:<6} {revenue:>10.2f}")
        print(f"  {'total':<6} {summary['total']:>10.2f}")
        print(f"summary written to {result['load']}")
    else:
        print(f"error: {result.error!r}")
    print(f"duration: {result.duration:.2f}s")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
