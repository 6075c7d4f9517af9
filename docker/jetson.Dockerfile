# Jetson Orin Nano image: L4T r36.4 (JetPack 6.1: CUDA 12.6, gcc 11.4) and the pinned llama.cpp
# built for sm_87. tegrastats and nvpmodel are the host's: run with
#   --runtime nvidia -v /usr/bin/tegrastats:/usr/bin/tegrastats:ro
#   -v /usr/sbin/nvpmodel:/usr/sbin/nvpmodel:ro -v /etc/nvpmodel.conf:/etc/nvpmodel.conf:ro
# and set the power mode on the host first (sudo nvpmodel -m 0; sudo jetson_clocks): the kit
# records the mode it finds, it never changes it.
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 TZ=UTC
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates cmake g++ make git python3 python3-venv python3-dev util-linux procps \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /kit
COPY . /kit
RUN scripts/bootstrap.sh && .venv/bin/invoke build --device jetson
ENTRYPOINT ["/kit/.venv/bin/invoke"]
CMD ["reproduce", "--device", "jetson", "--smoke"]
