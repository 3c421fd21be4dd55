import dataclasses

import grain
import numpy as np
import pytest

from vital_jax.data import augment as aug
from vital_jax.data.pipeline import (
    Augment, PipelineConfig, RLBatch, UniformFrames, batch_keys, record_dataset, rl_iterator, sft_iterator,
)
from vital_jax.data.records import load_records, parse_record


def _records(n, tmp_path, media="video"):
    rows = []
    for i in range(n):
        if media == "video":
            rows.append({"video": f"v/{i}.mp4", "duration": 30.0, "text": f"q{i}?", "data_source": "charades",
                         "solution": [1.0, 2.0 + i % 5]})
        else:
            rows.append({"image": f"i/{i}.png", "text": f"iq{i}?", "data_source": "multiple_choice", "solution": "A"})
    return [parse_record(r, root=tmp_path, index=i, file=media) for i, r in enumerate(rows)]


CFG = PipelineConfig(seed=11, process_index=0, process_count=1, read_threads=2)


def test_resume_equals_uninterrupted_run(tmp_path):
    recs = _records(23, tmp_path)
    full = sft_iterator(recs, CFG, batch_size=4)
    expected = [batch_keys(next(full)) for _ in range(15)]  # crosses 2 epoch boundaries
    it = sft_iterator(recs, CFG, batch_size=4)
    for _ in range(6):
        next(it)
    state = it.get_state()
    resumed = sft_iterator(recs, CFG, batch_size=4)
    resumed.set_state(state)
    assert [batch_keys(next(resumed)) for _ in range(9)] == expected[6:]
    # every epoch is a permutation, reshuffled between epochs
    flat = [k for b in expected for k in b]
    assert sorted(flat[:23]) == sorted(flat[23:46]) == [("video", i) for i in range(23)]
    assert flat[:23] != flat[23:46]


def test_resume_through_orbax(tmp_path):
    import orbax.checkpoint as ocp

    recs = _records(17, tmp_path)
    make = lambda: rl_iterator(recs, CFG, prompts_per_batch=3, group_size=2,
                               augment=Augment(lambda ex: 0.5))
    full = make()
    expected = [batch_keys(next(full)) for _ in range(8)]
    it = make()
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mgr:
        mgr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mgr.wait_until_finished()
        fresh = make()
        mgr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    got = [next(fresh) for _ in range(5)]
    assert [batch_keys(b) for b in got] == expected[3:]
    assert all(p["question"].startswith(p["record"].question) for b in got for p in b.prompts)


