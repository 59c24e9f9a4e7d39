"""The audio reader: real files written with PyAV, mono mixing, resampling, clear errors."""
import av
import numpy as np
import pytest

from vp_tokenizers.soundstream.audio_io import AudioReadError, read_audio, write_wav


def tone(rate, seconds=0.5, freq=440.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def write_audio_file(path, codec, channels, rate, video=False):
    """Encodes tone(rate) (same signal on every channel) with PyAV; optionally with a video track."""
    layout = "stereo" if channels == 2 else "mono"
    with av.open(path, "w") as container:
        if video:
            vstream = container.add_stream("mpeg4", rate=8)
            vstream.width = vstream.height = 32
            vstream.pix_fmt = "yuv420p"
        stream = container.add_stream(codec, rate=rate, layout=layout)
        wave = np.tile(tone(rate), (channels, 1))
        fmt = stream.codec_context.format.name
        frame_size = stream.codec_context.frame_size or 1024
        dtype, scale = {"flt": (np.float32, 1.0), "s16": (np.int16, 32767), "s32": (np.int32, 2**31 - 1)}[
            fmt.rstrip("p")]
        for start in range(0, wave.shape[1], frame_size):
            chunk = wave[:, start:start + frame_size] * scale
            data = chunk if fmt.endswith("p") else chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.astype(dtype)), format=fmt,
                                               layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if video:
            image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in vstream.encode(image):
                container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)


def test_wav_is_resampled_to_16k(tmp_path):
    path = str(tmp_path / "a.wav")
    write_wav(path, tone(44100), 44100)
    wave = read_audio(path, 16000)
    assert wave.dtype == np.float32 and abs(wave.size - 8000) <= 2
    assert abs(np.max(np.abs(wave)) - 0.5) < 0.02


@pytest.mark.parametrize("name,codec", [("b.flac", "flac"), ("c.mp3", "mp3"), ("d.ogg", "libopus")])
def test_stereo_files_are_averaged_to_mono(tmp_path, name, codec):
    path = str(tmp_path / name)
    write_audio_file(path, codec, channels=2, rate=48000)
    wave = read_audio(path, 16000)
    assert abs(wave.size - 8000) < 1200  # lossy codecs add priming/padding samples
    assert 0.4 < np.percentile(np.abs(wave), 99.5) < 0.6  # average of equal channels, not their sum


def test_audio_track_of_a_video_is_read(tmp_path):
    path = str(tmp_path / "clip.mp4")
    write_audio_file(path, "aac", channels=1, rate=16000, video=True)
    wave = read_audio(path, 16000)
    assert abs(wave.size - 8000) < 2100 and np.max(np.abs(wave)) > 0.3


def test_max_seconds_limits_the_decoded_audio(tmp_path):
    path = str(tmp_path / "a.wav")
    write_wav(path, tone(16000, seconds=2.0), 16000)
    assert read_audio(path, 16000, max_seconds=0.25).size == 4000


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    garbage = tmp_path / "broken.wav"
    garbage.write_bytes(b"this is not audio" * 50)
    with pytest.raises(AudioReadError, match="broken.wav"):
        read_audio(str(garbage))
    with pytest.raises(FileNotFoundError, match="missing.flac"):
        read_audio(str(tmp_path / "missing.flac"))
    silent_video = str(tmp_path / "silent.mp4")
    with av.open(silent_video, "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioReadError, match="silent.mp4.*no audio stream"):
        read_audio(silent_video)
    with pytest.raises(ValueError, match="sample_rate"):
        read_audio(silent_video, sample_rate=0)
