"""Installs megatron_sota: `pip install -e .` (add `[dev]` for tests, `[hf]` for Hugging Face export)."""

from setuptools import find_packages, setup

setup(
    name="megatron_sota",
    version="0.1.0",
    description="Hydra-configured 3D-parallel LLM pretraining on megatron-core, from a laptop CPU to thousands of GPUs",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_sota", "megatron_sota.*"]),
    install_requires=[
        # On the project's CPU machines `pip install torch==2.13.0` takes the local CPU build;
        # install it first (see README), or pip may fetch a multi-GB CUDA build.
        "torch>=2.6",
        "megatron-core==0.16.1",
        "hydra-core>=1.3,<1.4",
        "numpy",
        "sentencepiece",
        # Data pipeline: HF/tiktoken tokenizers, parquet and .zst inputs, the data-mix chart.
        "tokenizers",
        "tiktoken",
        "pyarrow",
        "zstandard",
        "matplotlib",
        "tensorboard",
        "tqdm",
        # Hugging Face checkpoint import reads safetensors files (export writes them itself).
        "safetensors",
        "psutil",
        "pyyaml",
    ],
    extras_require={
        # GPU only; the NGC PyTorch image ships it (and apex, which is not on PyPI).
        "te": ["transformer-engine[pytorch]"],
        # Loading exported models with transformers; the conversion tests check against it.
        "hf": ["transformers>=4.51"],
        # Hydra sweeps submitted as SLURM jobs (hydra/launcher=slurm).
        "slurm": ["hydra-submitit-launcher>=1.2"],
        "dev": ["pytest", "pytest-timeout", "transformers>=4.51", "hydra-submitit-launcher>=1.2"],
    },
    entry_points={"console_scripts": ["megatron-sota-train=megatron_sota.train:main"]},
)
