"""The results report ``OUT/README.md`` (and ``README.html``) of a regeneration (issue 19).

:func:`write_report` reads what ``regenerate-benchmarks`` wrote into ``OUT``
(``regenerate.json`` and each table's ``.md``) and writes one page:

* a header: profile, seed, git commit, when, the wall time and how many
  trainings were reused;
* per benchmark, each of its tables as the evaluation wrote it (its title
  one level down, its provenance folded into a ``<details>`` block), then
  **ours against the paper** (:func:`paper_deltas`): every number that has
  a paper's number in the same row, with the difference;
* the figures: the evaluation's own (landmarks, X2Face grid, keypoints,
  offset curve, ...) and a training curve per training
  (:func:`training_curve_figure`: each validation metric against steps and
  against wall time), as PNG files under ``OUT/figures`` linked from the page;
  sound (the piano roll's rendered prediction) as an ``<audio>`` player
  with a link beside it.

``README.html`` is the same page through Python-Markdown (tables and fenced
code), for a browser.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".ogg", ".mp3", ".flac")  # figures that are sound: shown as players

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


def _first_number(text) -> float | None:
    m = _NUMBER.match(str(text)) if text not in (None, "") else None
    return float(m.group(1)) if m else None


def paper_deltas(row: dict) -> list[tuple[str, float, float]]:
    """``[(column, ours, paper)]`` of the numbers in ``row`` that have a paper's number beside them.

    Two layouts occur: a ``paper`` column beside ``value`` (the face tables:
    the paper's number first, its test set after it), and a ``thesis A/B/C``
    column whose parts are the paper's values of columns ``A``, ``B``, ``C``
    (the music tables; names may hold spaces, and words before the first
    name, such as a test set, are skipped: ``thesis VnYT RPA/RPA tol/PA``).
    """
    out = []
    for col, text in row.items():
        if not isinstance(text, str) or not text.strip():
            continue
        if col == "paper" and isinstance(row.get("value"), (int, float)):
            paper = _first_number(text)
            if paper is not None:
                out.append(("value", float(row["value"]), paper))
        elif col.startswith(("thesis ", "paper ")) and "/" in col:
            names = col.split(" ", 1)[1].split("/")
            words = names[0].split(" ")  # "VnYT RPA": the first name is the longest tail of words that is a column
            names[0] = next((" ".join(words[i:]) for i in range(len(words)) if " ".join(words[i:]) in row),
                            words[-1])
            parts = text.split("/")
            if len(names) != len(parts):
                continue
            for name, part in zip(names, parts):
                paper = _first_number(part)
                if paper is not None and isinstance(row.get(name), (int, float)):
                    out.append((name, float(row[name]), paper))
    return out


def _row_label(row: dict) -> str:
    from tasks.evaluation.compare import key_columns

    return " / ".join([v for v in key_columns(row).values() if v][:4]) or "row"


def deltas_table(rows: list[dict]) -> str:
    """A markdown table of :func:`paper_deltas` over ``rows`` (empty when no row has a paper's number)."""
    lines = []
    for row in rows:
        for col, ours, paper in paper_deltas(row):
            lines.append(f"| {_row_label(row)} | {col} | {ours:g} | {paper:g} | **{ours - paper:+.2f}** |")
    if not lines:
        return ""
    return "\n".join(["| row | number | ours | paper | ours - paper |", "| --- | --- | --- | --- | --- |", *lines])


def training_curve_figure(metrics_csv, out_png, title: str) -> str | None:
    """Each validation metric of a run's ``metrics.csv`` against steps and wall time; None when it has none."""
    rows = list(csv.DictReader(open(metrics_csv, newline=""))) if Path(metrics_csv).is_file() else []
    # the scores and losses; a chosen threshold or filter width is a setting, not a curve to read beside them
    cols = [c for c in (rows[0].keys() if rows else []) if c.startswith("val_")
            and not any(w in c for w in ("threshold", "sigma"))]
    series = {}
    for c in cols:
        pts = [(float(r["step"]), float(r.get("wall_s") or "nan"), float(r[c])) for r in rows if r.get(c)]
        if pts:
            series[c] = pts
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(10, 3.2))
    for c, pts in series.items():
        by_step.plot([p[0] for p in pts], [p[2] for p in pts], marker=".", label=c)
        by_time.plot([p[1] / 60 for p in pts], [p[2] for p in pts], marker=".", label=c)
    by_step.set_xlabel("step")
    by_time.set_xlabel("wall time (minutes)")
    by_step.set_title(title, fontsize=9)
    by_step.legend(fontsize=7)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return str(out_png)


def _split_provenance(md: str) -> tuple[str, str]:
    """(the table part, the provenance block) of an evaluation's markdown; its title demoted one level."""
    body, _, prov = md.partition("\n## Provenance\n")
    body = re.sub(r"^# ", "## ", body, count=1, flags=re.M)
    return body.strip(), prov.strip()


def write_report(out_dir) -> str:
    """Write ``OUT/README.md`` and ``OUT/README.html`` from ``OUT/regenerate.json``; return the markdown's path."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    run = json.loads((out / "regenerate.json").read_text())
    figures_dir = out / "figures"
    trainings = {f"{name}/{tname}": t for name, b in run["tables"].items()
                 for tname, t in b.get("trainings", {}).items()}
    for b in run["tables"].values():  # trainings of benchmarks left out (--only) that a table needed
        trainings.update(b.get("needed", {}))
    reused = sum(1 for t in trainings.values() if t.get("reused"))
    evaluations = sum(1 for b in run["tables"].values() if b.get("evaluation_reused"))
    lines = ["# sightsound results", "",
             f"Regenerated with `sightsound regenerate --profile {run['profile']} --seed {run['seed']}`: "
             f"commit {run.get('git_commit', 'unknown')}, code digest {run['code_digest']}, "
             f"{run.get('written', '')}. Wall time {run.get('wall_s', 0) / 60:.1f} minutes; "
             f"{reused} of {len(trainings)} trainings and {evaluations} of {len(run['tables'])} evaluations reused "
             "(their inputs were unchanged).", "",
             "Each table is ours beside the paper's numbers; the paper's were measured on the published data at "
             "the papers' sizes, ours on the profile's data and configs (the `sample` profile: generated sample "
             "sets and `small` networks), so read them for scale unless the profile is `paper`.", "",
             "| benchmark | tables | trainings (reused) | training time | evaluation time |",
             "| --- | --- | --- | --- | --- |"]
    for name, b in run["tables"].items():
        tr = b.get("trainings", {})
        lines.append(f"| [{name}](#{name}) | {', '.join(Path(m).stem for m in b.get('markdown', []))} | "
                     f"{len(tr)} ({sum(1 for t in tr.values() if t.get('reused'))}) | "
                     f"{b.get('training_wall_s', 0) / 60:.1f} min | {b.get('wall_s', 0) / 60:.1f} min"
                     f"{' (reused)' if b.get('evaluation_reused') else ''} |")
    lines.append("")
    for name, why in run.get("skipped", {}).items():  # benchmarks the profile cannot make
        lines += [f"**{name}** is not in the `{run['profile']}` profile: {why}.", ""]
    for name, b in run["tables"].items():
        lines += [f'<a id="{name}"></a>', "", f"# {name}", ""]
        for md_path in b.get("markdown", []):
            md = Path(md_path)
            if not md.is_file():
                lines += [f"`{md.name}` is missing.", ""]
                continue
            body, prov = _split_provenance(md.read_text())
            lines += [body, ""]
            parquet = md.with_suffix(".parquet")
            if parquet.is_file():
                deltas = deltas_table(pq.read_table(parquet).to_pylist())
                if deltas:
                    lines += ["**Ours against the paper** (positive: ours is higher; for an error, lower is "
                              "better):", "", deltas, ""]
            lines += [f"Files: [{md.name}]({md.name}), [{parquet.name}]({parquet.name}).", ""]
            if prov:
                lines += ["<details><summary>Provenance</summary>", "", prov, "", "</details>", ""]
        if b.get("needed"):
            lines += ["Also uses the trainings " + ", ".join(
                f"`{ref}`" + (" (reused)" if t.get("reused") else "") for ref, t in b["needed"].items())
                + " of other benchmarks.", ""]
        figs = [Path(f) for f in b.get("figures", [])]
        for tname, t in b.get("trainings", {}).items():
            csv_path = t.get("metrics_csv")
            if csv_path:
                fig = training_curve_figure(csv_path, figures_dir / f"curve-{name}-{tname}.png",
                                            f"{name} / {tname}: validation")
                if fig:
                    figs.append(Path(fig))
        for f in figs:
            rel = f.resolve().relative_to(out.resolve()) if f.resolve().is_relative_to(out.resolve()) else f
            if f.suffix.lower() in AUDIO_SUFFIXES:  # a player in the HTML page, a link in the markdown
                lines += [f'<audio controls src="{rel}"></audio> listen: [{f.name}]({rel})', ""]
            else:
                lines += [f"![{f.stem}]({rel})", ""]
    text = "\n".join(lines)
    (out / "README.md").write_text(text)
    import markdown

    html = markdown.markdown(text, extensions=["tables", "fenced_code", "md_in_html"])
    (out / "README.html").write_text("<!doctype html><meta charset=utf-8><title>sightsound results</title>"
                                     "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
                                     "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
                                     "padding:2px 6px}img{max-width:100%}pre{overflow:auto;background:#f6f6f6}"
                                     f"</style>\n{html}\n")
    return str(out / "README.md")
