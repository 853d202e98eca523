"""Compare a regeneration's results tables with earlier ones (``sightsound regenerate --check OLD``).

Every table is a ``<name>.parquet`` of rows (:func:`tasks.evaluation.results.write_results`).
Rows of the old and the new table are matched by their *key*: the text
columns that are neither an interval nor the paper's numbers (test set,
model, config, target, ...).  Then every number of a matched row is compared:

* a number with an interval (the face tables' ``value`` with ``low`` and
  ``high``; the music tables' ``F1`` with ``F1 95% CI`` written ``lo-hi``,
  whose bounds are widened by the rounding of their printed decimals) has
  *moved* when the new value lies outside the old interval;
* a number without one (a threshold, a count, a step) has moved when it
  differs at all (beyond float rounding, :data:`RTOL`).

Rows or tables present on one side only are listed too.  Nothing here reads
the provenance: two regenerations on other commits are compared by their
numbers alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

RTOL = 1e-9
CI_SUFFIX = " 95% CI"
SKIP_WORDS = ("thesis", "paper", "CI", "interval")


@dataclass(frozen=True)
class Moved:
    """One difference: ``table``, the row's ``key``, the ``column``, old and new values, and why it counts."""

    table: str
    key: str
    column: str
    old: object
    new: object
    why: str


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _interval(text) -> tuple[float, float] | None:
    """``"59.6-79.4"`` -> (59.55, 79.45): the bounds widened by the rounding of their printed decimals (half a unit
    of the last); None when it is not an interval (negative bounds allowed: ``-3.1--1.2``)."""
    if not isinstance(text, str):
        return None
    for i in range(1, len(text)):
        if text[i] == "-" and text[i - 1] != "-" and text[i - 1] != "e":
            try:
                lo, hi = float(text[:i]), float(text[i + 1:])
            except ValueError:
                continue
            decimals = max(len(part.partition(".")[2]) for part in (text[:i], text[i + 1:]))
            half = 0.5 * 10 ** -decimals if "e" not in text.lower() else 0.0
            return lo - half, hi + half
    return None


def key_columns(row: dict) -> dict:
    """The row's identifying columns: its text columns other than intervals and the paper's numbers, in order."""
    return {k: v for k, v in row.items()
            if isinstance(v, str) and not any(w in k for w in SKIP_WORDS) and _interval(v) is None}


def row_key(row: dict) -> str:
    """The row's identity (:func:`key_columns`) as one string."""
    return ", ".join(f"{k}={v}" for k, v in key_columns(row).items()) or "(row)"


def intervals_of(row: dict) -> dict[str, tuple[float, float]]:
    """``{column: (low, high)}`` of the numbers in ``row`` that carry an interval."""
    out = {}
    if _is_number(row.get("value")) and _is_number(row.get("low")) and _is_number(row.get("high")) \
            and not (math.isnan(row["low"]) or math.isnan(row["high"])):  # (NaN: no interval, compared exactly)
        out["value"] = (float(row["low"]), float(row["high"]))
    for k, v in row.items():
        if k.endswith(CI_SUFFIX) and (iv := _interval(v)) is not None and k[:-len(CI_SUFFIX)] in row:
            out[k[:-len(CI_SUFFIX)]] = iv
    return out


def compare_rows(table: str, old_rows: list[dict], new_rows: list[dict]) -> list[Moved]:
    """Every number of ``new_rows`` that moved from ``old_rows`` (matched by :func:`row_key`), and unmatched rows."""
    def by_key(rows):
        keyed: dict[str, dict] = {}
        for i, r in enumerate(rows):
            k = row_key(r)
            keyed[k if k not in keyed else f"{k} (#{i})"] = r
        return keyed

    old, new = by_key(old_rows), by_key(new_rows)
    moved = [Moved(table, k, "", "row", None, "row only in the old table") for k in old if k not in new]
    moved += [Moved(table, k, "", None, "row", "row only in the new table") for k in new if k not in old]
    for k in (k for k in new if k in old):
        o, n = old[k], new[k]
        bounds = intervals_of(o)
        skip = {"low", "high"} if "value" in bounds else set()
        for col, nv in n.items():
            ov = o.get(col)
            if col in skip or not (_is_number(nv) or _is_number(ov)):
                continue
            if not (_is_number(nv) and _is_number(ov)):
                moved.append(Moved(table, k, col, ov, nv, "a number on one side only"))
            elif math.isnan(nv) or math.isnan(ov):
                if math.isnan(nv) != math.isnan(ov):
                    moved.append(Moved(table, k, col, ov, nv, "NaN on one side only"))
            elif math.isclose(nv, ov, rel_tol=RTOL, abs_tol=1e-12):
                continue
            elif col in bounds:
                lo, hi = bounds[col]
                if not lo <= nv <= hi:
                    moved.append(Moved(table, k, col, ov, nv, f"outside the old interval {lo:g}-{hi:g}"))
            else:
                moved.append(Moved(table, k, col, ov, nv, "changed (no interval)"))
    return moved


def read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def compare_folders(old_dir, new_dir) -> tuple[list[Moved], list[str]]:
    """(every moved number over the tables of both folders, the table names compared)."""
    old_dir, new_dir = Path(old_dir), Path(new_dir)
    if not old_dir.is_dir():
        raise FileNotFoundError(f"{old_dir}: no such results folder")
    old = {p.stem: p for p in old_dir.glob("*.parquet")}
    new = {p.stem: p for p in new_dir.glob("*.parquet")}
    if not old:
        raise ValueError(f"{old_dir}: no results tables (*.parquet) to compare with")
    moved = [Moved(t, "", "", "table", None, "table only in the old results") for t in sorted(set(old) - set(new))]
    moved += [Moved(t, "", "", None, "table", "table only in the new results") for t in sorted(set(new) - set(old))]
    for t in sorted(set(old) & set(new)):
        moved += compare_rows(t, read_rows(old[t]), read_rows(new[t]))
    return moved, sorted(set(old) | set(new))


def format_check(moved: list[Moved], tables: list[str], old_dir, new_dir) -> str:
    """The comparison as markdown: a verdict line, then one row per moved number."""
    head = [f"# Check: {new_dir} against {old_dir}", ""]
    if not moved:
        return "\n".join(head + [f"No number moved beyond its interval in {len(tables)} tables "
                                 f"({', '.join(tables)}).", ""])
    lines = head + [f"{len(moved)} differences in {len({m.table for m in moved})} of {len(tables)} tables.", "",
                    "| table | row | column | old | new | why |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {m.table} | {m.key} | {m.column} | {m.old} | {m.new} | {m.why} |" for m in moved]
    return "\n".join(lines + [""])
