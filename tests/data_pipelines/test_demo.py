"""The embedded demo dataset: deterministic, split-disjoint, and its truth matches its media."""
import numpy as np
import pytest

from data_pipelines import clip_sources, demo
from data_pipelines.demo import clips, materials


def _ink_box(frame: np.ndarray) -> tuple[int, int]:
    """Top-left (x, y) of the inked pixels of a frame rendered over a black background."""
    ys, xs = np.nonzero(frame.max(axis=-1) > 0)
    return xs.min(), ys.min()


def test_same_seed_gives_identical_clips_and_prefixes_agree():
    a = list(demo.generate_clips("train", 5, seed=3))
    b = list(demo.generate_clips("train", 8, seed=3))
    for x, y in zip(a, b):
        assert x.clip_id == y.clip_id and x.caption == y.caption and x.truth == y.truth
        np.testing.assert_array_equal(x.video, y.video)
        np.testing.assert_array_equal(x.audio, y.audio)
    tail = list(demo.generate_clips("train", 3, seed=3, start_index=5))
    np.testing.assert_array_equal(tail[0].video, b[5].video)


def test_different_seeds_give_different_clips():
    a = next(demo.generate_clips("train", 1, seed=0))
    b = next(demo.generate_clips("train", 1, seed=1))
    assert not np.array_equal(a.video, b.video)


