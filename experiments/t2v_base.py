"""python -m vp_jax.main --config=experiments/t2v_base.py

The main job: a VideoPoet prefix-LM trained on a text-to-video-centred mixture of the
paper's pretraining tasks over pre-tokenized shards (config.data.shards_dir; '' means
<workdir>/shards). Tasks share one model and are grouped by sequence length (Alternating
Gradient Descent: one compiled program per length group).

Variants (`--config=experiments/t2v_base.py:<variant>`):
  (none)    the CPU demo, sized for ~25 minutes on 2 CPU cores for the whole job: 4 layers x 128
            (2 heads of 64), batch 8, 2200 steps (a 6 x 256 model runs ~300 tokens/s there: 3000 steps take days).
  quick     the whole demo job (data, tokenizers, LM, evaluation, samples) in minutes.
  runlocal  a tiny model and a few steps, to check a set-up end to end in a minute.
  accel     bfloat16 activations, remat and bigger batches for one GPU/TPU host.
With data.shards_dir '' (the default) and no shards in <workdir>/shards, the job first builds
them from the embedded demo (config.demo; vp_jax/pipeline.py: demo clips -> video, audio and
caption tokenizers -> shards), trains the LM in <workdir>/lm, scores it (<workdir>/eval) and
writes samples (<workdir>/samples); every stage is cached, a second run resumes.
Overrides: --config.train.num_steps=100 --config.data.shards_dir=/path/to/shards
Other modes: --mode=eval (teacher-forced loss/accuracy/conditioning gain per task on config.eval.split),
--mode=compile (lower + compile the train step, print per-device memory and FLOPs).
"""
import os

import ml_collections

from vp_jax.config import load_config_file

from vp_jax.model_config import default_model_config
from vp_jax.optimizer import default_optimizer_config
from vp_jax.partitioning import DEFAULT_RULES

# Text-to-video carries the most weight; the other tasks teach conditioning on images,
# masked clips, structure and audio (videopoet.md section 4).
T2V_CENTRED_MIXTURE = {
    't2v': 0.35,
    't2i': 0.10,
    'i2v': 0.10,
    'continuation': 0.08,
    'unconditional': 0.05,
    'inpainting': 0.05,
    'outpainting': 0.05,
    'stylization': 0.06,
    'audio_to_video': 0.05,
    'video_to_audio': 0.05,
    'av_continuation': 0.06,
}

# The embedded demo's mixture: the tasks the evaluation harness scores, text-to-video first.
# Text-to-video gets the most steps (its caption's motion words are learned slowly); video-to-
# audio 0.30, not 0.20: reading the digit from a video in 32 handwritings per digit needs the
# examples (with the 2 x 64 heads below and 2200 steps, its pitch rose from 0.69 to 0.77).
DEMO_MIXTURE = {
    't2v': 0.45,
    't2i': 0.06,
    'i2v': 0.07,
    'continuation': 0.06,
    'inpainting': 0.03,
    'outpainting': 0.03,
    'video_to_audio': 0.30,
}
# The paper's image/video schedule: the first 25% of steps 90% image tasks, then 10%.
PAPER_IMAGE_VIDEO_SCHEDULE = dict(switch_fraction=0.25, image_share_before=0.9, image_share_after=0.1)
QUICK_MIXTURE = {'t2v': 0.35, 't2i': 0.05, 'i2v': 0.15, 'continuation': 0.1, 'inpainting': 0.1, 'outpainting': 0.1,
                 'video_to_audio': 0.15}
EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))