@pytest.mark.parametrize("hosts", [2, 3])
def test_hosts_get_disjoint_equal_shards(tmp_path, hosts):
    recs = _records(20, tmp_path)
    shards = []
    for h in range(hosts):
        cfg = dataclasses.replace(CFG, process_index=h, process_count=hosts, num_epochs=1)
        shards.append([r.index for r in record_dataset(recs, cfg)])
    sets = [set(s) for s in shards]
    assert all(len(s) == len(sh) == 20 // hosts for s, sh in zip(sets, shards))
    for a in range(hosts):
        for b in range(a + 1, hosts):
            assert not sets[a] & sets[b]
    assert len(set().union(*sets)) == 20 - 20 % hosts
    # the same holds for batches from the iterators, several epochs deep
    seen = []
    for h in range(hosts):
        it = sft_iterator(recs, dataclasses.replace(CFG, process_index=h, process_count=hosts), batch_size=2)
        seen.append({k for _ in range(12) for k in batch_keys(next(it))})
    assert not seen[0] & seen[1]


def test_bad_host_and_sizes(tmp_path):
    with pytest.raises(ValueError, match="bad host shard"):
        record_dataset(_records(4, tmp_path), dataclasses.replace(CFG, process_index=2, process_count=2))
    with pytest.raises(ValueError, match="cannot feed"):
        record_dataset(_records(1, tmp_path), dataclasses.replace(CFG, process_index=0, process_count=2))
    with pytest.raises(ValueError, match="group_size"):
        rl_iterator(_records(4, tmp_path), CFG, prompts_per_batch=2, group_size=0)


def test_rl_batches_groups_and_interleave(tmp_path):
    vids, imgs = _records(10, tmp_path), _records(3, tmp_path, media="image")
    it = rl_iterator(vids, CFG, prompts_per_batch=4, group_size=3, image_records=imgs)
    for _ in range(5):
        b = next(it)
        assert isinstance(b, RLBatch) and len(b.prompts) == 4
        assert [p["record"].media_type for p in b.prompts] == ["video", "image"] * 2
        assert b.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        assert [r["question"] for r in b.rollouts] == [p["question"] for p in b.prompts for _ in range(3)]


def test_decoding_augmentation_in_pipeline(tiny_suite):
    out, _ = tiny_suite
    recs = load_records(out / "rl.jsonl", out)
    strengths = {r.index: (-0.8 if r.index % 2 else 0.6) for r in recs}
    cfg = dataclasses.replace(CFG, seed=3)
    make = lambda s: rl_iterator(recs, cfg, prompts_per_batch=4, group_size=2, load=UniformFrames(8),
                                 augment=Augment(lambda ex: s[ex["record"].index]))
    plain = rl_iterator(recs, cfg, prompts_per_batch=4, group_size=2, load=UniformFrames(8))
    a, b, p = next(make(strengths)), next(make(strengths)), next(plain)
    assert batch_keys(a) == batch_keys(p)
    for x, y, z in zip(a.prompts, b.prompts, p.prompts):
        assert x["frames"].shape == (8, 64, 64, 3) and x["frames"].dtype == np.uint8
        np.testing.assert_array_equal(x["frames"], y["frames"])  # augmentation is reproducible
        if x["record"].index % 2:  # easy: noisy frames, same question
            assert x["augment"] == ("noise", 0.8) and x["question"] == z["question"]
            assert np.abs(x["frames"].astype(int) - z["frames"]).mean() > 10
        else:  # hard: hint appended, frames untouched
            assert x["augment"][0] == "hint" and "\nHint: The white bar" in x["question"]
            np.testing.assert_array_equal(x["frames"], z["frames"])


def test_augment_functions():
    rng = np.random.default_rng(0)
    frames = np.full((10, 8, 8, 3), 128, np.uint8)
    assert aug.add_frame_noise(frames, 0.0, rng) is frames
    noisy = aug.add_frame_noise(frames, 1.0, rng, sigma=0.1)
    assert noisy.dtype == np.uint8 and abs((noisy.astype(float) - 128).std() - 25.5) < 2
    fl = aug.add_frame_noise(frames.astype(np.float32) / 255, 0.5, rng, sigma=0.2)
    assert fl.dtype == np.float32 and abs((fl - 128 / 255).std() - 0.1) < 0.01
    masked, kept = aug.mask_frames(frames, 1.0, rng, max_fraction=0.5)
    assert kept.sum() == 5 and (masked[~kept] == 0).all() and (masked[kept] == 128).all()
    assert aug.mask_frames(frames[:1], 1.0, rng, max_fraction=1.0)[1].all()  # never blanks every frame
    hint = "one two three four five six seven eight"
    assert aug.insert_hint("Q?", hint, 0.0) == "Q?"
    assert aug.insert_hint("Q?", hint, 0.5, max_fraction=0.5) == "Q?\nHint: one two"
    assert aug.insert_hint("Q?", hint, 1.0, max_fraction=1.0) == f"Q?\nHint: {hint}"
    ex = {"question": "Q?", "frames": frames, "hint": hint}
    assert aug.augment_example(ex, 0.0, rng)["augment"] == ("none", 0.0)
    masked_ex = aug.augment_example(ex, -1.0, rng, aug.AugmentConfig(easy_mode="mask"))
    assert masked_ex["augment"] == ("mask", 1.0) and masked_ex["frame_kept"].sum() == 5
    with pytest.raises(ValueError, match="strength"):
        aug.augment_example(ex, 1.5, rng)
    with pytest.raises(ValueError, match="easy_mode"):
        aug.AugmentConfig(easy_mode="blur")
