"""tasks.training.windows: five-frame windows of PianoYT-style shards, split by row group over ranks and workers."""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tasks.datasets.pianoyt import SCHEMA
from tasks.media import decode as media
from tasks.store.shards import VideoShardWriter
from tasks.training import windows as W

H, WD = 29, 160  # small frames: fast to encode and decode
BASE = 100  # a frame's pixels are BASE + frame_index (row 0: the video's code)

# video id -> (code, frame indices, row-group sizes, writer)
VIDEOS = {
    "vidA": (10, list(range(37)), 8, "shardwriter-2parts"),  # 5 row groups over 3 parts: windows cross parts
    "vidB": (20, list(range(15)) + list(range(18, 33)), 7, "shardwriter"),  # a gap: 15, 16, 17 lost
    "vidC": (30, list(range(4)), 2, "shardwriter"),  # 4 frames: no window
    "vidD": (40, list(range(5, 29)), [1, 1, 3, 1, 6, 2, 10], "pyarrow"),  # 1-row row groups
}


def _png(video: str, fi: int) -> bytes:
    img = np.full((H, WD), BASE + fi, dtype=np.uint8)
    img[0, :] = VIDEOS[video][0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _onsets(video: str, fi: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([VIDEOS[video][0], 7])
    return (rng.random((len(fi), 88)) < 0.05).astype(np.uint8)


def _batch(video: str, fi: list[int], onset: np.ndarray) -> pa.RecordBatch:
    def fixed(a):
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.uint8()), 88)

    return pa.record_batch([
        pa.array([video] * len(fi), pa.string()),
        pa.array(fi, pa.int32()),
        pa.array(np.asarray(fi) / 25.0, pa.float64()),
        pa.array([_png(video, i) for i in fi], pa.binary()),
        fixed(onset), fixed(onset),
    ], schema=SCHEMA)


def _chunks(n: int, sizes) -> list[tuple[int, int]]:
    sizes = [sizes] * n if isinstance(sizes, int) else sizes
    out, start = [], 0
    for s in sizes:
        if start >= n:
            break
        out.append((start, min(n, start + s)))
        start += s
    assert start >= n
    return out


def make_shards(shards, split="train", videos=VIDEOS) -> dict:
    """Write the videos' parts; return {video: {frame index: onset row}}."""
    truth = {}
    for video, (_, fi, sizes, how) in videos.items():
        fi_arr = np.asarray(fi)
        onset = _onsets(video, fi_arr)
        truth[video] = {int(f): onset[i] for i, f in enumerate(fi)}
        batches = [_batch(video, fi[a:b], onset[a:b]) for a, b in _chunks(len(fi), sizes)]
        if how == "pyarrow":
            folder = shards / f"split={split}"
            folder.mkdir(parents=True, exist_ok=True)
            with pq.ParquetWriter(folder / f"part-{video}-0000.parquet", SCHEMA) as writer:
                for b in batches:
                    writer.write_batch(b)
        else:
            kw = {"max_part_bytes": 2 * batches[0].nbytes - 1} if how.endswith("2parts") else {}
            with VideoShardWriter(shards, video, split, SCHEMA, **kw) as writer:
                for b in batches:
                    writer.write(b)
                writer.commit()
    return truth


def expected_windows(truth: dict) -> dict[tuple[str, int], np.ndarray]:
    """(video, t) -> target, straight from the definition: t-2 .. t+2 present; OR of onsets at t-1 .. t+1."""
    out = {}
    for video, rows in truth.items():
        for t in rows:
            if all(t + d in rows for d in range(-2, 3)):
                out[(video, t)] = rows[t - 1] | rows[t] | rows[t + 1]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    shards = tmp_path_factory.mktemp("windows") / "pianoyt" / "shards"
    truth = make_shards(shards)
    (shards / "split=train" / "_notes.parquet").write_bytes(b"not data")  # ignored names
    (shards / "split=train" / ".part-vidZ-0000.parquet").write_bytes(b"not data")
    return shards, truth, expected_windows(truth)


