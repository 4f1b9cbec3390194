"""Writing a benchmark's results: JSON for machines, a Markdown table for people."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from backend.atomic import write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def write(name: str, title: str, rows: list[dict], summary: dict, notes: str = "") -> dict:
    """Write results/<name>.json and results/<name>.md; returns the JSON document."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "title": title, "machine": machine(), "summary": summary, "rows": rows, "notes": notes}
    write_text(RESULTS / f"{name}.json", json.dumps(document, indent=2) + "\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [f"# {title}", "", notes, "" if notes else "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    lines += ["", "**Summary**: " + ", ".join(f"{k} = {_cell(v)}" for k, v in summary.items()), ""]
    write_text(RESULTS / f"{name}.md", "\n".join(line for line in lines if line is not None) + "\n")
    print("\n".join(lines))
    return document


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
