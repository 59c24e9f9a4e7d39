"""XLA_FLAGS=--xla_force_host_platform_device_count=64 python -m vp_jax.main --config=experiments/lm_1b.py --mode=compile --workdir=/tmp/lm_1b

The paper's 1B LM (videopoet.md section 5: 1B ~ 24 layers x 2048) on the paper's token
shapes: 17 frames at 128x224 -> MAGVIT-v2 latents 5x16x28 of 18 bits, SoundStream 4 levels
x 4096 codes at 50 Hz (106 frames per 2.125 s clip), T5-XL text embeddings (64 x 2048).
The full T2V-centred mixture (all 11 tasks) and everything else come from
experiments/t2v_base.py; the embedded-demo section is dropped (this size needs real shards).

Meant for a pod: --mode=compile checks that the train step compiles for the mesh and prints
per-device memory and FLOPs; with the fake CPU devices above this runs on a laptop (the
memory figures are then the CPU compiler's, see vp_jax/aot_compile.py). Training needs
shards of these shapes (--config.data.shards_dir=...).
Variants: (none) FSDP over all devices; 'tensor4' adds 4-way tensor parallelism.
"""
import importlib.util
import os


def _t2v_base():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 't2v_base.py')
    spec = importlib.util.spec_from_file_location('experiments_t2v_base', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    t2v_base = _t2v_base()
    config = t2v_base.get_config()
    # Paper scale trains on prepared shards (--config.data.shards_dir), never the embedded demo.
    del config['demo']
    config.data.tasks = dict(t2v_base.T2V_CENTRED_MIXTURE)
    config.data.image_video_schedule = dict(t2v_base.PAPER_IMAGE_VIDEO_SCHEDULE)
    config.model.update(num_layers=24, d_model=2048, num_heads=16, num_kv_heads=16, head_dim=128,
                        mlp_dim=5632, max_length=4608, dtype='bfloat16', param_dtype='float32',
                        scan_layers=True, remat_policy='save_dot_except_mlp', dropout_rate=0.0)
    config.compile.vocabulary = dict(visual_bits=18, audio_levels=4, audio_codebook_size=4096,
                                     text_vocab_size=0)
    config.compile.geometry = dict(video_latent_shape=(5, 16, 28), audio_shape=(4, 106), text_length=64,
                                   text_embedding_dim=2048)
    config.mesh.update(data=1, fsdp=-1, tensor=1)
    config.train.update(batch_size=256, microbatches=1, num_steps=300_000, log_every_steps=100,
                        eval_every_steps=5000, checkpoint_every_steps=2000)
    config.eval.batch_size = 256
    config.optimizer.update(lr=3e-4, warmup_steps=5000, schedule='rsqrt', min_lr_ratio=0.0)
    if arg == 'tensor4':
        config.mesh.update(fsdp=-1, tensor=4)
    elif arg:
        raise ValueError(f"experiments/lm_1b.py: unknown variant {arg!r}; expected none or 'tensor4'.")
    return config