def run_workers(monkeypatch, make, ranks=2, workers=2):
    """Every example of all (rank, worker) pairs, simulating DataLoader workers; also {(video, t): gid}."""
    out, owner = [], {}
    for rank in range(ranks):
        ds = make(rank=rank, world_size=ranks)
        for w in range(workers):
            monkeypatch.setattr(torch.utils.data, "get_worker_info",
                                lambda w=w: SimpleNamespace(id=w, num_workers=workers))
            for ex in ds:
                out.append(ex)
                owner[(ex["video_id"], ex["frame_index"])] = rank * workers + w
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    return out, owner


def check_example(ex, expected):
    video, t = ex["video_id"], ex["frame_index"]
    frames = ex["frames"]
    assert frames.dtype == torch.float32 and frames.shape == (5, H, WD)
    pix = (frames[:, 10, 10] * 255).round().int().tolist()
    assert pix == [BASE + t + d for d in range(-2, 3)], (video, t, pix)  # the 5 consecutive frames, in order
    assert (frames[:, 0, 5] * 255).round().int().tolist() == [VIDEOS[video][0]] * 5  # of this video
    assert ex["target"].dtype == torch.float32 and ex["target"].shape == (88,)
    np.testing.assert_array_equal(ex["target"].numpy(), expected[(video, t)].astype(np.float32))


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_window_once_over_ranks_and_workers(data, monkeypatch, shuffle):
    shards, truth, expected = data
    make = lambda **kw: W.FrameWindows(shards, "train", shuffle=shuffle, buffer_size=6, seed=3, size=(H, WD), **kw)
    examples, owner = run_workers(monkeypatch, make)
    keys = Counter((ex["video_id"], ex["frame_index"]) for ex in examples)
    assert set(keys) == set(expected) and max(keys.values()) == 1
    assert not any(v == "vidC" for v, _ in keys)  # 4 frames: no window
    assert not any(v == "vidB" and 13 <= t <= 19 for v, t in keys)  # none crosses the gap 15-17
    assert len(set(owner.values())) == 4  # all four workers got work
    for ex in examples:
        check_example(ex, expected)
    assert W.count_windows(shards, "train") == len(expected)


def test_order_is_deterministic_without_shuffle(data, monkeypatch):
    shards, _, expected = data
    make = lambda **kw: W.FrameWindows(shards, "train", size=(H, WD), **kw)
    a = [(e["video_id"], e["frame_index"]) for e in run_workers(monkeypatch, make)[0]]
    b = [(e["video_id"], e["frame_index"]) for e in run_workers(monkeypatch, make)[0]]
    assert a == b
    one = [(e["video_id"], e["frame_index"]) for e in W.FrameWindows(shards, "train", size=(H, WD))]
    assert one == sorted(expected)  # one worker, no shuffle: video by video, frame order


def test_work_is_split_by_whole_row_groups(data, monkeypatch):
    shards, truth, expected = data
    ds = W.FrameWindows(shards, "train", size=(H, WD), rank=0, world_size=1)
    group_of = {}  # (video, t) -> unit number, from the shards themselves
    for u, unit in enumerate(ds._units):
        t = pq.ParquetFile(unit.path).read_row_group(unit.row_group, columns=["video_id", "frame_index"])
        for v, f in zip(t.column("video_id").to_pylist(), t.column("frame_index").to_pylist()):
            group_of[(v, f)] = u
    for shuffle in (False, True):
        make = lambda **kw: W.FrameWindows(shards, "train", shuffle=shuffle, seed=1, size=(H, WD), **kw)
        _, owner = run_workers(monkeypatch, make)
        order = np.random.default_rng([1, 0]).permutation(ds.units) if shuffle else np.arange(ds.units)
        gid_of_unit = {int(u): i % 4 for i, u in enumerate(order)}
        for key, gid in owner.items():
            assert gid_of_unit[group_of[key]] == gid  # the owner of the middle frame's row group


