# Linux CPU image: pins the OS, compiler and CMake (Debian bookworm: gcc 12.2.0, cmake 3.25.1)
# and builds the pinned llama.cpp inside, so every host gets the binary whose SHA-256 lock.yaml names.
# BASE_IMAGE is passed by `invoke docker.build` as name@digest from configs/lock.yaml.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 TZ=UTC
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates cmake g++ make git python3 python3-venv python3-dev util-linux procps \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /kit
COPY . /kit
RUN scripts/bootstrap.sh && .venv/bin/invoke build --device cpu
ENTRYPOINT ["/kit/.venv/bin/invoke"]
CMD ["reproduce", "--device", "cpu", "--smoke"]
