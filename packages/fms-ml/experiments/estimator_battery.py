"""Run scikit-learn's `check_estimator` battery over every public fms_ml estimator and count.

Each estimator is checked as scikit-learn would test it (`check_estimator(est, on_fail=None)`,
the same battery `parametrize_with_checks` yields), with the expected failures scikit-learn marks
for its own estimator of the same kind (`EXPECTED_FAILED_CHECKS` in `tests/test_estimator_checks.py`).
The per-estimator pass/fail counts print as a table; `--failures` also prints each failing check
and the first line of its error.

    uv run python packages/fms-ml/experiments/estimator_battery.py [--failures] [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from battery_instances import EXPECTED_FAILED_CHECKS, battery_instances
from sklearn.utils.estimator_checks import check_estimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="estimator class names to run (default: all)")
    parser.add_argument("--failures", action="store_true", help="print each failing check")
    args = parser.parse_args()
    total_pass = total_fail = total_xfail = 0
    rows = []
    for est in battery_instances():
        name = type(est).__name__
        if args.names and name not in args.names:
            continue
        xfail = EXPECTED_FAILED_CHECKS.get(name, {})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                results = check_estimator(est, on_fail=None, expected_failed_checks=xfail)
            except Exception as exc:  # the battery itself could not start on this estimator
                print(f"  {name}: the battery did not run: {type(exc).__name__}: {exc}")
                rows.append((name, 0, 0, 0, 0))
                continue
        passed = sum(r["status"] == "passed" for r in results)
        failed = [r for r in results if r["status"] == "failed"]
        xfailed = sum(r["status"] == "xfail" for r in results)
        skipped = sum(r["status"] == "skipped" for r in results)
        rows.append((name, passed, len(failed), xfailed, skipped))
        total_pass += passed
        total_fail += len(failed)
        total_xfail += xfailed
        if args.failures:
            for r in failed:
                msg = str(r["exception"]).strip().splitlines()
                print(
                    f"  {name} {r['check_name']}: {type(r['exception']).__name__}: "
                    f"{msg[0][:160] if msg else ''}"
                )
    print(f"{'estimator':32s} {'pass':>5s} {'fail':>5s} {'xfail':>5s} {'skip':>5s}")
    for name, p, f, x, s in rows:
        print(f"{name:32s} {p:5d} {f:5d} {x:5d} {s:5d}")
    n = total_pass + total_fail
    print(
        f"{'total':32s} {total_pass:5d} {total_fail:5d} {total_xfail:5d}   "
        f"({100 * total_pass / max(n, 1):.1f}% of {n} non-xfail checks pass)"
    )


if __name__ == "__main__":
    main()
