"""The generation harness on a real (random-init) LM workdir with tiny real tokenizers.

A random LM cannot draw digits, so the test checks the harness's bookkeeping with real
parts: every task is sampled and scored against real demo clips' truth, the ceiling comes
from the same clips through the tokenizers, and results.json / report.md / clips are written.
"""
import json
import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), 'data_pipelines'))
import tiny_tokenizers_for_data  # noqa: E402  (the data tests' tiny real tokenizers)

from data_pipelines.clip_sources import DemoUnit  # noqa: E402
from data_pipelines.schema import ShardSpec  # noqa: E402
from vp_jax import config as config_lib  # noqa: E402
from vp_jax.checkpointing import Checkpointer  # noqa: E402
from vp_jax.evaluation import generation_eval  # noqa: E402
from vp_jax.trainer import build_job, make_partitioner  # noqa: E402
from vp_jax.vocabulary import Vocabulary  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope='module')
def tokenizers():
    return tiny_tokenizers_for_data.make_tiny_tokenizers()


@pytest.fixture(scope='module')
def lm_workdir(tmp_path_factory, tokenizers):
    root = tmp_path_factory.mktemp('lm')
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
              splits={}, fields=['clip_id', 'caption', 'video_tokens', 'audio_tokens', 'text_tokens'],
              extra={'mask_fraction': 0.5, 'fps': 8.0}).write(str(shards))
    config = config_lib.load_config_file(os.path.join(REPO, 'experiments', 't2v_base.py'), 'runlocal')
    config.model.update(vocab_size=vocab.padded_size, text_embedding_dim=0, num_layers=1, d_model=32,
                        num_heads=2, head_dim=16, mlp_dim=64, max_length=512)
    config.data.shards_dir = str(shards)
    config.mesh.max_replicated_fraction = 1.0
    config_lib.write_resolved_config(config, str(root))
    job = build_job(config, make_partitioner(config))
    state, _ = job.partitioner.init_sharded(job.init_fn, jax.random.key(0))
    with Checkpointer(str(root / 'checkpoints'), async_save=False) as checkpointer:
        checkpointer.save(5, state, {'config': config.to_dict()}, force=True)
    return str(root)


def test_harness_scores_every_task_beside_its_tokenizer_ceiling(lm_workdir, tokenizers, tmp_path):
    clips = [DemoUnit('test', i, seed=0).produce()[0][0] for i in range(2)]
    settings = generation_eval.HarnessSettings(tasks=('t2v', 'video_to_audio'), num_clips=2, batch_size=2,
                                               classifier_clips=50, feature_network='none', teacher_forced=False)
    out = tmp_path / 'eval'
    tasks = generation_eval.evaluate_lm(lm_workdir, str(out), settings, clips, str(tmp_path / 'cache'),
                                        tokenizers=tokenizers)
    t2v = tasks['t2v']
    assert t2v['digit_correct'].count == 2 and t2v['digit_correct'].ceiling_count == 2
    assert t2v['digit_correct'].target == 0.8
    assert tasks['video_to_audio']['pitch_class_correct'].ceiling_count == 2
    assert tasks['reconstruction']['psnr'].value > 0 and tasks['reconstruction']['si_snr_db'].count == 2
    saved = json.load(open(out / 'results.json'))
    assert saved['info']['step'] == 5 and saved['info']['clips_per_task'] == 2
    assert set(saved['tasks']) == {'t2v', 'video_to_audio', 'reconstruction'}
    assert (out / 'report.md').read_text().count('| t2v |') >= 2
    sidecars = [n for n in os.listdir(out / 'clips') if n.endswith('.json')]
    assert len(sidecars) == 2 * 2 * 2 + 2  # (generated + ceiling) x tasks x clips + reconstructions


def test_harness_settings_from_config_reject_unknown_fields_and_tasks():
    with pytest.raises(ValueError, match='unknown fields'):
        generation_eval.HarnessSettings.from_config({'num_clip': 3})
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        generation_eval.HarnessSettings.from_config({'tasks': ['t2v', 'dance']})