def test_each_frame_decoded_once(data, monkeypatch):
    shards, truth, expected = data
    calls = Counter()
    real = media.decode_image

    def counting(b):
        img = real(b)
        calls[(int(img[0, 0]), int(img[5, 5]) - BASE)] += 1
        return img

    monkeypatch.setattr(media, "decode_image", counting)
    code = {v: VIDEOS[v][0] for v in VIDEOS}
    used = Counter((code[v], t + d) for v, t in expected for d in range(-2, 3))
    list(W.FrameWindows(shards, "train", size=(H, WD)))
    assert set(calls) == set(used) and max(calls.values()) == 1  # once, and only frames some window needs

    calls.clear()
    make = lambda **kw: W.FrameWindows(shards, "train", shuffle=True, size=(H, WD), **kw)
    run_workers(monkeypatch, make)
    assert set(calls) == set(used)
    # a row within 2 of a row-group boundary is decoded by both owners; only vidD's 1-3-row groups lend more
    assert max(n for (code, _), n in calls.items() if code != VIDEOS["vidD"][0]) == 2
    assert max(calls.values()) <= 5
    assert sum(calls.values()) < 1.5 * len(used)  # not once per window


def test_video_windows(data, monkeypatch):
    shards, truth, expected = data
    calls = Counter()
    real = media.decode_image
    monkeypatch.setattr(media, "decode_image", lambda b: (calls.update([b]), real(b))[1])
    got = list(W.video_windows(shards, "train", "vidB", size=(H, WD)))
    assert [e["frame_index"] for e in got] == sorted(t for v, t in expected if v == "vidB")
    assert max(calls.values()) == 1
    for ex in got:
        check_example(ex, expected)
    assert [e["frame_index"] for e in W.video_windows(shards, "train", "vidA", size=(H, WD))] == list(range(2, 35))
    assert list(W.video_windows(shards, "train", "vidC", size=(H, WD))) == []
    with pytest.raises(ValueError, match="no shards for video 'nope'"):
        list(W.video_windows(shards, "train", "nope"))


def test_epochs_change_the_order_and_seeds_reproduce_it(data):
    shards, _, expected = data

    def order(epoch, seed=0):
        ds = W.FrameWindows(shards, "train", shuffle=True, buffer_size=16, seed=seed, size=(H, WD))
        ds.set_epoch(epoch)
        return [(e["video_id"], e["frame_index"]) for e in ds]

    e0, e1 = order(0), order(1)
    assert e0 == order(0)  # same seed and epoch: same order
    assert e0 != e1 and e0 != order(0, seed=1)
    assert sorted(e0) == sorted(e1) == sorted(expected)
    assert e0 != sorted(expected)
    ds = W.FrameWindows(shards, "train", shuffle=True, size=(H, WD))
    draws = set()
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for gid in (0, 1, 2):  # each (epoch, global worker) draws its own numbers
            rng, gen = ds._generators(gid)
            draws.add((int(rng.integers(1 << 30)), float(torch.rand((), generator=gen))))
    assert len(draws) == 6


