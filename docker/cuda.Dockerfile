# Linux CUDA image: pins CUDA 12.6 (nvcc), the host compiler and CMake of Ubuntu 22.04 and builds
# the pinned llama.cpp for sm_80/86/89/90. Run with `--gpus all`; NVML comes from the host driver.
ARG BASE_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu22.04
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 TZ=UTC
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates cmake g++ make git python3 python3-venv python3-dev util-linux procps \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /kit
COPY . /kit
RUN scripts/bootstrap.sh && .venv/bin/pip install --quiet nvidia-ml-py==12.560.30 \
 && .venv/bin/invoke build --device cuda
ENTRYPOINT ["/kit/.venv/bin/invoke"]
CMD ["reproduce", "--device", "cuda", "--smoke"]
