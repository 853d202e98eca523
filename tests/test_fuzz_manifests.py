"""Fuzz test of every manifest reader (issue 11): each generated input parses to valid rows or is refused.

For PianoYT and violin CSVs, VoxCeleb txt folders, zips and CSVs, MAESTRO CSVs
and URMP folders, Hypothesis writes inputs that mix well-formed cells with
hostile ones (control characters, NUL, trailing newlines, inf/nan/1e300, huge
and negative numbers, path traversal, binary bytes, broken quoting, damaged
zips).  The reader must either return rows that hold the promises the builds
rely on (ids are plain tokens, crops finite and inside the reference, frame
numbers whole, sources without control characters, ...) or raise the project's
refusal (:class:`ManifestError`, :class:`MaestroError` for MAESTRO), whose
message is one line per problem; any other exception fails the test.  The
examples are derandomized (the same ones on every run) and 200 per reader.
A last test runs the CLI on refused manifests: exit 2, no traceback.
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tasks.datasets import maestro
from tasks.datasets.manifest import (
    MAX_PROBLEM_CHARS,
    MAX_PROBLEMS_SHOWN,
    ManifestError,
    check_video_id,
    read_pianoyt,
    read_violin,
)
from tasks.datasets.urmp import read_urmp
from tasks.datasets.voxceleb import (
    CSV_COLUMNS,
    MAX_FRAME,
    SPLITS as VOX_SPLITS,
    _is_token,
    check_reference,
    read_voxceleb_csv,
    read_voxceleb_txt,
)

ROOT = Path(__file__).resolve().parents[1]
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- cells

CONTROLS = ["\n", "\r", "\r\n", "\x00", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028"]
SPECIAL_NUMBERS = ["inf", "-inf", "nan", "NaN", "1e300", "-1e300", "1e400", "9" * 400, "-0", "0.5", "1_0",
                   "\u0661", "0x10", "", " ", "+1", "3", "1", "720", "1280", "1081", "1e-300"]
token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,12}", fullmatch=True)
youtube_id = st.from_regex(r"[A-Za-z0-9_-]{11}", fullmatch=True)
number = st.one_of(
    st.integers(-10, 3000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(SPECIAL_NUMBERS),
)
hostile = st.one_of(
    st.text(max_size=16),
    st.builds(lambda t, c, where: {0: t + c, 1: c + t, 2: t[:2] + c + t[2:]}[where], token, st.sampled_from(CONTROLS),
              st.integers(0, 2)),
    st.sampled_from(["..", ".", "../etc/passwd", "/etc/passwd", "-rf", "a b", "$(id)", "`id`", "a;b", "~", "*",
                     "http://[x", "file:///etc/passwd", "x" * 300, "a/" * 200, "\\\\server\\share"]),
)
cell = st.one_of(token, number, hostile)


@st.composite
def mutated(draw, cells: list[str], rate: int = 4) -> list[str]:
    """``cells`` as drawn, or (one time in ``rate``) with one cell replaced by a hostile one, or dropped or added."""
    cells = list(cells)
    if one_in(draw, rate):
        how = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        i = draw(st.integers(0, max(0, len(cells) - 1)))
        if how == "replace" and cells:
            cells[i] = draw(cell)
        elif how == "drop" and cells:
            del cells[i]
        else:
            cells.insert(i, draw(cell))
    return cells


def csv_bytes(rows: list[list[str]], quoted: bool, junk: bytes, bom: bool) -> bytes:
    """Rows as CSV (properly quoted, or joined with commas as a careless writer would), then ``junk`` bytes."""
    if quoted:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        text = buf.getvalue()
    else:
        text = "".join(",".join(r) + "\n" for r in rows)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", errors="surrogatepass") + junk


def one_in(draw, odds: int) -> bool:
    """True about one time in ``odds`` (the middle value: Hypothesis favours an integer range's ends)."""
    return draw(st.integers(0, odds - 1)) == odds // 2


@st.composite
def rarely(draw, strategy, otherwise, odds: int = 6):
    """``otherwise`` most of the time, a draw of ``strategy`` about one time in ``odds``."""
    return draw(strategy) if one_in(draw, odds) else otherwise


junk = rarely(st.binary(max_size=24), b"")


# ---------------------------------------------------------------- the promises of a result


def check_refusal(err: Exception) -> None:
    """A refusal the CLI prints as it is: one line per problem, none too long, no control characters."""
    text = str(err)
    lines = text.split("\n")
    assert not any(CONTROL.search(line) for line in lines), text
    if isinstance(err, ManifestError):
        assert err.problems
        assert len(lines) == 1 + min(len(err.problems), MAX_PROBLEMS_SHOWN) + (len(err.problems) > MAX_PROBLEMS_SHOWN)
        assert all(len(p) <= MAX_PROBLEM_CHARS for p in err.problems)
    else:
        assert len(lines) == 1 and len(text) <= 500, text


def run_reader(fn, *args, **kwargs):
    """The reader's rows, or None after checking its refusal; any other exception propagates (a failure)."""
    try:
        rows = fn(*args, **kwargs)
    except (ManifestError, maestro.MaestroError) as err:
        check_refusal(err)
        event("refused")
        return None
    event("parsed")
    return rows


def check_video_rows(rows, reference, splits=("train", "test")) -> None:
    width, height = reference
    assert rows
    ids = [r.video_id for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows:
        assert check_video_id(r.video_id) == r.video_id
        assert r.split in splits
        assert all(isinstance(v, int) for v in r.crop), r.crop
        min_y, max_y, min_x, max_x = r.crop
        assert 0 <= min_y < max_y <= height and 0 <= min_x < max_x <= width, (r.crop, reference)
        assert isinstance(r.source, str) and r.source and not CONTROL.search(r.source)


def check_utterances(utts) -> None:
    assert utts
    keys = [u.key for u in utts]
    assert len(set(keys)) == len(keys)
    for u in utts:
        assert _is_token(u.identity) and _is_token(u.utterance) and check_reference(u.video_id) == u.video_id
        assert not CONTROL.search(u.key) and "/" not in u.key
        assert u.units in ("vox1", "vox2") and u.split in VOX_SPLITS
        assert isinstance(u.source, str) and u.source and not CONTROL.search(u.source)
        assert u.boxes
        frames = [b[0] for b in u.boxes]
        assert all(0 <= f <= MAX_FRAME and f == int(f) for f in frames)
        assert all(b > a for a, b in zip(frames, frames[1:]))
        for _, x, y, w, h in u.boxes:
            assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0
            if u.units == "vox2":
                assert max(x, y, w, h) <= 1.0
        assert 0 <= u.first_frame <= u.last_frame


# ---------------------------------------------------------------- PianoYT and violin CSVs

REFERENCES = st.sampled_from([(1280, 720), (1920, 1080), (640, 360)])


@st.composite
def pianoyt_rows(draw, reference) -> list[list[str]]:
    """Mostly well-formed rows (ids unique, boxes near or inside ``reference``), a few mutated."""
    width, height = reference
    rows = []
    for i in range(draw(st.integers(1, 5))):
        min_y = draw(st.integers(0, height - 2))
        max_y = draw(st.integers(min_y + 1, int(height * 1.02)))  # now and then past the 1% slack
        min_x = draw(st.integers(0, width - 2))
        max_x = draw(st.integers(min_x + 1, int(width * 1.02)))
        url = draw(youtube_id | st.sampled_from(["videos/a.mp4", "https://example.org/v.mp4", "file:///v/a.mp4"]))
        good = [f"v{i}{draw(token)}", url, draw(st.sampled_from(["1", "3"])), str(min_y), str(max_y), str(min_x),
                str(max_x)]
        rows.append(draw(mutated(good)))
    return rows


@FUZZ
@given(data=st.data(), header=st.booleans(), quoted=st.booleans(), junk=junk, bom=st.booleans(),
       reference=REFERENCES, violin=st.booleans())
def test_fuzz_pianoyt_and_violin_csv(data, header, quoted, junk, bom, reference, violin):
    rows = data.draw(pianoyt_rows(reference))
    if header:
        rows = [["video_id", "url", "split", "min_y", "max_y", "min_x", "max_x"]] + rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.csv"
        path.write_bytes(csv_bytes(rows, quoted, junk, bom))
        out = run_reader(read_violin if violin else read_pianoyt, path, reference)
        if out is not None:
            check_video_rows(out, reference)


# ---------------------------------------------------------------- VoxCeleb txt folders and zips

name_part = st.one_of(
    token, youtube_id,
    st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and "\x00" not in s and s not in (".", "..")),
    st.builds(lambda t, c: t + c, token, st.sampled_from([c for c in CONTROLS if c != "\x00"])),
)


@st.composite
def txt_body(draw, identity: str, ref: str, units: str) -> bytes:
    """One utterance file: header lines (right, wrong or missing), the FRAME line, rows; now and then junk."""
    kind = draw(st.sampled_from(["good"] * 18 + ["text", "binary"]))
    if kind == "text":
        return draw(st.text(max_size=80)).encode("utf-8", errors="surrogatepass")
    if kind == "binary":
        return draw(st.binary(max_size=80))
    lines = []
    if draw(st.booleans()):
        lines.append(f"Identity  : \t{draw(rarely(hostile | st.just(identity + 'x'), identity, 12))}")
    if draw(st.booleans()):
        lines.append(f"Reference : \t{draw(rarely(hostile | st.just(ref + 'x'), ref, 12))}")
    lines += ["Offset    : \t1", ""]
    if not one_in(draw, 20):
        lines.append("FRAME \tX \tY \tW \tH ")
    first = draw(st.integers(0, 3000))
    for k in range(draw(st.integers(1, 5))):
        if units == "vox1":  # pixels of a 360-pixel-high frame
            box = [draw(st.integers(-20, 400)), draw(st.integers(-20, 300)), draw(st.integers(2, 300)),
                   draw(st.integers(2, 300))]
        else:  # fractions of the frame
            box = [f"{draw(st.floats(0, 0.9)):.3f}", f"{draw(st.floats(0, 0.9)):.3f}",
                   f"{draw(st.floats(0.01, 1)):.3f}", f"{draw(st.floats(0.011, 1)):.4f}"]
        good = [f"{first + k:06d}", *map(str, box)]
        lines.append(" \t".join(draw(mutated(good, rate=12))))
    if one_in(draw, 20):
        lines.append(draw(hostile))
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")


@st.composite
def vox_entries(draw) -> list[tuple[str, bytes]]:
    """``(relative name, content)`` of up to four utterance files, names now and then hostile."""
    out = []
    units = draw(st.sampled_from(["vox1", "vox2"]))
    for i in range(draw(st.integers(1, 3))):
        identity = draw(rarely(name_part, f"id1000{i % 2}", 12))
        ref = draw(rarely(name_part, ("1zcIwhmdeo4", "-FSZOm5JbHD")[i % 2], 12))
        utt = draw(rarely(name_part, f"{i + 1:05d}", 12))
        name = f"txt/{identity}/{ref}/{utt}.txt"
        if one_in(draw, 20):
            name = draw(st.sampled_from([f"{identity}/{utt}.txt", f"txt/{identity}/{ref}/{utt}", f"a/b/{name}"]))
        out.append((name, draw(txt_body(identity, ref, draw(rarely(st.just("vox1"), units, 10))))))
    return out


CONVENTIONS = st.sampled_from(["auto", "auto", "auto", "vox1", "vox1", "vox2"])
TEMPLATES = st.sampled_from(["https://www.youtube.com/watch?v={id}", "videos/{id}.mp4", "/media/{id}.mp4"])


@FUZZ
@given(entries=vox_entries(), convention=CONVENTIONS, template=TEMPLATES)
def test_fuzz_voxceleb_txt_folder(entries, convention, template):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "vox"
        root.mkdir()
        for name, data in entries:
            f = root / name
            try:
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            except OSError:  # a name the file system refuses (a clash of a file and a folder): not an input
                continue
        out = run_reader(read_voxceleb_txt, root, convention, template, base_dir=tmp)
        if out is not None:
            check_utterances(out)


@FUZZ
@given(entries=vox_entries(), extra_names=rarely(st.lists(st.text(max_size=20), min_size=1, max_size=2), []),
       convention=CONVENTIONS, damage=rarely(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3), []),
       truncate=rarely(st.just(True), False, 10))
