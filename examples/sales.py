"""The sales job's business logic, shared by both examples so they differ only in how
they use FlowForge (the ``@task`` DSL or the classic ``Task``/``DAG`` API)."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA_FILE = HERE / "data" / "sales.csv"
#: Where the examples write their summaries (tests point it at a temporary folder).
OUTPUT_DIR = Path(os.environ.get("FLOWFORGE_EXAMPLE_OUTPUT", HERE / "output"))


def read_rows() -> list[dict[str, str]]:
    """The raw CSV rows."""
    with DATA_FILE.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def parse_row(row: dict[str, str]) -> dict[str, Any] | None:
    """A cleaned row, or None when the row is unusable."""
    try:
        quantity = int(row["quantity"])
        unit_price = float(row["unit_price"])
    except (KeyError, TypeError, ValueError):
        return None
    if quantity <= 0 or unit_price < 0 or not row.get("region") or not row.get("product"):
        return None
    return {
        "date": row["date"],
        "region": row["region"].strip(),
        "product": row["product"].strip(),
        "quantity": quantity,
        "unit_price": unit_price,
        "revenue": round(quantity * unit_price, 2),
    }


def clean_rows(raw: list[dict[str, str]]) -> dict[str, Any]:
    """Rows that parse, and how many were rejected."""
    rows = [parsed for parsed in map(parse_row, raw) if parsed is not None]
    return {"rows": rows, "rejected": len(raw) - len(rows)}


def summarize(clean: dict[str, Any]) -> dict[str, Any]:
    """Revenue totals per region and per product."""
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
        "total": round(sum(by_region.values()), 2),
    }
