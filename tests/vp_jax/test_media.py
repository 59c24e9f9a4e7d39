"""Media files: what we write, PyAV/Pillow read back (real H.264 + AAC, gif, png, wav)."""
import av
import numpy as np
import pytest

from vp_jax import media


def _moving_square(num_frames=9, height=32, width=32):
    video = np.full((num_frames, height, width, 3), 40, np.uint8)
    for t in range(num_frames):
        video[t, 8:18, 2 + 2 * t:12 + 2 * t] = (250, 200, 30)
    return video


def _tone(seconds=1.0, sample_rate=16000, hz=440.0):
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * sample_rate)) / sample_rate)).astype(np.float32)


def test_mp4_is_h264_with_aac_audio_and_decodes_to_the_frames_written(tmp_path):
    path = str(tmp_path / 'clip.mp4')
    video = _moving_square()
    media.write_mp4(path, video, fps=8, audio=_tone(9 / 8), sample_rate=16000)
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == 'h264'
        assert container.streams.audio[0].codec_context.name == 'aac'
        assert container.streams.audio[0].codec_context.sample_rate == 16000
    decoded, fps = media.read_video(path)
    assert decoded.shape == video.shape and fps == 8.0
    assert np.abs(decoded.astype(int) - video).mean() < 3.0


def test_mp4_audio_reads_back_as_the_same_tone(tmp_path):
    path = str(tmp_path / 'clip.mp4')
    tone = _tone(1.0)
    media.write_mp4(path, _moving_square(), fps=8, audio=tone)
    audio = media.read_audio(path, sample_rate=16000)
    window = audio[:16000]
    peak_hz = np.argmax(np.abs(np.fft.rfft(window))) * 16000 / window.size
    assert abs(peak_hz - 440) <= 2


def test_odd_sized_video_is_padded_to_even_for_h264(tmp_path):
    path = str(tmp_path / 'odd.mp4')
    video = _moving_square(height=33, width=31)
    media.write_mp4(path, video, fps=8)
    decoded, _ = media.read_video(path)
    assert decoded.shape == (9, 34, 32, 3)
    assert np.abs(decoded[:, :33, :31].astype(int) - video).mean() < 3.0


def test_gif_keeps_every_frame(tmp_path):
    path = str(tmp_path / 'clip.gif')
    video = _moving_square()
    media.write_gif(path, video, fps=8)
    decoded, _ = media.read_video(path)
    assert decoded.shape == video.shape
    assert np.abs(decoded.astype(int) - video).mean() < 8.0


def test_wav_round_trips_to_16_bit_precision(tmp_path):
    path = str(tmp_path / 'tone.wav')
    tone = _tone(0.5, sample_rate=22050)
    media.write_wav(path, tone, 22050)
    np.testing.assert_allclose(media.read_audio(path, sample_rate=22050), tone, atol=1e-4)


def test_png_round_trips_exactly(tmp_path):
    path = str(tmp_path / 'frame.png')
    image = _moving_square()[3]
    media.write_png(path, image)
    np.testing.assert_array_equal(media.read_image(path), image)


def test_contact_sheet_tiles_evenly_spaced_frames_with_labels():
    videos = np.stack([_moving_square(17), 255 - _moving_square(17)])
    sheet = media.contact_sheet(videos, frames_per_row=5, labels=['a', 'b'], gap=2)
    assert sheet.shape == (2 * (12 + 32) + 3 * 2, 5 * 32 + 6 * 2, 3)
    # second tile of the first band is frame 4 of the first clip (frames 0, 4, 8, 12, 16).
    np.testing.assert_array_equal(sheet[2 + 12:2 + 12 + 32, 2 + 34:2 + 34 + 32], videos[0, 4])


def test_bad_media_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match='uint8'):
        media.write_mp4(str(tmp_path / 'x.mp4'), np.zeros((3, 8, 8, 3), np.float32), fps=8)
    with pytest.raises(ValueError, match='NaN'):
        media.write_wav(str(tmp_path / 'x.wav'), np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(ValueError, match='fps'):
        media.write_gif(str(tmp_path / 'x.gif'), _moving_square(), fps=0)
    with pytest.raises(FileNotFoundError, match='missing.mp4'):
        media.read_video(str(tmp_path / 'missing.mp4'))
    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(b'not a video at all' * 10)
    with pytest.raises(ValueError, match='corrupt.mp4'):
        media.read_video(str(corrupt))
