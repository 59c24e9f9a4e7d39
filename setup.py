"""vp-jax: an open JAX/Flax training stack for VideoPoet-style video generation.

Install layout. The repository keeps the tokenizers in a top-level folder named
`tokenizers/`, but Hugging Face also ships a top-level `tokenizers` package. Installing
ours under that name would shadow theirs, so the folder is installed as the sub-package
`vp_tokenizers` (see `package_dir`) and the folder itself has no `__init__.py`: even
when the repository root is on `sys.path` (running `python -m ...` from a checkout),
`import tokenizers` still finds the Hugging Face package. `tests/test_packaging.py`
proves both.
"""
import setuptools

_CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "seqio>=0.0.20,<0.1",
    # sentencepiece 0.2.3 is generated with protobuf 7, which tensorflow 2.21 cannot load.
    "sentencepiece>=0.2.0,<0.2.3",
    "ml-collections>=1.1,<1.2",
    "numpy>=2.0,<2.5",
    # clu: TensorBoard metric writers (scalars, images, audio) that work under jax.
    "clu>=0.0.12,<0.1",
    # clu's writers import tensorboard, which tensorflow 2.21 no longer installs.
    "tensorboard>=2.21,<2.22",
    "einops>=0.8,<0.9",
    # PyAV: decode any container/codec and write H.264 + AAC mp4 with sound.
    "av>=14,<19",
    "safetensors>=0.4,<0.9",
    "pillow>=10,<13",
    "tqdm>=4.66,<5",
]
_DATA = [
    # Apache Beam: the pre-tokenization pipeline runs on DirectRunner here and on
    # Dataflow/Flink/Spark at scale.
    "apache-beam>=2.77,<2.78",
    # OpenCV: optical flow for the stylization structure clips.
    "opencv-python-headless>=4.9,<5.1",
    # scikit-learn / scikit-image ship the real pictures the embedded demo is made from.
    "scikit-learn>=1.5,<1.10",
    "scikit-image>=0.24,<0.27",
]
_TEST = [
    "pytest>=8,<10",
    "pytest-xdist>=3.5,<4",
    # The T5 encoder is checked against the PyTorch reference on tiny random weights, and the
    # packaging test imports Hugging Face's own `tokenizers` next to ours. Test-only: the
    # runtime never imports torch or transformers.
    "torch==2.13.0",
    "transformers>=5.0,<6",
    "tokenizers>=0.22,<0.24",
]

setuptools.setup(
    name="vp-jax",
    version="0.1.0",
    description="VideoPoet-style multimodal video generation in JAX/Flax",
    python_requires=">=3.11",
    packages=(
        setuptools.find_packages(include=["vp_jax", "vp_jax.*", "data_pipelines", "data_pipelines.*"])
        + ["vp_tokenizers"]
        + ["vp_tokenizers." + p for p in setuptools.find_namespace_packages(where="tokenizers")]
    ),
    package_dir={"vp_tokenizers": "tokenizers"},
    install_requires=_CORE + _DATA,
    extras_require={"test": _TEST},
)
