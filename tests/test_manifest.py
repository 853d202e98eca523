import pytest

from tasks.manifest import ManifestError, check_video_id, read_pianoyt, resolve_source


def write(tmp_path, text, name="m.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_published_format_without_header(tmp_path):
    p = write(tmp_path, "1,https://www.youtube.com/watch?v=abcdefghijk,1,550,720,0,1280\n"
                        "2,abcdefghijk,3,10,20,30,40\n")
    rows = read_pianoyt(p)
    assert [r.video_id for r in rows] == ["1", "2"]
    assert rows[0].split == "train" and rows[1].split == "test"
    assert rows[0].crop == (550, 720, 0, 1280)
    assert rows[1].source == "https://www.youtube.com/watch?v=abcdefghijk"


def test_reads_with_header_and_relative_paths(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"x")
    p = write(tmp_path, "video_id,url,split,min_y,max_y,min_x,max_x\na,videos/a.mp4,1,0,10,0,10\n")
    rows = read_pianoyt(p)
    assert rows[0].source == str((tmp_path / "videos" / "a.mp4").resolve())


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("a,u,1,0,10,0", "expected 7 columns"),
        ("a,u,1,0,10,0,10,5", "expected 7 columns"),
        ("a,u,2,0,10,0,10", "unknown split code 2"),
        ("a,u,x,0,10,0,10", "not an integer"),
        ("a,u,1,10,10,0,10", "empty or inverted"),
        ("a,u,1,0,10,20,10", "empty or inverted"),
        ("a,u,1,0,10,-1,10", "negative"),
        ("a,u,1,0,ten,0,10", "not four numbers"),
        ("../etc,u,1,0,10,0,10", "not a plain token"),
        ("a b,u,1,0,10,0,10", "not a plain token"),
        ("a,,1,0,10,0,10", "empty url"),
    ],
)
def test_refuses_bad_rows_naming_the_row(tmp_path, line, fragment):
    p = write(tmp_path, "ok,u,1,0,10,0,10\n" + line + "\n")
    with pytest.raises(ManifestError) as err:
        read_pianoyt(p)
    assert "row 2" in str(err.value) and fragment in str(err.value)


def test_reports_every_problem_and_duplicates(tmp_path):
    p = write(tmp_path, "a,u,1,0,10,0,10\na,u,1,0,10,0,10\nb,u,9,0,10,0,10\n")
    with pytest.raises(ManifestError) as err:
        read_pianoyt(p)
    assert len(err.value.problems) == 2
    assert "duplicate video id 'a' (first on row 1)" in str(err.value)
    assert "row 3" in str(err.value)


def test_empty_and_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no video rows"):
        read_pianoyt(write(tmp_path, "\n"))
    with pytest.raises(ManifestError, match="file not found"):
        read_pianoyt(tmp_path / "nope.csv")


def test_video_id_tokens():
    assert check_video_id("sample_000") == "sample_000"
    assert check_video_id("dQw4w9WgXcQ") == "dQw4w9WgXcQ"
    for bad in ["", ".hidden", "a/b", "a.b", "x" * 129]:
        with pytest.raises(ValueError):
            check_video_id(bad)


def test_resolve_source(tmp_path):
    assert resolve_source("http://127.0.0.1:8000/a.mp4", tmp_path) == "http://127.0.0.1:8000/a.mp4"
    assert resolve_source("dQw4w9WgXcQ", tmp_path).endswith("watch?v=dQw4w9WgXcQ")
    assert resolve_source("clip.mp4", tmp_path) == str((tmp_path / "clip.mp4").resolve())
