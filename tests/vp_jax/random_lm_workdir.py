"""A trained-LM workdir made of real parts with random weights, for generation tests.

The LM is saved by the trainer's own pieces (build_job -> TrainState -> Checkpointer) beside a
resolved config.json and a shard spec.json that describes the tiny real tokenizers'
geometry, exactly what `vp_jax.generate.load_lm` reads from a trained run.
"""
import os

import jax

from data_pipelines.schema import ShardSpec
from vp_jax import config as config_lib
from vp_jax.checkpointing import Checkpointer
from vp_jax.trainer import build_job, make_partitioner
from vp_jax.vocabulary import Vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_random_lm_workdir(root, tokenizers, fields, step, extra) -> str:
    """Writes <root>/shards/spec.json, <root>/config.json and <root>/checkpoints/<step>."""
    latent = tokenizers.video.latent_shape(17, 32, 32)
    vocab = Vocabulary(visual_bits=tokenizers.video.bits, audio_levels=tokenizers.audio.levels,
                       audio_codebook_size=tokenizers.audio.codebook_size,
                       text_vocab_size=tokenizers.text.vocab_size)
    shards = root / 'shards'
    shards.mkdir()
    ShardSpec(vocabulary=vocab.to_dict(),
              tokenizers={'video': tokenizers.video.checkpoint_id, 'audio': tokenizers.audio.checkpoint_id,
                          'text': {'kind': 'tokens'}, 'depth': 'luminance_layout_depth'},
              geometry={'video_latent_shape': list(latent),
                        'audio_shape': [tokenizers.audio.levels, 34000 // tokenizers.audio.hop_length],
                        'text_length': 8, 'text_embedding_dim': 0},
              splits={}, fields=list(fields), extra=dict(extra)).write(str(shards))
    config = config_lib.load_config_file(os.path.join(REPO, 'experiments', 't2v_base.py'), 'runlocal')
    config.model.update(vocab_size=vocab.padded_size, text_embedding_dim=0, num_layers=1, d_model=32,
                        num_heads=2, head_dim=16, mlp_dim=64, max_length=512,
                        visual_grid=tuple(latent[1:]), visual_range=vocab.visual_range)
    config.data.shards_dir = str(shards)
    config.mesh.max_replicated_fraction = 1.0
    config_lib.write_resolved_config(config, str(root))
    job = build_job(config, make_partitioner(config))
    state, _ = job.partitioner.init_sharded(job.init_fn, jax.random.key(0))
    with Checkpointer(str(root / 'checkpoints'), async_save=False) as checkpointer:
        checkpointer.save(step, state, {'config': config.to_dict()}, force=True)
    return str(root)