@example(entries=[("txt/id10000/1zcIwhmdeo4/00001.txt", b"")], extra_names=["\x00"], convention="auto",
         damage=[], truncate=False)  # CI stop 23: a name that is only a NUL once broke the test's own zip writer
def test_fuzz_voxceleb_zip(entries, extra_names, convention, damage, truncate):
    import warnings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vox.zip"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names are part of the fuzz
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in entries:
                    zf.writestr(name, data)
                for name in extra_names:  # any name at all, NUL and newlines included
                    if not name.split("\x00")[0]:
                        continue  # zipfile cuts a name at its first NUL and cannot write an empty one: not an input
                    zf.writestr(name + ".txt", b"FRAME X Y W H\n1 1 1 1 1\n")
        data = bytearray(path.read_bytes())
        for where, value in damage:
            data[min(len(data) - 1, int(where * len(data)))] = value
        if truncate:
            data = data[: len(data) // 2]
        path.write_bytes(bytes(data))
        out = run_reader(read_voxceleb_txt, path, convention, base_dir=tmp)
        if out is not None:
            check_utterances(out)


@st.composite
def vox_csv_rows(draw, header: list[str]) -> list[list[str]]:
    """Mostly well-formed rows in ``header``'s column order, a few mutated."""
    rows = []
    splits = {"alice": draw(st.sampled_from(["", "train"])), "bob": "", "carol": draw(st.sampled_from(["", "test"]))}
    for i in range(draw(st.integers(1, 5))):
        start = draw(st.floats(0, 600, allow_nan=False))
        identity = draw(st.sampled_from(sorted(splits)))
        good = {"video_id": draw(youtube_id), "url": draw(youtube_id | st.sampled_from(["videos/a.mp4"])),
                "start": repr(start), "end": repr(start + draw(st.floats(0.05, 30))),
                "x": repr(draw(st.floats(0, 1))), "y": repr(draw(st.floats(0, 1))),
                "w": repr(draw(st.floats(0.01, 1))), "h": repr(draw(st.floats(0.01, 1))),
                "identity": identity, "split": splits[identity], "utterance": f"{i:05d}"}
        rows.append(draw(mutated([good.get(h, "") for h in header], rate=6)))
    return rows


@FUZZ
@given(data=st.data(), header=st.permutations(list(CSV_COLUMNS) + ["utterance"]), drop=st.integers(0, 40),
       quoted=st.booleans(), junk=junk, bom=st.booleans())
def test_fuzz_voxceleb_csv(data, header, drop, quoted, junk, bom):
    header = [h for i, h in enumerate(header) if i != drop]  # now and then a required column is missing
    rows = data.draw(vox_csv_rows(header))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "faces.csv"
        path.write_bytes(csv_bytes([header] + rows, quoted, junk, bom))
        out = run_reader(read_voxceleb_csv, path)
        if out is not None:
            check_utterances(out)
            assert all(u.region and u.units == "vox2" for u in out)


# ---------------------------------------------------------------- MAESTRO CSV

maestro_name = st.one_of(
    st.sampled_from(["a.wav", "a.midi", "2018/b.wav", "2018/b.midi", "missing.wav", "../outside.wav", "/etc/passwd",
                     "2018/../a.wav", "2018", ".", ""]),
    hostile,
)
@st.composite
def maestro_rows(draw, header: list[str]) -> list[list[str]]:
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        stem = draw(st.sampled_from(["a", "2018/b"]))
        good = {"split": draw(st.sampled_from(maestro.SPLITS)), "midi_filename": f"{stem}.midi",
                "audio_filename": f"{stem}.wav", "duration": repr(draw(st.floats(0, 1000))),
                "canonical_title": draw(st.text(max_size=10))}
        row = [good[h] for h in header]
        if one_in(draw, 4) and row:
            row[draw(st.integers(0, len(row) - 1))] = draw(maestro_name)
        rows.append(draw(mutated(row, rate=6)))
    return rows


@FUZZ
@given(data=st.data(), header=st.permutations(["split", "midi_filename", "audio_filename", "duration",
                                               "canonical_title"]),
       drop=st.integers(0, 20), quoted=st.booleans(), junk=junk, bom=st.booleans(), check_files=st.booleans())
def test_fuzz_maestro_csv(data, header, drop, quoted, junk, bom, check_files):
    header = [h for i, h in enumerate(header) if i != drop]
    rows = data.draw(maestro_rows(header))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "maestro"
        (root / "2018").mkdir(parents=True)
        for name in ("a.wav", "a.midi", "2018/b.wav", "2018/b.midi"):
            (root / name).write_bytes(b"")
        (Path(tmp) / "outside.wav").write_bytes(b"")
        (root / "maestro-v3.0.0.csv").write_bytes(csv_bytes([header] + rows, quoted, junk, bom))
        out = run_reader(maestro.read_maestro, root, check_files=check_files)
        if out is not None:
            base = root.resolve()
            for r in out:
                assert r.split in maestro.SPLITS
                for f in (r.audio, r.midi):
                    assert f.is_absolute() and base in f.parents and not CONTROL.search(str(f))
                    assert f.is_file() or not check_files
                assert math.isfinite(r.duration) and 0 <= r.duration <= maestro.MAX_DURATION_S


# ---------------------------------------------------------------- URMP folders

piece_digits = st.one_of(*[st.from_regex(r"[0-9]{1,3}", fullmatch=True)] * 8,
                         st.sampled_from(["\u0660\u0661", "\uff11", ""]))
piece_title = st.one_of(*[st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True)] * 8,
                        st.sampled_from(["", "a b", "T" * 130]))
