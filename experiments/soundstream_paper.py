"""python -m vp_tokenizers.soundstream.train --config=experiments/soundstream_paper.py --config.data.source=audio_folder --config.data.path=/data/audio --config.data.eval_path=/data/audio_eval --workdir=/ckpt/soundstream

SoundStream as VideoPoet uses it: 16 kHz, hop 2*4*5*8 = 320 (50 latent frames/s; a 2.125 s
clip gives 106 frames -> 424 LM tokens), 4 RVQ levels x 1024 codes, quantizer dropout,
multi-scale spectral + waveform losses and the STFT discriminator (adversarial and feature
matching) switched on after a reconstruction warm-up. Meant for an accelerator.
Variant `runlocal`: the same model shapes with a tiny batch and few steps for a smoke run.
"""
import ml_collections


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.sample_rate = 16000

    config.model = ml_collections.ConfigDict()
    config.model.channels = 32
    config.model.max_channels = 512
    config.model.strides = (2, 4, 5, 8)
    config.model.dilations = (1, 3, 9)
    config.model.latent_dim = 128
    config.model.levels = 4
    config.model.codebook_size = 1024
    config.model.codebook_kind = "ema"
    config.model.ema_decay = 0.99
    config.model.dead_code_threshold = 0.03
    config.model.quantizer_dropout_rate = 0.5
    config.model.kmeans_init = True
    config.model.kmeans_iterations = 10

    config.data = ml_collections.ConfigDict()
    config.data.source = "audio_folder"
    config.data.path = ""
    config.data.eval_path = ""
    config.data.crop_samples = 16000
    config.data.shuffle_buffer = 2048
    config.data.batch_size = 64

    config.loss = ml_collections.ConfigDict()
    config.loss.spectral_weight = 1.0
    config.loss.spectral_windows = (64, 128, 256, 512, 1024, 2048)
    config.loss.waveform_weight = 1.0
    config.loss.si_snr_weight = 0.0
    config.loss.commitment_weight = 1.0
    config.loss.adversarial_weight = 1.0
    config.loss.feature_matching_weight = 100.0
    config.loss.adversarial_start_step = 20000

    config.discriminator = ml_collections.ConfigDict()
    config.discriminator.channels = 32
    config.discriminator.window_size = 1024
    config.discriminator.hop = 256

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 500000
    config.train.learning_rate = 3e-4
    config.train.warmup_steps = 1000
    config.train.discriminator_learning_rate = 1e-4
    config.train.grad_clip_norm = 1.0
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 5000
    config.train.checkpoint_every_steps = 5000
    config.train.eval_clips = 64
    config.train.eval_samples = 34000
    config.train.mesh_shape = {"data": -1, "fsdp": 1, "tensor": 1}

    if arg == "runlocal":
        config.data.batch_size = 2
        config.data.shuffle_buffer = 8
        config.train.num_steps = 10
        config.train.log_every_steps = 1
        config.train.eval_every_steps = 5
        config.train.checkpoint_every_steps = 5
        config.train.eval_clips = 2
        config.loss.adversarial_start_step = 5
    elif arg not in (None, ""):
        raise ValueError(f"soundstream_paper: unknown variant {arg!r}; expected '' or 'runlocal'")
    return config
