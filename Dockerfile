# GPU image: NGC PyTorch ships CUDA, NCCL, Transformer Engine and apex (apex is not on PyPI;
# the PyPI package called "apex" is unrelated and must never be installed).
#   docker build -t megatron_sota . && docker run --gpus all --ipc=host -it megatron_sota
FROM nvcr.io/nvidia/pytorch:25.04-py3

WORKDIR /workspace/megatron_sota
# torch (and Transformer Engine) come from the image: the constraint pins torch to the image's own
# build, so no requirement below can make pip replace it (the install fails instead).
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /etc/pip-torch-constraint.txt
# Every runtime dependency of setup.py's install_requires except torch, in its own cached layer;
# tests/unit/test_packaging.py fails when this list and setup.py's differ.
RUN pip install --no-cache-dir -c /etc/pip-torch-constraint.txt \
    "megatron-core==0.16.1" \
    "hydra-core>=1.3,<1.4" \
    numpy \
    sentencepiece \
    tokenizers \
    tiktoken \
    pyarrow \
    zstandard \
    matplotlib \
    tensorboard \
    tqdm \
    safetensors \
    psutil \
    pyyaml \
    einops
COPY setup.py README.md ./
COPY megatron_sota ./megatron_sota
COPY tools ./tools
COPY examples ./examples
# A regular (not editable) install: the configs are package data, found wherever the package lands.
RUN pip install --no-cache-dir --no-deps . && rm -rf build megatron_sota.egg-info
ENV CUDA_DEVICE_MAX_CONNECTIONS=1
CMD ["megatron-sota-train", "--help"]