def test_shuffle_buffer_bounds_memory(data, monkeypatch):
    shards, _, expected = data
    made = [0]
    real = W._cut_window

    def counting(*a, **k):
        made[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(W, "_cut_window", counting)
    for size in (1, 7):
        made[0], held = 0, []
        for i, _ in enumerate(W.FrameWindows(shards, "train", shuffle=True, buffer_size=size, size=(H, WD)), 1):
            held.append(made[0] - i)  # windows made and not yet handed out
        assert max(held) == size and made[0] == len(expected)
    made[0], held = 0, []
    for i, _ in enumerate(W.FrameWindows(shards, "train", shuffle=False, size=(H, WD)), 1):
        held.append(made[0] - i)
    assert max(held) == 0


def _noisy(frames: torch.Tensor) -> bool:
    return float(frames[:, 8:-2, 2:-2].std(dim=(-2, -1)).max()) > 1e-3  # frames are constant below row 0


def test_augmentation(data):
    shards, _, expected = data
    assert W.pre_crop_size((145, 800)) == (150, 805) and W.pre_crop_size((48, 264)) == (50, 266)

    plain = list(W.FrameWindows(shards, "train", size=(H, WD), augment=False))
    assert not any(_noisy(e["frames"]) for e in plain)

    def run(epoch, size=(H, WD)):
        ds = W.FrameWindows(shards, "train", shuffle=True, augment=True, seed=5, size=size)
        assert ds.resize == W.pre_crop_size(size)
        ds.set_epoch(epoch)
        return list(ds)

    aug = run(0) + run(1)
    assert all(e["frames"].shape == (5, H, WD) and e["frames"].dtype == torch.float32 for e in aug)
    assert all(0.0 <= float(e["frames"].min()) and float(e["frames"].max()) <= 1.0 for e in aug)
    noisy = [_noisy(e["frames"]) for e in aug]
    assert 0.25 < np.mean(noisy) < 0.55, np.mean(noisy)  # 40% of ~150 windows (binomial sd ~0.04)
    ratios = []
    for e in aug:
        if not _noisy(e["frames"]):
            ratio = float(e["frames"][2, 10:, :].mean()) * 255 / (BASE + e["frame_index"])
            ratios.append(ratio)
    assert 0.79 < min(ratios) and max(ratios) < 1.21 and np.std(ratios) > 0.03  # brightness jitter +-20%
    # the same seed and epoch: the same augmented tensors
    again = run(0)
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(again, aug))
    # a smaller model input: resized in proportion, then cropped
    small = run(0, size=(24, 140))
    assert {tuple(e["frames"].shape) for e in small} == {(5, 24, 140)}
    plain_small = list(W.FrameWindows(shards, "train", size=(24, 140)))
    assert {tuple(e["frames"].shape) for e in plain_small} == {(5, 24, 140)}


def test_onset_rate(data):
    shards, _, expected = data
    want = np.mean(np.stack(list(expected.values())), axis=0)
    np.testing.assert_allclose(W.onset_rate(shards, "train"), want)


def test_missing_split_is_one_line_error(data, tmp_path):
    shards, _, _ = data
    with pytest.raises(ValueError) as err:
        W.FrameWindows(shards, "test")
    assert str(err.value) == f"no shards for split 'test' under {shards}"
    with pytest.raises(ValueError, match=r"^no shards for split 'train' under .*empty$"):
        W.count_windows(tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="no shards for split 'val'"):
        W.FrameWindows.from_root(tmp_path, "val")


def test_object_store_reads_only_committed_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGHTSOUND_SCRATCH", str(tmp_path / "scratch"))
    root = f"memory://windows-{tmp_path.name}/pianoyt/shards"
    videos = {"vidA": VIDEOS["vidA"], "vidB": VIDEOS["vidB"]}
    truth = make_shards(root, videos={"vidA": videos["vidA"][:3] + ("shardwriter",)})
    # vidB's upload was cut short: its part is there, its completion marker is not
    import fsspec

    fs = fsspec.filesystem("memory")
    local = tmp_path / "half.parquet"
    pq.write_table(pa.Table.from_batches([_batch("vidB", list(range(10)), np.zeros((10, 88), np.uint8))]), local)
    fs.put(str(local), f"/windows-{tmp_path.name}/pianoyt/shards/split=train/part-vidB-0000.parquet")
    got = Counter((e["video_id"], e["frame_index"]) for e in W.FrameWindows(root, "train", size=(H, WD)))
    assert set(got) == set(expected_windows(truth)) and max(got.values()) == 1
    assert W.count_windows(root, "train") == len(got)


def test_dataloader_with_two_workers(data):
    shards, _, expected = data
    ds = W.FrameWindows(shards, "train", shuffle=True, augment=True, buffer_size=8, size=(H, WD))
    # Spawned workers, as tasks.training.piano_onsets makes them: forked ones of a process that has run Prefect
    # (this pytest process, after the build tests) exited with code 1 when the loader shut them down.
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    seen = Counter()
    for batch in loader:
        assert batch["frames"].shape[1:] == (5, H, WD) and batch["target"].shape[1:] == (88,)
        seen.update(zip(batch["video_id"], batch["frame_index"].tolist()))
    assert set(seen) == set(expected) and max(seen.values()) == 1