def demo_config(quick: bool) -> ml_collections.ConfigDict:
    """config.demo: the data the job builds when it has no shards (vp_jax/pipeline.py)."""
    demo = ml_collections.ConfigDict()
    demo.num_clips = dict(train=48, validation=8, test=8) if quick else dict(train=2000, validation=64, test=64)
    demo.seed = 0
    demo.size = 32
    demo.num_frames = 17
    demo.fps = 8.0
    demo.sample_rate = 16000
    demo.clips_per_shard = 32 if quick else 250
    # Real images each digit is drawn from, per split (data_pipelines/demo/clips.py; 0 = all).
    # 32, not the demo module's 4: held-out clips show unseen handwriting, and with 4 the LM
    # read the digit from a video (video-to-audio pitch) 0.84 of the time on training clips but
    # 0.48 on test clips. With 16 a linear probe on the test clips' video tokens read the digit
    # 0.73 of the time (vp_jax/evaluation/token_probe.py), with 32 0.81. The video tokenizer
    # keeps its own 4 (video_tokenizer.data): trained on all, its tokens were harder to learn.
    demo.handwritings_per_digit = 32
    tokenizer_variant = 'quick' if quick else ''
    demo.video_tokenizer = load_config_file(os.path.join(EXPERIMENTS, 'magvit2_demo.py'), tokenizer_variant)
    demo.video_tokenizer.data.update(num_frames=demo.num_frames, height=demo.size, width=demo.size,
                                     fps=demo.fps, seed=demo.seed)
    demo.audio_tokenizer = load_config_file(os.path.join(EXPERIMENTS, 'soundstream_demo.py'), tokenizer_variant)
    # BPE keeps each demo caption within 14 tokens (unigram would cut them at text_length).
    demo.caption_tokenizer = dict(vocab_size=128, model_type='bpe')
    # Token fields the shards get; add 'structure_tokens' when data.tasks has stylization.
    demo.shards = dict(text_length=16, mask_fraction=0.5, batch_size=8,
                       fields=('video_tokens', 'inpaint_tokens', 'outpaint_tokens', 'audio_tokens', 'text_tokens'))
    # The generation harness (vp_jax/evaluation/generation_eval.py HarnessSettings).
    # Guidance 1.5 and temperature 0.2, chosen on the validation split (64 clips, the default
    # job's LM). At temperature 0.2, guidance 1 / 1.25 / 1.5 / 2 / 3 / 5 gave T2V digit
    # 0.91 / 0.92 / 0.97 / 0.97 / 0.92 / 0.77 and direction 0.98 / 1.00 / 1.00 / 0.98 / 0.91 / 0.69:
    # with strong guidance the failing clips' sprite stops mid-frame or fades out. At guidance
    # 3, temperature 0.7 / 0.4 / 0.2 / greedy gave direction 0.84 / 0.88 / 0.91 / 0.92 and V2A
    # pitch 0.59 / 0.66 / 0.66 / 0.66 (video-to-audio has no text in its prefix, so guidance
    # leaves it alone).
    demo.harness = dict(
        tasks=('t2v', 'i2v', 'continuation', 'inpainting', 'outpainting', 'video_to_audio'), num_clips=64,
        split='test', batch_size=16, seed=0, temperature=0.2, top_k=0, top_p=1.0, guidance_scale=1.5,
        classifier_clips=800, feature_network='demo', teacher_forced=True, num_sample_clips=8)
    demo.samples = dict(chains=('t2v,video_to_audio', 'i2v'), num_prompts=4, split='test', seed=0,
                        temperature=0.2, top_k=0, top_p=1.0, guidance_scale=1.5)
    if quick:  # one compiled program per tokenizer: no image phase, evaluation only at the end
        demo.video_tokenizer.train.image_steps = 0
        demo.video_tokenizer.eval.every_steps = demo.video_tokenizer.train.num_steps
        demo.audio_tokenizer.train.eval_every_steps = demo.audio_tokenizer.train.num_steps
        demo.harness.update(tasks=('t2v', 'i2v', 'video_to_audio'), num_clips=4, batch_size=4,
                            classifier_clips=60, feature_network='none')
        demo.samples.update(chains=('t2v,video_to_audio',), num_prompts=2)
    return demo


