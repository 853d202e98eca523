import pytest

from tasks.datasets.manifest import ManifestError, check_video_id, read_pianoyt, read_violin, resolve_source


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


# ---------------------------------------------------------------- issue 11: crops, tokens, binary files


@pytest.mark.parametrize(
    "box, fragment",
    [
        ("inf,720,0,1280", "min y 'inf' is not a finite number"),
        ("0,720,-inf,1280", "min x '-inf' is not a finite number"),
        ("0,nan,0,1280", "max y 'nan' is not a finite number"),
        ("0,1e300,0,1280", "max y '1e300' lies outside the 1280x720 reference"),
        ("800,900,1300,1400", "lies outside the 1280x720 reference"),
        ("0,720,0," + "9" * 400, "max x '99999"),  # 1e400: not finite either
        ("0,720,0,1300", "max x '1300' lies outside"),  # 1.6% past the edge: more than CROP_SLACK
    ],
)
def test_crop_not_finite_or_outside_the_reference_is_refused_in_one_short_line(tmp_path, box, fragment):
    p = write(tmp_path, "ok,u,1,0,10,0,10\nbad,u,1," + box + "\n")
    with pytest.raises(ManifestError) as err:
        read_pianoyt(p)
    text = str(err.value)
    assert "row 2" in text and fragment in text, text
    assert len(err.value.problems) == 1 and len(err.value.problems[0]) < 250, text
    assert "9" * 30 not in text and "0" * 30 not in text  # no 300-digit numbers


def test_crop_reference_is_per_build_and_small_overshoot_is_clipped(tmp_path):
    # Audeo's boxes of these videos are pixels of 1080p frames: refused against 720p, read against 1080p.
    p = write(tmp_path, "a,u,1,674,863,68,1869\nb,u,3,0,1085,0,1930\n")
    with pytest.raises(ManifestError, match="outside the 1280x720 reference"):
        read_pianoyt(p)
    rows = read_pianoyt(p, crop_reference=(1920, 1080))
    assert rows[0].crop == (674, 863, 68, 1869)
    assert rows[1].crop == (0, 1080, 0, 1920)  # within 1% past the edge: clipped to the frame
    assert read_violin(p, (1920, 1080)) == rows
    with pytest.raises(ValueError, match="crop reference"):
        read_pianoyt(p, crop_reference=(0, 720))
    # a bad first row is reported, not taken for a header and skipped
    with pytest.raises(ManifestError, match="row 1: split 'x' is not an integer"):
        read_pianoyt(write(tmp_path, "a,u,x,0,10,0,10\nb,u,1,0,10,0,10\n"))


@pytest.mark.parametrize("tail", ["\n", "\r\n", "\x00", "\r", "\t", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", " "])
def test_token_validators_refuse_trailing_newline_nul_and_control_characters(tail):
    from tasks.datasets.voxceleb import check_reference

    for good in ("sample_000", "dQw4w9WgXcQ"):
        assert check_video_id(good) == good
        for bad in (good + tail, tail + good, good[:3] + tail + good[3:]):
            with pytest.raises(ValueError, match="not a plain token"):
                check_video_id(bad)
            with pytest.raises(ValueError):
                check_reference(bad)
    assert check_reference("-FSZOm5JbHD") == "-FSZOm5JbHD"
    with pytest.raises(ValueError):
        check_reference("-FSZOm5JbHD" + tail)


def test_ids_and_urls_with_control_characters_are_refused_in_the_csv(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text('"a\n",u,1,0,10,0,10\n"b\x00",u,1,0,10,0,10\nc,"u\nrm -rf",1,0,10,0,10\nd,"http://[x",1,0,10,0,10\n'
                 "e,u\x00,1,0,10,0,10\nf," + "y" * 300 + ",1,0,10,0,10\n", newline="")
    with pytest.raises(ManifestError) as err:
        read_pianoyt(p)
    problems = err.value.problems
    # row = CSV record: a quoted newline does not start a new one; "a\n" strips to the token "a"
    assert [pr.split(":")[0] for pr in problems] == ["row 2", "row 3", "row 4", "row 5", "row 6"], problems
    assert all("\n" not in pr and "\x00" not in pr and len(pr) <= 300 for pr in problems)
    assert "'b\\x00' is not a plain token" in problems[0]
    assert "holds a control character" in problems[1] and "neither a URL nor a usable path" in problems[2]
    assert "holds a control character" in problems[3] and "File name too long" in problems[4]


def _binary(path):
    path.write_bytes(b"\xef\xbb\xbfok,u,1,0,10,0,10\n\xff\xfe\x00\x9c binary \x80\n")
    return path


def test_binary_manifest_errors_name_the_file(tmp_path):
    from tasks.datasets import maestro
    from tasks.datasets.voxceleb import read_metadata

    for reader in (read_pianoyt, read_violin, read_metadata):
        p = _binary(tmp_path / f"{reader.__name__}.csv")
        with pytest.raises(ManifestError) as err:
            reader(p)
        assert str(p) in str(err.value) and "not UTF-8 text (byte 0xff at offset 20)" in str(err.value)
    root = tmp_path / "maestro"
    root.mkdir()
    _binary(root / "maestro-v3.0.0.csv")
    with pytest.raises(maestro.MaestroError, match=r"maestro-v3\.0\.0\.csv: not UTF-8 text"):
        maestro.read_maestro(root)
    with pytest.raises(ManifestError, match="not a regular file"):
        read_pianoyt(tmp_path)


def test_maestro_names_with_nul_or_control_characters_and_bad_durations_are_refused(tmp_path):
    from tasks.datasets import maestro

    root = tmp_path / "m"
    root.mkdir()
    (root / "a.wav").write_bytes(b"")
    (root / "a.midi").write_bytes(b"")
    header = "split,midi_filename,audio_filename,duration\n"
    for row, fragment in [
        ("train,a.midi,a\x00.wav,1", "audio_filename 'a\\x00.wav' is not a file name inside"),
        ('train,"a.mi\ndi",a.wav,1', "midi_filename 'a.mi\\ndi' is not a file name inside"),
        ("train,a.midi,a.wav,nan", "duration 'nan' is not a number of seconds"),
        ("train,a.midi,a.wav,-1", "duration '-1'"),
        ("train,a.midi,a.wav,1e400", "duration '1e400'"),
        ("train,a.midi," + "x" * 300 + ".wav,1", "does not exist"),
        ("train,a.midi,a.wav," + "1" * 200_000, "not CSV (field larger than field limit"),
    ]:
        (root / "maestro-v3.0.0.csv").write_text(header + row + "\n", newline="")
        with pytest.raises(maestro.MaestroError) as err:
            maestro.read_maestro(root)
        assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    (root / "maestro-v3.0.0.csv").write_text(header + "train,a.midi,a.wav,1.5\n")
    assert maestro.read_maestro(root)[0].duration == 1.5
