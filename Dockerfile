# GPU image: NGC PyTorch ships CUDA, NCCL, Transformer Engine and apex (apex is not on PyPI;
# the PyPI package called "apex" is unrelated and must never be installed).
#   docker build -t megatron_sota . && docker run --gpus all --ipc=host -it megatron_sota
FROM nvcr.io/nvidia/pytorch:25.04-py3

WORKDIR /workspace/megatron_sota
COPY setup.py README.md ./
COPY megatron_sota ./megatron_sota
COPY tools ./tools
COPY examples ./examples
# torch (and Transformer Engine) come from the image: keep pip from replacing them.
RUN pip install --no-cache-dir "megatron-core==0.16.1" "hydra-core>=1.3,<1.4" sentencepiece tensorboard tqdm psutil \
 && pip install --no-cache-dir --no-deps -e .
ENV CUDA_DEVICE_MAX_CONNECTIONS=1
CMD ["python", "-m", "megatron_sota.train", "--help"]
