"""Results tables beside the papers' numbers, with where they came from.

:func:`write_results` writes ``<out>/<name>.md`` (the table, what the
numbers are and are not, and a provenance block) and ``<out>/<name>.parquet``
(the rows, with the provenance in the schema's metadata).  Provenance: the
git commit of this checkout (and whether it had uncommitted changes), the
versions of the packages that made the numbers, the data root and a digest
of the shard files read (size and content fingerprints), and what the caller
adds (config, seed, device, wall time, checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("sightsound", "torch", "torchvision", "lightning", "mir_eval", "numpy", "pyarrow")


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if head.returncode:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def shards_digest(files) -> str:
    """SHA-256 over the sorted names and content fingerprints of ``files``."""
    from tasks.store.cache import file_fingerprint

    h = hashlib.sha256()
    for f in sorted(map(str, files)):
        h.update(f"{Path(f).name}\0{file_fingerprint(f)}\n".encode())
    return h.hexdigest()[:16]


def provenance(data_root: str, shard_files, **extra) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {"git_commit": git_commit(), "packages": versions, "python": platform.python_version(),
            "data_root": str(data_root), "shards": len(list(shard_files)), "shards_digest": shards_digest(shard_files),
            "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **extra}


def write_results(out_dir, name: str, title: str, rows: list[dict], prov: dict, notes: str = "") -> tuple[str, str]:
    """Write the markdown and Parquet results of ``rows``; return their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.datasets.records import format_table
    from tasks.store.atomic import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{name}.md"
    text = [f"# {title}", "", format_table(rows), ""]
    if notes:
        text += [notes.strip(), ""]
    text += ["## Provenance", "", "```json", json.dumps(prov, indent=1, default=str), "```", ""]
    write_text_atomic(md, "\n".join(text))
    table = pa.Table.from_pylist([{k: (v if isinstance(v, (int, float)) else str(v)) for k, v in r.items()}
                                  for r in rows])
    table = table.replace_schema_metadata({"provenance": json.dumps(prov, default=str)})
    parquet = out / f"{name}.parquet"
    tmp = parquet.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(parquet)
    return str(md), str(parquet)
