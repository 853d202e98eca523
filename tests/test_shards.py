import numpy as np
import pyarrow as pa
import pytest

from tasks.store.shards import VideoShardWriter, read_dataset, remove_video, videos_in_shards

SCHEMA = pa.schema([("video_id", pa.string()), ("frame_index", pa.int32()), ("time", pa.float64()), ("image", pa.binary())])


def batch(vid, start, n, size=1000):
    idx = np.arange(start, start + n)
    return pa.record_batch(
        [pa.array([vid] * n), pa.array(idx, pa.int32()), pa.array(idx / 25.0), pa.array([bytes(size)] * n, pa.binary())],
        schema=SCHEMA,
    )


def test_parts_roll_over_and_commit_atomically(tmp_path):
    shards = tmp_path / "shards"
    with VideoShardWriter(shards, "v1", "train", SCHEMA, max_part_bytes=20_000) as w:
        for start in range(0, 100, 10):
            w.write(batch("v1", start, 10))
        # Nothing is visible to readers before the commit.
        assert videos_in_shards(shards) == set()
        parts = w.commit()
    assert len(parts) > 1 and all("split=train/part-v1-" in p for p in parts)
    t = read_dataset(shards)
    assert t.num_rows == 100
    assert set(t.column("split").to_pylist()) == {"train"}
    assert sorted(t.column("frame_index").to_pylist()) == list(range(100))


def test_recommit_replaces_only_that_video(tmp_path):
    shards = tmp_path / "shards"
    for vid, split in [("a", "train"), ("b", "test")]:
        with VideoShardWriter(shards, vid, split, SCHEMA) as w:
            w.write(batch(vid, 0, 5))
            w.commit()
    with VideoShardWriter(shards, "a", "train", SCHEMA) as w:
        w.write(batch("a", 0, 3))
        w.commit()
    t = read_dataset(shards)
    counts = {v: t.column("video_id").to_pylist().count(v) for v in "ab"}
    assert counts == {"a": 3, "b": 5}
    assert remove_video(shards, "a") == 1
    assert videos_in_shards(shards) == {"b"}


def test_failed_write_leaves_nothing(tmp_path):
    shards = tmp_path / "shards"
    with pytest.raises(RuntimeError):
        with VideoShardWriter(shards, "v", "train", SCHEMA) as w:
            w.write(batch("v", 0, 5))
            raise RuntimeError("decoder died")
    assert videos_in_shards(shards) == set()
    assert not (shards / ".staging" / "v").exists()


def test_one_video_across_two_splits(tmp_path):
    shards = tmp_path / "shards"
    with VideoShardWriter(shards, "v", "train", SCHEMA) as w:
        w.write(batch("v", 0, 8))
        w.write(batch("v", 10, 2), split="val")
        w.commit()
    t = read_dataset(shards)
    by_split = {s: t.column("split").to_pylist().count(s) for s in ("train", "val")}
    assert by_split == {"train": 8, "val": 2}
    assert remove_video(shards, "v") == 2
