"""tasks.training.windows.FacePairs: source and target frames of one face track, for FAb-Net and X2Face."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch

from tasks.datasets.voxceleb import SCHEMA
from tasks.media import decode as media
from tasks.store.shards import VideoShardWriter
from tasks.training import windows as W

CROP = 32  # the stored crops' side (the real shards: 256)
S = 16  # the side asked for in most tests: every image is resized


def _code(v: int) -> int:
    return 20 + 25 * v  # a track number or a frame position as a pixel value (JPEG keeps flat colours to +-2)


def _uncode(x: float) -> int:
    return int(round((float(x) * 255 - 20) / 25))


# track number -> (split, identity, video id, utterance, frames, how it is written)
TRACKS = {
    0: ("train", "id001", "vidAAAAAAA0", "00001", 6, "two-row-groups"),
    1: ("train", "id001", "vidAAAAAAA0", "00002", 6, "two-parts"),
    2: ("train", "id002", "vidBBBBBBB1", "00001", 6, "one"),
    3: ("train", "id002", "vidBBBBBBB2", "00001", 6, "one"),
    4: ("train", "id003", "-vidCCCCCC3", "00001", 6, "one"),
    5: ("train", "id003", "-vidCCCCCC3", "00002", 6, "one"),
    6: ("train", "id001", "vidAAAAAAA0", "00003", 3, "one"),  # 3 frames: examples for k=1, none for k=3
    7: ("val", "id004", "vidDDDDDDD4", "00001", 5, "one"),
    8: ("val", "id004", "vidDDDDDDD4", "00002", 5, "one"),
}


def frame_index(track: int, j: int) -> int:
    return 1000 * track + 25 * j + 3


def points(track: int, j: int) -> np.ndarray:
    """The 68 stored (x, y) landmarks of frame j of a track, in crop pixels."""
    p = np.arange(68, dtype=np.float32)
    return np.stack([p * 0.4 + j, p * 0.3 + track], axis=1)


def _jpeg(track: int, j: int) -> bytes:
    rgb = np.empty((CROP, CROP, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = _code(track), _code(j), 128  # R: the track, G: the frame
    return media.encode_image(rgb[..., ::-1].copy(), "jpeg")  # (OpenCV takes BGR, as the build passes it)


def _batch(track: int, js: list[int]) -> pa.RecordBatch:
    _, identity, video, utt, _, _ = TRACKS[track]
    n = len(js)
    return pa.record_batch([
        pa.array([identity] * n, pa.string()),
        pa.array([video] * n, pa.string()),
        pa.array([utt] * n, pa.string()),
        pa.array([frame_index(track, j) for j in js], pa.int32()),
        pa.array([frame_index(track, j) for j in js], pa.int32()),
        pa.array([frame_index(track, j) / 25.0 for j in js], pa.float64()),
        pa.array([_jpeg(track, j) for j in js], pa.binary()),
        pa.array([[0.0, 0.0, 100.0, 100.0]] * n, pa.list_(pa.float32(), 4)),
        pa.array([[0.0, 0.0, 100.0, 100.0]] * n, pa.list_(pa.float32(), 4)),
        pa.array([points(track, j).ravel().tolist() for j in js], pa.list_(pa.float32(), 136)),
        pa.array(["dlib-hog"] * n, pa.string()),
        pa.array([0.9] * n, pa.float32()),
    ], schema=SCHEMA)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    shards = root / "voxceleb" / "shards"
    for track, (split, identity, video, utt, n, how) in TRACKS.items():
        js = list(range(n))
        batches = [_batch(track, js[:3]), _batch(track, js[3:])] if how != "one" else [_batch(track, js)]
        kw = {"max_part_bytes": batches[0].nbytes} if how == "two-parts" else {}
        with VideoShardWriter(shards, f"{identity}-{video}-{utt}", split, SCHEMA, **kw) as writer:
            for b in batches:
                writer.write(b)
            writer.commit()
    assert len(list((shards / "split=train").glob("part-id001-vidAAAAAAA0-00002-*.parquet"))) == 2
    return root, shards


def frames_of(split: str, k: int) -> set[tuple[str, int]]:
    """(utterance key, frame_index) of every frame that is a target: those of tracks of over k frames."""
    return {(f"{t[1]}/{t[2]}/{t[3]}", frame_index(c, j))
            for c, t in TRACKS.items() if t[0] == split and t[4] > k for j in range(t[4])}


def key(ex) -> tuple:
    """What identifies an example: its track, target and sources (in order)."""
    return (f"{ex['identity']}/{ex['video_id']}/{ex['utterance']}", ex["target_index"], tuple(ex["source_indices"].tolist()))


def check(ex, k: int, size: int = S):
    assert ex["sources"].shape == (k, 3, size, size) and ex["target"].shape == (3, size, size)
    assert ex["sources"].dtype == ex["target"].dtype == torch.float32
    assert 0 <= float(ex["sources"].min()) and float(ex["target"].max()) <= 1
    track = next(c for c, t in TRACKS.items() if t[1:4] == (ex["identity"], ex["video_id"], ex["utterance"]))
    c, j = _uncode(ex["target"][0, 5, 5]), _uncode(ex["target"][1, 5, 5])
    assert c == track and ex["target_index"] == frame_index(track, j)  # the target is the frame it says it is
    assert ex["source_indices"].dtype == torch.int64 and ex["source_indices"].shape == (k,)
    seen = []
    for src, fi in zip(ex["sources"], ex["source_indices"].tolist()):
        assert _uncode(src[0, 5, 5]) == track  # the same track
        sj = _uncode(src[1, 5, 5])
        assert fi == frame_index(track, sj) and sj != j  # another frame, the one it says it is
        seen.append(sj)
    assert len(set(seen)) == k  # without replacement


def run_workers(monkeypatch, make, ranks=2, workers=2):
    """Every example of all (rank, worker) pairs (DataLoader workers simulated); also {track: {gids}}."""
    out, owners = [], {}
    for rank in range(ranks):
        ds = make(rank=rank, world_size=ranks)
        for w in range(workers):
            monkeypatch.setattr(torch.utils.data, "get_worker_info",
                                lambda w=w: SimpleNamespace(id=w, num_workers=workers))
            for ex in ds:
                out.append(ex)
                owners.setdefault(key(ex)[0], set()).add(rank * workers + w)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    return out, owners


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_pairs_of_one_track_every_frame_a_target_once(shards, k, shuffle):
    _, shards_dir = shards
    ds = W.FacePairs(shards_dir, "train", sources=k, shuffle=shuffle, size=S, buffer_size=5, seed=2)
    assert ds.units == 7  # one unit per utterance (the two-part and two-row-group tracks too)
    got = list(ds)
    for ex in got:
        check(ex, k)
    targets = Counter(key(ex)[:2] for ex in got)
    assert set(targets) == frames_of("train", k) and max(targets.values()) == 1
    assert W.count_examples(shards_dir, "train", sources=k) == len(got) == (39 if k == 1 else 36)
    assert W.count_examples(shards_dir, "val", sources=k) == 10


def test_seed_and_epoch_make_the_draws(shards):
    _, shards_dir = shards

    def run(epoch, seed=0, k=3):
        ds = W.FacePairs(shards_dir, "train", sources=k, shuffle=True, size=S, seed=seed, buffer_size=8)
        ds.set_epoch(epoch)
        return [key(ex) for ex in ds]

    e0 = run(0)
    assert e0 == run(0)  # the same (seed, epoch): the same examples, in the same order
    e1 = run(1)
    assert e1 != e0 and run(0, seed=1) != e0
    assert sorted(k[:2] for k in e0) == sorted(k[:2] for k in e1)  # the same targets...
    assert [k[:2] for k in e0] != [k[:2] for k in e1]  # ...in another order
    assert sorted(e0) != sorted(e1)  # and other sources
    assert [k[:2] for k in e0] != sorted(k[:2] for k in e0)  # shuffled at all


def test_val_passes_are_identical(shards, monkeypatch):
    _, shards_dir = shards
    ds = W.FacePairs(shards_dir, "val", sources=3, size=S, seed=4)
    first = [key(ex) for ex in ds]
    ds.set_epoch(7)
    assert [key(ex) for ex in ds] == first  # the epoch changes nothing
    assert [k[1] for k in first] == [frame_index(c, j) for c in (7, 8) for j in range(5)]  # frame order
    split, _ = run_workers(monkeypatch, lambda **kw: W.FacePairs(shards_dir, "val", sources=3, size=S, seed=4, **kw))
    assert sorted(key(ex) for ex in split) == sorted(first)  # nor the ranks and workers
    other = [key(ex) for ex in W.FacePairs(shards_dir, "val", sources=3, size=S, seed=5)]
    assert other != first and [k[:2] for k in other] == [k[:2] for k in first]  # the seed picks the sources
    # the rule the docstring gives, by hand
    t = TRACKS[7]
    rng = np.random.default_rng([4, int.from_bytes(W.hashlib.sha256(f"{t[1]}/{t[2]}/{t[3]}".encode()).digest()[:8],
                                                    "little")])
    for i, (_, target, sources) in enumerate(first[:5]):
        j = rng.choice(4, size=3, replace=False)
        assert target == frame_index(7, i) and sources == tuple(frame_index(7, int(x)) for x in j + (j >= i))


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_and_workers_split_whole_tracks(shards, monkeypatch, shuffle):
    _, shards_dir = shards
    make = lambda **kw: W.FacePairs(shards_dir, "train", sources=1, shuffle=shuffle, size=S, buffer_size=4, **kw)
    got, owners = run_workers(monkeypatch, make)
    targets = Counter(key(ex)[:2] for ex in got)
    assert set(targets) == frames_of("train", 1) and max(targets.values()) == 1  # no overlap, no loss
    assert all(len(g) == 1 for g in owners.values())  # a track goes to one worker
    assert len(set.union(*owners.values())) == 4  # and all four got work
    for ex in got:
        check(ex, 1)


def test_dataloader_with_two_workers(shards):
    _, shards_dir = shards
    ds = W.FacePairs(shards_dir, "train", sources=3, shuffle=True, size=S, buffer_size=4)
    # spawned workers, as the training loaders make them (see tests/test_training_windows.py)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    seen = Counter()
    for batch in loader:
        assert batch["sources"].shape[1:] == (3, 3, S, S) and batch["target"].shape[1:] == (3, S, S)
        assert batch["source_indices"].shape[1:] == (3,)
        seen.update(zip([f"{i}/{v}/{u}" for i, v, u in zip(batch["identity"], batch["video_id"], batch["utterance"])],
                        batch["target_index"].tolist()))
    assert set(seen) == frames_of("train", 3) and max(seen.values()) == 1


def test_each_image_decoded_once_per_pass(shards, monkeypatch):
    _, shards_dir = shards
    calls = Counter()
    real = media.decode_image
    monkeypatch.setattr(media, "decode_image", lambda b: (calls.update([b]), real(b))[1])
    images = {(c, j): _jpeg(c, j) for c, t in TRACKS.items() if t[0] == "train" for j in range(t[4])}
    for k, shuffle in ((1, False), (3, True)):
        calls.clear()
        n = len(list(W.FacePairs(shards_dir, "train", sources=k, shuffle=shuffle, size=S)))
        want = {b for (c, _), b in images.items() if TRACKS[c][4] > k}  # a track too short is not decoded
        assert n == len(want) and set(calls) == want and max(calls.values()) == 1
    calls.clear()
    run_workers(monkeypatch, lambda **kw: W.FacePairs(shards_dir, "train", sources=1, shuffle=True, size=S, **kw))
    assert set(calls) == set(images.values()) and max(calls.values()) == 1  # over ranks and workers too


def test_sizes_and_landmarks(shards):
    _, shards_dir = shards
    assert W.FacePairs(shards_dir, "val").size == 256  # the shards' crops
    small = list(W.FacePairs(shards_dir, "val", sources=1, size=64))
    for ex in small:
        check(ex, 1, size=64)
    assert "landmarks" not in small[0]
    same = list(W.FacePairs(shards_dir, "val", sources=1, size=CROP, landmarks=True))
    for ex in same:  # not resized: the stored points
        j = (ex["target_index"] - 3) % 1000 // 25
        np.testing.assert_allclose(ex["landmarks"].numpy(), points(ex["target_index"] // 1000, j), atol=1e-5)
    for ex in W.FacePairs(shards_dir, "val", sources=3, size=S, landmarks=True):
        track, j = ex["target_index"] // 1000, (ex["target_index"] - 3) % 1000 // 25
        assert ex["landmarks"].dtype == torch.float32 and ex["landmarks"].shape == (68, 2)
        want = (points(track, j) + 0.5) * (S / CROP) - 0.5  # pixel centres of the 16 x 16 image
        np.testing.assert_allclose(ex["landmarks"].numpy(), want, atol=1e-5)


def test_shuffle_buffer_bounds_memory(shards, monkeypatch):
    _, shards_dir = shards
    made = [0]
    real = W.FacePairs._raw_pairs

    def counting(self, units, rng):
        for item in real(self, units, rng):
            made[0] += 1
            yield item

    monkeypatch.setattr(W.FacePairs, "_raw_pairs", counting)
    for size, shuffle in ((1, True), (6, True), (6, False)):
        made[0], held = 0, []
        for i, _ in enumerate(W.FacePairs(shards_dir, "train", shuffle=shuffle, buffer_size=size, size=S), 1):
            held.append(made[0] - i)  # examples made and not yet handed out
        assert max(held) == (size if shuffle else 0) and made[0] == 39


def test_missing_face_shards_is_one_line_error(shards, tmp_path):
    root, shards_dir = shards
    with pytest.raises(ValueError) as err:
        W.FacePairs.from_root(tmp_path, "train")
    assert str(err.value) == f"no shards for split 'train' under {tmp_path}/voxceleb/shards"
    with pytest.raises(ValueError, match=r"^no shards for split 'test' under .*voxceleb/shards$"):
        W.count_examples(shards_dir, "test")
    assert W.FacePairs.from_root(root, "val").units == 2
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="sources must be a positive whole number"):
            W.FacePairs(shards_dir, "val", sources=bad)
