"""Per-seed result files, so that seeds can run as separate (parallel, resumable) processes.

`save_row` writes `results/<name>/seed<N>.json` (the settings and that seed's row) atomically;
`summarize` gathers every seed file of `name` made with the same settings and writes
`results/<name>.json`: the rows and, for each key, the mean and 95% t-interval over the seeds
(fms-ml's `t_ci`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fms_ml.experiment import t_ci

RESULTS = Path(__file__).resolve().parent / "results"


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_row(name: str, settings: dict[str, Any], row: dict[str, Any]) -> Path:
    """Write one seed's row (it must hold `"seed"`) with the settings that made it."""
    path = RESULTS / name / f"seed{row['seed']}.json"
    _write(path, {"settings": settings, "row": row})
    return path


def summarize(
    name: str, settings: dict[str, Any], keys: Sequence[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Rows of every seed file of `name` with these `settings`, and each key's mean and 95%
    t-interval over them (no interval for a single seed), written to `results/<name>.json`."""
    rows = []
    for f in sorted((RESULTS / name).glob("seed*.json")):
        saved = json.loads(f.read_text(encoding="utf-8"))
        if saved["settings"] == settings:
            rows.append(saved["row"])
    rows.sort(key=lambda r: r["seed"])
    summary: dict[str, Any] = {}
    for k in keys:
        values = [float(r[k]) for r in rows]
        ci = t_ci(values) if len(values) > 1 else None
        summary[k] = {
            "mean": float(np.mean(values)) if values else None,
            "low": ci.low if ci else None,
            "high": ci.high if ci else None,
        }
    out = {"settings": settings, **(extra or {}), "seeds": [r["seed"] for r in rows],
           "rows": rows, "summary": summary}  # fmt: skip
    _write(RESULTS / f"{name}.json", out)
    return out