instrument = st.sampled_from(["vn"] * 6 + ["vc", "va", "fl", "VN", "v1", ""])
piece_tail = st.sampled_from([""] * 12 + ["_", "\n", "!", " ", "_x", "\r", "_" + "a" * 24 + "!"])


@st.composite
def urmp_piece(draw):
    number, title = draw(piece_digits), draw(piece_title)
    insts = draw(st.lists(instrument, min_size=1, max_size=4))
    name = f"{number}_{title}_{'_'.join(insts)}{draw(piece_tail)}"
    if one_in(draw, 12):
        name = draw(name_part)
    files = []
    if not one_in(draw, 20):
        files.append(f"Vid_{number}_{title}_{'_'.join(insts)}.mp4")
    for k, inst in enumerate(insts, start=1):
        if not one_in(draw, 20):
            files.append(f"AuSep_{k}_{inst}_{number}_{title}.wav")
        if not one_in(draw, 20):
            files.append(f"F0s_{k}_{inst}_{number}_{title}.txt")
    return name, files


@FUZZ
@given(pieces=st.lists(urmp_piece(), min_size=1, max_size=3), reference=REFERENCES)
def test_fuzz_urmp_folders(pieces, reference):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "URMP"
        root.mkdir()
        for name, files in pieces:
            try:
                (root / name).mkdir(exist_ok=True)
                for f in files:
                    (root / name / f).write_bytes(b"")
            except OSError:  # a name the file system refuses: not an input
                continue
        out = run_reader(read_urmp, root, crop_reference=reference)
        if out is not None:
            check_video_rows(out, reference)
            for r in out:
                assert re.fullmatch(r"urmp_[0-9]+_[A-Za-z0-9]+_[0-9]+", r.video_id)
                assert all(Path(s).is_file() for s in (r.source, r.audio_source, r.pitch_source))