def test_clip_shapes_follow_the_configured_geometry():
    clip = next(demo.generate_clips("validation", 1, seed=0, size=48, num_frames=9, fps=4,
                                    sample_rate=8000))
    assert clip.video.shape == (9, 48, 48, 3) and clip.video.dtype == np.uint8
    assert clip.audio.shape == (18000,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0
    assert clip.truth["sprite_size"] == 18
    assert clip.truth["speed_px_per_frame"] in (1.5, 3.0)


def test_default_clip_is_17_frames_32px_with_34000_audio_samples():
    clip = demo.demo_clip("train", 0, seed=0)
    assert clip.video.shape == (17, 32, 32, 3)
    assert clip.audio.shape == (34000,)
    assert set(clip.truth) == {"digit", "direction", "speed_px_per_frame", "positions",
                               "bounce_frames", "pitch_hz", "background", "digit_image_index",
                               "sprite_size"}


def test_splits_use_disjoint_digit_images():
    indices = {s: set(materials.digit_split(s)[2].tolist()) for s in demo.SPLITS}
    assert not indices["train"] & indices["validation"]
    assert not indices["train"] & indices["test"]
    assert not indices["validation"] & indices["test"]
    used = {c.truth["digit_image_index"] for c in demo.generate_clips("test", 50, seed=0)}
    assert used <= indices["test"]


def test_each_digit_is_drawn_from_the_splits_first_few_handwritings():
    # The default demo keeps HANDWRITINGS_PER_DIGIT images per digit and split (the first
    # ones of that split); 0 draws from every image, as the scorers' training does.
    for split in ("train", "test"):
        images, labels, image_index = materials.digit_split(split)
        allowed = {d: set(image_index[labels == d][:clips.HANDWRITINGS_PER_DIGIT].tolist()) for d in range(10)}
        few = list(demo.generate_clips(split, 400, seed=0))
        assert all(c.truth["digit_image_index"] in allowed[c.truth["digit"]] for c in few)
        assert len({c.truth["digit_image_index"] for c in few}) == 10 * clips.HANDWRITINGS_PER_DIGIT
    every = {c.truth["digit_image_index"] for c in demo.generate_clips("train", 200, seed=0, handwritings_per_digit=0)}
    assert len(every) > 10 * clips.HANDWRITINGS_PER_DIGIT
    with pytest.raises(ValueError, match="handwritings_per_digit"):
        demo.demo_clip("train", 0, seed=0, handwritings_per_digit=-1)
    # The main job's demo stage passes config.demo.handwritings_per_digit through its units.
    drawn = {}
    for count in (None, 0):
        units = clip_sources.demo_units({"train": 8}, seed=0, handwritings_per_digit=count)
        drawn[count] = [u.produce()[0][0].metadata["truth"]["digit_image_index"] for u in units]
        assert drawn[count] == [demo.demo_clip("train", i, seed=0, handwritings_per_digit=(
            clips.HANDWRITINGS_PER_DIGIT if count is None else count)).truth["digit_image_index"] for i in range(8)]
    assert drawn[None] != drawn[0]


def test_caption_names_the_digit_direction_speed_and_background():
    for clip in demo.generate_clips("train", 20, seed=0):
        t = clip.truth
        speed_word = "slowly" if t["speed_px_per_frame"] == 1.0 else "quickly"
        assert clip.caption == (f"the digit {demo.DIGIT_NAMES[t['digit']]} moves {t['direction']} "
                                f"{speed_word} over the {t['background']} photo")


def test_rendered_sprite_follows_the_true_positions():
    # The sprite is alpha-blended, so its pixels depend on the background under them; drawn
    # over black, its ink alone shows where it is.
    images, _, image_index = materials.digit_split("train")
    for clip in demo.generate_clips("train", 10, seed=5):
        positions = np.array(clip.truth["positions"])
        digit_image = images[list(image_index).index(clip.truth["digit_image_index"])]
        size = clip.video.shape[1]
        video = clips._render(np.zeros((size, size, 3), np.float32), digit_image, positions,
                              clip.truth["sprite_size"])
        first = _ink_box(video[0])
        for t in range(video.shape[0]):
            x, y = _ink_box(video[t])
            # The inked pixels keep a fixed offset from the sprite's top-left corner.
            assert (x - positions[t, 0], y - positions[t, 1]) == (first[0] - positions[0, 0],
                                                                  first[1] - positions[0, 1])


def test_motion_starts_in_the_captioned_direction_and_reverses_at_each_bounce():
    for clip in demo.generate_clips("train", 30, seed=2):
        t = clip.truth
        p = np.array(t["positions"])
        velocity = np.array(demo.DIRECTIONS[t["direction"]], np.float64) * t["speed_px_per_frame"]
        limit = 32 - t["sprite_size"]
        assert p.min() >= 0 and p.max() <= limit
        for frame in range(1, len(p)):
            if frame in t["bounce_frames"]:
                velocity = -velocity
                near_wall = (p[frame] <= t["speed_px_per_frame"]) | (p[frame] >= limit - t["speed_px_per_frame"])
                assert near_wall[np.flatnonzero(velocity)].all()
            else:
                np.testing.assert_allclose(p[frame] - p[frame - 1], velocity)


def test_sprite_starts_against_the_wall_behind_its_heading():
    # So frame 0 already shows the captioned direction (the LM learns it as it learns the
    # digit's shape), and the sprite crosses the frame before its first bounce.
    seen = set()
    for clip in demo.generate_clips("train", 40, seed=6):
        t = clip.truth
        limit = 32 - t["sprite_size"]
        dx, dy = demo.DIRECTIONS[t["direction"]]
        x, y = t["positions"][0]
        moving, other = (x, y) if dx else (y, x)
        assert moving == (limit if dx + dy < 0 else 0), t
        assert 0 < other < limit, t
        assert not t["bounce_frames"] or min(t["bounce_frames"]) >= 8, t
        seen.add(t["direction"])
    assert seen == set(demo.DIRECTIONS)


def test_bouncing_positions_reflect_at_the_wall():
    positions, bounces = demo.bouncing_positions((17, 4), "right", 2, 6, limit=20)
    assert positions[:, 0].tolist() == [17, 19, 19, 17, 15, 13]
    assert positions[:, 1].tolist() == [4] * 6
    assert bounces == [2]


def test_audio_pitch_encodes_the_digit_and_clicks_mark_bounces():
    for clip in demo.generate_clips("train", 10, seed=1):
        spectrum = np.abs(np.fft.rfft(clip.audio))
        freqs = np.fft.rfftfreq(clip.audio.size, 1 / 16000)
        peak = freqs[np.argmax(spectrum[freqs < 1000])]
        assert abs(peak - demo.digit_pitch_hz(clip.truth["digit"])) < 2.0
        assert clip.truth["pitch_hz"] == demo.digit_pitch_hz(clip.truth["digit"])
        # Energy above 2 kHz only comes from the clicks.
        hi = np.fft.irfft(np.where(freqs > 2000, np.fft.rfft(clip.audio), 0), clip.audio.size)
        window = 160  # 10 ms
        energy = np.add.reduceat(hi ** 2, np.arange(0, hi.size, window))
        energy[[0, -1]] = 0  # the circular filter's wrap-around edge, not a click
        loud = set(np.flatnonzero(energy > 0.1 * energy.max()).tolist()) if energy.max() > 1e-2 else set()
        expected = {int(round(b / 8 * 16000)) // window for b in clip.truth["bounce_frames"]}
        assert loud == expected


def test_bad_arguments_are_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="split"):
        next(demo.generate_clips("dev", 1, seed=0))
    with pytest.raises(ValueError, match="size"):
        next(demo.generate_clips("train", 1, seed=0, size=8))
    with pytest.raises(ValueError, match="num_clips"):
        next(demo.generate_clips("train", -1, seed=0))
    with pytest.raises(ValueError, match="background"):
        materials.background_photo("mona_lisa")


def test_sprite_is_on_the_latent_grid_at_every_keyframe():
    # Keyframes 0, 4, 8, .. (the causal tokenizer's temporal stride) put the sprite on the
    # 4-px grid (its spatial stride at 32x32), bounces included.
    for clip in demo.generate_clips("train", 40, seed=4):
        keyframes = np.array(clip.truth["positions"])[::4]
        assert (keyframes % 4 == 0).all(), (clip.clip_id, keyframes)


def test_background_is_the_photos_fixed_wash_outside_the_sprite():
    for clip in demo.generate_clips("validation", 8, seed=0):
        expected = np.rint(clips.background(clip.truth["background"], 32)).astype(np.uint8)
        x, y = np.rint(clip.truth["positions"][0]).astype(int)
        outside = np.ones((32, 32), bool)
        outside[y:y + clip.truth["sprite_size"], x:x + clip.truth["sprite_size"]] = False
        np.testing.assert_array_equal(clip.video[0][outside], expected[outside])


def test_clips_of_one_digit_share_one_tone_outside_their_clicks():
    # A fixed phase: video-to-audio has one token sequence per digit to produce, not one per clip.
    clips = [c for c in demo.generate_clips("train", 200, seed=2) if c.truth["digit"] == 3][:4]
    assert len(clips) >= 2
    quiet = np.ones(clips[0].audio.size, bool)
    for clip in clips:
        for frame in clip.truth["bounce_frames"]:
            start = int(round(frame / 8 * 16000))
            quiet[start:start + 160] = False
    for clip in clips[1:]:
        np.testing.assert_allclose(clip.audio[quiet], clips[0].audio[quiet], atol=1e-6)
