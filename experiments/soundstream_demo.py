"""python -m vp_tokenizers.soundstream.train --config=experiments/soundstream_demo.py --workdir=/tmp/soundstream_demo

SoundStream audio tokenizer sized for a 2-core CPU and the embedded demo's sound (a tone
per digit plus bounce clicks). 16 kHz, hop 640 (25 latent frames/s: the 2.125 s demo clip
gives 53 frames, 4 levels -> 212 LM tokens), 4 RVQ levels x 256 EMA codes, k-means start.
The SI-SNR loss term is what makes phase (and so SI-SNR) converge in a few hundred steps.
Measured (2 shared CPU cores, several other jobs running): 600 steps in 3m40s wall, 117 s of
CPU; held-out SI-SNR 19.3 dB with 4 levels (18.4 dB with 1), log-mel distance 2.88.

Variants (`--config=experiments/soundstream_demo.py:quick`):
  (none)  the demo tokenizer: 600 steps, under 10 minutes on 2 CPU cores.
  quick   20 steps of a tiny model, for tests.
Evaluate: python -m vp_tokenizers.soundstream.evaluate --checkpoint_dir=/tmp/soundstream_demo/checkpoints
"""
import ml_collections


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.sample_rate = 16000

    config.model = ml_collections.ConfigDict()
    config.model.channels = 8
    config.model.max_channels = 64
    config.model.strides = (4, 4, 5, 8)
    config.model.dilations = (1, 3, 9)
    config.model.latent_dim = 32
    config.model.levels = 4
    config.model.codebook_size = 256
    config.model.codebook_kind = "ema"
    config.model.ema_decay = 0.95
    config.model.dead_code_threshold = 0.03
    config.model.quantizer_dropout_rate = 0.25
    config.model.kmeans_init = True
    config.model.kmeans_iterations = 10

    config.data = ml_collections.ConfigDict()
    config.data.source = "demo"
    config.data.path = ""
    config.data.eval_path = ""
    config.data.crop_samples = 3200
    config.data.shuffle_buffer = 256
    config.data.batch_size = 8

    config.loss = ml_collections.ConfigDict()
    config.loss.spectral_weight = 1.0
    config.loss.spectral_windows = (64, 128, 256, 512, 1024)
    config.loss.waveform_weight = 10.0
    config.loss.si_snr_weight = 0.1
    config.loss.commitment_weight = 0.1
    config.loss.adversarial_weight = 0.0
    config.loss.feature_matching_weight = 0.0
    config.loss.adversarial_start_step = 0

    config.discriminator = ml_collections.ConfigDict()
    config.discriminator.channels = 16
    config.discriminator.window_size = 1024
    config.discriminator.hop = 256

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 600
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 50
    config.train.discriminator_learning_rate = 1e-4
    config.train.grad_clip_norm = 1.0
    config.train.log_every_steps = 25
    config.train.eval_every_steps = 200
    config.train.checkpoint_every_steps = 200
    config.train.eval_clips = 16
    config.train.eval_samples = 34000
    config.train.mesh_shape = {"data": -1, "fsdp": 1, "tensor": 1}

    if arg == "quick":
        config.model.channels = 4
        config.model.max_channels = 16
        config.model.dilations = (1,)
        config.model.latent_dim = 8
        config.model.codebook_size = 16
        config.data.crop_samples = 2560
        config.data.batch_size = 4
        config.train.num_steps = 20
        config.train.warmup_steps = 5
        config.train.log_every_steps = 2
        config.train.eval_every_steps = 10
        config.train.checkpoint_every_steps = 10
        config.train.eval_clips = 2
        config.train.eval_samples = 6400
        config.loss.spectral_windows = (64, 256)
    elif arg not in (None, ""):
        raise ValueError(f"soundstream_demo: unknown variant {arg!r}; expected '' or 'quick'")
    return config