def get_config(arg=None):
    variant = arg or ''
    if variant not in ('', 'quick', 'runlocal', 'accel'):
        raise ValueError(f"experiments/t2v_base.py: unknown variant {variant!r}; "
                         "expected '', 'quick', 'runlocal' or 'accel'.")
    config = ml_collections.ConfigDict()
    config.workdir = ''  # '' = ~/vp_jax_runs/t2v_base; --workdir overrides.
    config.seed = 0
    config.init_from = ''  # A Checkpointer directory (or step folder) to take params from.

    config.model = default_model_config()
    # 2 heads of 64, not 4 of 32: on 2 CPU cores the [batch, heads, length, length] attention
    # scores dominate the step, and halving the heads trains 1.3x the tokens/s (docs/demo_results.md).
    config.model.update(vocab_size=-1, text_embedding_dim=-1, num_layers=4, d_model=128,
                        num_heads=2, head_dim=64, mlp_dim=512, max_length=672,
                        scan_layers=False, dtype='float32')
    # Row/column embeddings of each visual token's latent cell, on the data's grid. On the demo
    # (one 1800-step run each) the generated T2V digit rose from 0.77 to 0.92, image-to-video's
    # from 0.38 to 0.48 and continuation's from 0.27 to 0.52; eval loss 0.479 -> 0.458.
    config.model.visual_grid = (-1, -1)
    # Off: a learned vector per bit of each visual id (model.VisualBitEmbedding) lowered the
    # demo's teacher-forced T2V loss from 0.257 to 0.235 and raised image-to-video's digit from
    # 0.63 to 0.67, but video-to-audio pitch fell from 0.69 to 0.61 (one 1800-step run each).
    config.model.visual_bit_embedding = False

    config.data = ml_collections.ConfigDict()
    config.data.shards_dir = ''  # '' = <workdir>/shards (where the prepare-data stage writes).
    config.data.tasks = dict(T2V_CENTRED_MIXTURE)
    config.data.length_groups = 'auto'
    config.data.length_group_max_padding = 0.1
    config.data.text_dropout = 0.1  # Drop the caption this often (classifier-free guidance).
    config.data.image_video_schedule = dict(PAPER_IMAGE_VIDEO_SCHEDULE)
    config.data.num_parallel_reads = 2  # shard files read at once
    config.data.shuffle_buffer_size = 1000  # examples per task; also bounds the checkpointed data position

    config.optimizer = default_optimizer_config()
    # 2e-3 is the accel variant's; the CPU demo variants below raise it to 3e-3.
    config.optimizer.update(lr=2e-3, warmup_steps=120, schedule='cosine', weight_decay=0.01)

    config.train = ml_collections.ConfigDict()
    # Batch 8, not 16: the same tokens in the same CPU time gave an eval loss of 3.16 instead
    # of 3.66 on the demo (the LM is far from converged; more updates win). 2200 steps fill the
    # 25-minute CPU budget (the job took 21-24 minutes; 1800 steps with 4 heads of 32 took as
    # long). Single runs are noisy: over four 1800-step runs that differ only in side settings
    # the T2V digit score ranged 0.52-0.81 (64 clips each).
    # 5400 steps (a ~45-minute job) taught video-to-audio (pitch 0.58 against 0.08, on the older
    # random-phase tone) and continuation (direction 0.63 against 0.33) but not T2V direction
    # (0.33): the LM's loss does not depend on the caption's direction word at all (docs/demo_results.md).
    config.train.batch_size = 8
    config.train.num_steps = 2200
    config.train.microbatches = 1
    config.train.log_every_steps = 40
    config.train.eval_every_steps = 600
    config.train.checkpoint_every_steps = 200
    config.train.max_to_keep = 3
    config.train.async_checkpointing = True
    config.train.task_loss_multipliers = {}
    config.train.z_loss_weight = 1e-4
    # Off: flipping each bit of the prefix's visual ids with probability 0.05 in training raised
    # video-to-audio pitch from 0.52 / 0.55 to 0.59 / 0.61 (test / validation) but lowered I2V digit
    # from 0.61 to 0.50 and inpainting's from 0.22 to 0.08 (one paired 2200-step run; docs/demo_results.md).
    # On video-to-audio alone: 0.53 / 0.64 at 0.05, within the spread of single runs; at 0.1 it
    # collapsed to chance (0.14 / 0.09).
    config.train.prefix_visual_bit_flip = 0.0
    config.train.prefix_visual_bit_flip_tasks = ''  # comma-separated task names; '' = every task
    config.train.peak_flops_per_device = 0.0  # > 0 adds MFU to the logs (e.g. 459e12 on v5p bf16).

    config.eval = ml_collections.ConfigDict()
    config.eval.split = 'validation'
    config.eval.batch_size = 16
    config.eval.max_batches_per_task = 4
    # Also score every batch with mismatched conditioning: task/<name>/conditioning_gain (trainer.evaluate).
    config.eval.conditioning_gain = True

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1
    config.mesh.logical_axis_rules = [list(rule) for rule in DEFAULT_RULES]
    config.mesh.max_replicated_fraction = 0.1

    # --mode=compile without shards takes the token shapes from here: the demo tokenizers'
    # (experiments/magvit2_demo.py: 17x32x32 -> latents 5x8x8 of 8 bits;
    # experiments/soundstream_demo.py: 4 levels x 256 codes, 53 frames per 2.125 s clip).
    config.compile = ml_collections.ConfigDict()
    config.compile.vocabulary = dict(visual_bits=8, audio_levels=4, audio_codebook_size=256,
                                     text_vocab_size=256)
    config.compile.geometry = dict(video_latent_shape=(5, 8, 8), audio_shape=(4, 53), text_length=16,
                                   text_embedding_dim=0)
    config.compile.topology = ''  # e.g. 'v5p:8x8x4' (needs libtpu; see vp_jax/aot_compile.py).

    config.demo = demo_config(quick=variant in ('quick', 'runlocal'))
    config.tokenizers = dict(video='', audio='', text='', t5='')  # checkpoint paths for sampling

    if variant in ('', 'quick'):
        config.data.tasks = dict(QUICK_MIXTURE if variant == 'quick' else DEMO_MIXTURE)
        config.optimizer.lr = 3e-3  # the 4 x 128 demo LM is far from converged: the larger step wins
    if variant == '':  # image tasks first for 10% of the steps, not 25%: the demo's scores are in motion
        config.data.image_video_schedule.switch_fraction = 0.1
    else:  # the full mixture has stylization
        config.demo.shards.fields = tuple(config.demo.shards.fields) + ('structure_tokens',)
    if variant in ('runlocal', 'quick'):
        config.model.update(num_layers=2, d_model=64, num_heads=2, head_dim=32, mlp_dim=128)
        config.optimizer.update(lr=3e-3, warmup_steps=5)
        config.train.update(batch_size=8, num_steps=40, log_every_steps=5, eval_every_steps=20,
                            checkpoint_every_steps=20)
        config.eval.update(batch_size=8, max_batches_per_task=1)
    elif variant == 'accel':
        config.model.update(dtype='bfloat16', remat_policy='save_dot_except_mlp', num_layers=12,
                            d_model=768, num_heads=12, head_dim=64, mlp_dim=2048)
        config.train.update(batch_size=64, num_steps=50_000, checkpoint_every_steps=1000,
                            eval_every_steps=2000, log_every_steps=50)
        config.eval.batch_size = 64
        config.optimizer.warmup_steps = 1000
    return config
