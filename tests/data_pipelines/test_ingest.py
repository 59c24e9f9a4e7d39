"""Ingestion: real media files written with PyAV go in; clips and report.json come out."""
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from data_pipelines import clip_store, ingest, manifest, media_decode


def write_video(path, num_frames, fps, height, width, audio_rate=None, audio_channels=1,
                codec="libx264"):
    """A moving-gradient clip (frame index in the red channel) with an optional tone."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        audio_stream = None
        if audio_rate:
            audio_stream = container.add_stream("aac", rate=audio_rate)
            audio_stream.layout = "stereo" if audio_channels == 2 else "mono"
        for i in range(num_frames):
            frame = np.zeros((height, width, 3), np.uint8)
            frame[..., 0] = (i * 7) % 256
            frame[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        if audio_stream is not None:
            n = int(num_frames / fps * audio_rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / audio_rate)).astype(np.float32)
            planes = np.stack([tone] * audio_channels)
            for start in range(0, n, 1024):
                chunk = np.ascontiguousarray(planes[:, start:start + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=audio_stream.layout.name)
                af.sample_rate, af.pts = audio_rate, start
                container.mux(audio_stream.encode(af))
            container.mux(audio_stream.encode())


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "sub").mkdir()
    write_video(root / "sound.mp4", 60, 24, 48, 64, audio_rate=44100, audio_channels=2)
    write_video(root / "sub" / "silent_odd.mp4", 23, 5, 37, 51, codec="mpeg4")
    write_video(root / "short.mp4", 10, 24, 32, 32)
    good = (root / "sound.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    rows = [{"video": "sound.mp4", "caption": "a tone"},
            {"video": "sub/silent_odd.mp4", "caption": "silent", "split": "validation"},
            {"video": "short.mp4", "caption": "too short"},
            {"video": "truncated.mp4", "caption": "cut"},
            {"video": "corrupt.mp4", "caption": "garbage"},
            {"video": "../outside.mp4", "caption": "escape"},
            {"video": "sound.mp4"}]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_video_is_resampled_to_8fps_clips_with_mono_16khz_sound(media_folder):
    geometry = media_decode.ClipGeometry(num_frames=5, fps=8, height=32, width=32)
    info, clips = media_decode.decode_video_clips(str(media_folder / "sound.mp4"), geometry)
    assert (info.fps, info.width, info.height) == (24.0, 64, 48)
    assert (info.audio_sample_rate, info.audio_channels) == (44100, 2)
    assert len(clips) == 4  # 2.5 s at 8 fps = 20 frames = 4 clips of 5
    for k, clip in enumerate(clips):
        assert clip.video.shape == (5, 32, 32, 3) and clip.video.dtype == np.uint8
        assert clip.start_seconds == pytest.approx(k * 5 / 8)
        assert clip.audio.shape == (10000,)
        # every 3rd source frame is picked: red channel = 7 * source index
        red = clip.video[:, 16, 16, 0].astype(int)
        np.testing.assert_allclose(red, [7 * 3 * (5 * k + i) % 256 for i in range(5)], atol=4)
    spectrum = np.abs(np.fft.rfft(clips[1].audio))
    assert np.argmax(spectrum) * 16000 / clips[1].audio.size == pytest.approx(440, abs=2)


def test_low_fps_odd_size_video_without_sound_holds_frames(media_folder):
    geometry = media_decode.ClipGeometry(num_frames=9, fps=8, height=24, width=40)
    info, clips = media_decode.decode_video_clips(str(media_folder / "sub" / "silent_odd.mp4"), geometry)
    assert info.audio_sample_rate is None
    assert len(clips) == 4 and clips[0].audio is None  # 4.6 s at 8 fps = 36 frames
    assert clips[0].video.shape == (9, 24, 40, 3)


def test_resize_and_center_crop_keeps_the_middle():
    image = np.zeros((40, 100, 3), np.uint8)
    image[:, 30:70] = 255
    out = media_decode.resize_and_center_crop(image, 20, 20)
    assert out.shape == (20, 20, 3) and out.min() == 255


def test_paths_escaping_the_dataset_root_are_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (tmp_path / "data" / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    root = str(tmp_path / "data")
    assert manifest.resolve_inside(root, "../secret.mp4") is None
    assert manifest.resolve_inside(root, str(tmp_path / "secret.mp4")) is None
    assert manifest.resolve_inside(root, "link.mp4") is None
    assert manifest.resolve_inside(root, "a/../b.mp4") == str(tmp_path / "data" / "b.mp4")


def test_csv_manifest_and_captioned_image_folder(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_text("a grey cat\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "nocap.png")
    entries = manifest.read_image_folder(str(tmp_path))
    assert [(e.relpath, e.caption, e.error is None) for e in entries] == [
        ("cat.png", "a grey cat", True), ("nocap.png", "", False)]
    (tmp_path / "m.csv").write_text("image,caption\ncat.png,a cat\n,no media\n")
    rows = manifest.read_manifest(str(tmp_path / "m.csv"))
    assert rows[0].kind == "image" and rows[0].error is None
    assert "exactly one of the fields" in rows[1].error
    _, clip = media_decode.decode_image(rows[0].path, media_decode.ClipGeometry(height=16, width=16))
    assert clip.video.shape == (1, 16, 16, 3) and clip.video.min() == 200


def test_ingest_command_writes_clips_and_a_report_naming_every_skip(media_folder, tmp_path):
    out = tmp_path / "out"
    summary = ingest.main([f"--manifest={media_folder / 'captions.jsonl'}", f"--output_dir={out}",
                           "--num_frames=5"])
    assert summary["ok"] == 2 and summary["skipped"] == 5 and summary["clips"] == 4 + 7
    report = json.loads((out / "report.json").read_text())
    by_path = {r["path"]: r for r in report["files"]}
    ok = by_path["sound.mp4"]
    assert (ok["clips"], ok["frames"], ok["fps"], ok["size"]) == (4, 5, 8.0, [32, 32])
    assert (ok["audio_sample_rate"], ok["audio_channels"]) == (16000, 1)
    assert ok["source_info"]["audio_channels"] == 2
    assert by_path["sub/silent_odd.mp4"]["audio_sample_rate"] is None
    assert "too short" in by_path["short.mp4"]["reason"]
    assert "truncated.mp4" in by_path["truncated.mp4"]["reason"]
    assert "corrupt.mp4" in by_path["corrupt.mp4"]["reason"]
    assert "escapes the dataset root" in by_path["../outside.mp4"]["reason"]
    skipped_caption = [r for r in report["files"] if "caption" in (r.get("reason") or "")]
    assert len(skipped_caption) == 1
    clips = [c for u in clip_store.store_units(str(out)) for c in u.produce()[0]]
    assert sorted(c.split for c in clips) == ["train"] * 4 + ["validation"] * 7
    assert {c.video.shape for c in clips} == {(5, 32, 32, 3)}
