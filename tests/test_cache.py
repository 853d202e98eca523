from tasks.store.cache import file_fingerprint, key_for


def test_key_follows_input_file_content_not_output_paths(tmp_path):
    src = tmp_path / "in.wav"
    src.write_bytes(b"a" * 100)
    out = tmp_path / "out.mid"
    params = {"wav": str(src), "out_mid": str(out), "labeler": "transkun"}
    k1 = key_for("label", params, ("wav",))
    out.write_bytes(b"written by the task")
    assert key_for("label", params, ("wav",)) == k1, "writing the output must not change the key"
    src.write_bytes(b"b" * 100)
    assert key_for("label", params, ("wav",)) != k1, "a changed input must change the key"
    assert key_for("label", {**params, "labeler": "other"}, ("wav",)) != key_for("label", params, ("wav",))
    assert key_for("frames", params, ("wav",)) != key_for("label", params, ("wav",))


def test_big_file_fingerprint_reads_the_ends(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(80 * 1024 * 1024)
    fp = file_fingerprint(big)
    with open(big, "r+b") as f:
        f.seek(80 * 1024 * 1024 - 10)
        f.write(b"x")
    assert file_fingerprint(big) != fp
