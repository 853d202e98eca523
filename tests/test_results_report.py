"""tasks.evaluation.compare (regenerate --check) and tasks.evaluation.report (OUT/README.md), on tables made here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.evaluation import compare as C
from tasks.evaluation.report import paper_deltas, write_report
from tasks.evaluation.results import write_results

REPO = Path(__file__).resolve().parents[1]

PIANO = [{"test set": "PianoYT test", "model": "slope", "threshold": 0.5, "F1": 66.0, "F1 95% CI": "60.0-72.0",
          "thesis P/R/Acc/F1": "62.23/73.00/53.33/66.63"},
         {"test set": "MIDI test set", "model": "slope", "threshold": 0.5, "F1": 70.0, "F1 95% CI": "65.5-74.1",
          "thesis P/R/Acc/F1": ""}]
FACES = [{"features": "fabnet", "target": "landmarks", "metric": "error_iod_pct", "value": 8.0, "low": 7.0,
          "high": 9.5, "n_test": 40, "paper": "5.44 (MAFL)"}]


def test_intervals_and_keys_are_read_from_both_table_layouts():
    assert C._interval("59.6-79.4") == pytest.approx((59.55, 79.45))  # widened by the printed rounding
    assert C._interval("-3.1--1.2") == pytest.approx((-3.15, -1.15))
    assert C._interval("2026-12-07") is None and C._interval(3.0) is None
    assert C.intervals_of(PIANO[0]) == {"F1": pytest.approx((59.95, 72.05))}
    assert C.intervals_of(FACES[0]) == {"value": (7.0, 9.5)}
    assert C.intervals_of({**FACES[0], "low": float("nan"), "high": float("nan")}) == {}
    assert C.row_key(PIANO[0]) == "test set=PianoYT test, model=slope"


def test_a_number_moves_only_beyond_its_interval_and_every_other_change_is_listed():
    assert C.compare_rows("t", PIANO, [dict(r) for r in PIANO]) == []
    inside = [{**PIANO[0], "F1": 71.9, "F1 95% CI": "65.0-78.0"}, PIANO[1]]
    assert C.compare_rows("t", PIANO, inside) == []  # moved, but within the old interval
    outside = [{**PIANO[0], "F1": 72.5}, {**PIANO[1], "threshold": 0.45}]
    moved = C.compare_rows("t", PIANO, outside)
    assert [(m.column, m.why.split(" ")[0]) for m in moved] == [("F1", "outside"), ("threshold", "changed")]
    assert "59.95-72.05" in moved[0].why
    faces = C.compare_rows("f", FACES, [{**FACES[0], "value": 10.0, "low": 9.0, "high": 11.0}])
    assert [(m.column, m.old, m.new) for m in faces] == [("value", 8.0, 10.0)]  # low/high are the interval itself
    rounded = [{**PIANO[0], "F1": 2.61, "F1 95% CI": "2.6-2.6"}]  # the interval printed at one decimal
    assert C.compare_rows("t", rounded, [dict(rounded[0])]) == []
    assert [m.why for m in C.compare_rows("t", rounded, [{**rounded[0], "F1": 2.7}])] == \
        ["outside the old interval 2.55-2.65"]
    gone = C.compare_rows("t", PIANO, PIANO[:1])
    assert [m.why for m in gone] == ["row only in the old table"]


def test_compare_folders_reads_the_parquet_tables(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    write_results(old, "piano-onsets", "t", PIANO, {"git_commit": "a"})
    write_results(old, "fabnet", "f", FACES, {"git_commit": "a"})
    write_results(new, "piano-onsets", "t", PIANO, {"git_commit": "b"})  # provenance differs: not compared
    moved, tables = C.compare_folders(old, new)
    assert tables == ["fabnet", "piano-onsets"]
    assert [(m.table, m.why) for m in moved] == [("fabnet", "table only in the old results")]
    text = C.format_check(moved, tables, old, new)
    assert "1 differences in 1 of 2 tables" in text
    assert "No number moved" in C.format_check([], tables, old, new)
    with pytest.raises(FileNotFoundError, match="no such results folder"):
        C.compare_folders(tmp_path / "nope", new)


def test_paper_deltas_of_both_layouts():
    assert paper_deltas(PIANO[0]) == [("F1", 66.0, 66.63)]  # P, R, Acc are not columns of this row
    assert paper_deltas(PIANO[1]) == []
    assert paper_deltas(FACES[0]) == [("value", 8.0, 5.44)]
    violin = {"network": "5 frames", "RPA": 40.0, "RPA tol": 45.0, "PA": 30.0, "ACE": 2.0,
              "thesis VnYT RPA/RPA tol/PA/ACA/ACE": "62.5/67.89/48.44/51.77/2.34"}
    assert paper_deltas(violin) == [("RPA", 40.0, 62.5), ("RPA tol", 45.0, 67.89), ("PA", 30.0, 48.44),
                                    ("ACE", 2.0, 2.34)]  # ACA is not a column of this row


def test_the_report_holds_every_table_its_deltas_figures_and_curves(tmp_path):
    out = tmp_path / "R"
    md1, _ = write_results(out, "piano-onsets", "Visual piano onsets", PIANO, {"git_commit": "abc"})
    md2, _ = write_results(out, "fabnet", "FAb-Net probes", FACES, {"git_commit": "abc"})
    (out / "figures").mkdir()
    (out / "figures" / "landmarks.png").write_bytes(b"\x89PNG")
    (out / "figures" / "piano-roll-slope.wav").write_bytes(b"RIFF")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,train_loss,val_f1,wall_s\n0,1,0.5,,\n0,2,,0.3,10.0\n0,4,,0.5,21.0\n")
    (run / "empty.csv").write_text("epoch,step,train_loss\n0,1,0.5\n")
    (out / "regenerate.json").write_text(json.dumps({
        "profile": "tiny", "seed": 0, "code_digest": "c0de", "git_commit": "abc", "written": "now", "wall_s": 120,
        "skipped": {"violin-pitch": "no violin here"},
        "tables": {"piano-onsets": {"markdown": [md1], "wall_s": 60,
                                    "figures": [str(out / "figures" / "piano-roll-slope.wav")], "trainings": {
                       "slope": {"reused": True, "metrics_csv": str(run / "metrics.csv")},
                       "resnet": {"reused": False, "metrics_csv": str(run / "empty.csv")}}},
                   "faces": {"markdown": [md2], "figures": [str(out / "figures" / "landmarks.png")],
                             "trainings": {}, "wall_s": 60}}}))
    text = Path(write_report(out)).read_text()
    assert "1 of 2 trainings and 0 of 2 evaluations reused" in text
    assert "**violin-pitch** is not in the `tiny` profile: no violin here." in text  # a table the profile lacks
    assert "## Visual piano onsets" in text and "## FAb-Net probes" in text
    assert "| PianoYT test / slope | F1 | 66 | 66.63 | **-0.63** |" in text
    assert "| fabnet / landmarks / error_iod_pct | value | 8 | 5.44 | **+2.56** |" in text
    assert "![landmarks](figures/landmarks.png)" in text
    assert "![curve-piano-onsets-slope](figures/curve-piano-onsets-slope.png)" in text
    assert (out / "figures" / "curve-piano-onsets-slope.png").stat().st_size > 1000
    assert not (out / "figures" / "curve-piano-onsets-resnet.png").exists()  # no validation rows: no curve
    assert "<details><summary>Provenance</summary>" in text and '"git_commit": "abc"' in text
    html = (out / "README.html").read_text()
    assert "<table>" in html and '<img alt="landmarks" src="figures/landmarks.png"' in html
    # sound is a player in the page and a link in the markdown, never an image
    assert ('<audio controls src="figures/piano-roll-slope.wav"></audio> listen: '
            '[piano-roll-slope.wav](figures/piano-roll-slope.wav)') in text
    assert '<audio controls src="figures/piano-roll-slope.wav"></audio>' in html and "![piano-roll" not in text


def test_regenerate_check_refuses_a_folder_without_tables(tmp_path):
    (tmp_path / "old").mkdir()
    for args, said in (([str(tmp_path / "old")], "no results tables"), ([str(tmp_path / "R")], "another folder")):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", "regenerate", "--profile", "tiny", "--out",
                               str(tmp_path / "R"), "--check", *args], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2, proc.stderr
        assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