# ---------------------------------------------------------------- the CLI: exit 2, one line per problem


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_cli_refuses_bad_manifests_with_exit_2_and_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('a,u,1,inf,720,0,1280\nb,u,1,800,900,1300,1400\n"c\x00",u,1,0,10,0,10\n'
                   "d,u,1,0,1e300,0,10\ne,u,1,0,10,0,10\n", newline="")
    data = tmp_path / "data"
    for command in (["build-pianoyt"], ["build-violinyt"]):
        proc = _cli(*command, "--manifest", str(bad), "--data-root", str(data))
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr + proc.stdout
        lines = proc.stderr.rstrip("\n").split("\n")
        assert lines[0] == f"error: manifest {bad} has 4 problem(s):", lines
        assert [line.split(":")[0] for line in lines[1:]] == ["  - row 1", "  - row 2", "  - row 3", "  - row 4"]
        assert all(len(line) < 250 for line in lines[1:]) and "0" * 30 not in proc.stderr
    # a crop reference that is no size is refused by argparse, also with exit 2
    proc = _cli("build-pianoyt", "--manifest", str(bad), "--data-root", str(data), "--crop-reference", "0x0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "WIDTHxHEIGHT" in proc.stderr
    # a binary manifest, and the VoxCeleb zip with newlines in its folder names
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xef\xbb\xbf\x00\x01\xff" * 10)
    proc = _cli("build-pianoyt", "--manifest", str(binary), "--data-root", str(data))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"error: manifest {binary} has 1 problem(s):",
                                        "  - not UTF-8 text (byte 0xff at offset 5): a manifest is a UTF-8 CSV or text file"]
    zp = tmp_path / "vox1.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("txt/id10002\n/2ogRTCEBL0p/00001\n.txt", "FRAME X Y W H\n000245 227 61 126 126\n")
    proc = _cli("build-voxceleb", "--metadata", str(zp), "--data-root", str(data))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: manifest {zp} has 1 problem(s):",
        "  - vox1.zip:txt/id10002\\n/2ogRTCEBL0p/00001\\n.txt: identity 'id10002\\n'; utterance '00001\\n' "
        "are not plain tokens"]
    assert not data.exists()
