# A toolchain image on a base the kit cannot build itself: NVIDIA's CUDA devel image (images.cuda)
# or L4T JetPack (images.jetson), which bring nvcc and the CUDA libraries. On top: the host
# compiler, CMake, git and Python at exact apt versions, and the venv of configs/requirements.lock.
# It holds no copy of the kit: run it with the checkout mounted at /moebench (`invoke run
# --in-image`), so binaries never depend on where a lab cloned the kit.
#
# `invoke image.build --image NAME` passes every ARG from configs/lock.yaml: BASE_IMAGE as
# name@sha256:digest (a tag alone is refused) and APT_PACKAGES as name=version pairs. The build
# context holds requirements.lock and the hash-checked wheels; no network is needed but apt's.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS toolchain
ARG APT_PACKAGES
ENV DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 TZ=UTC
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# APT_PACKAGES is a list of name=version pairs: word splitting is intended, every version is pinned.
# hadolint ignore=DL3008,SC2086
RUN test -n "${APT_PACKAGES}" \
 && apt-get update \
 && apt-get install -y --no-install-recommends ${APT_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*

# The wheels stay in this stage: only the finished venv reaches the image.
FROM toolchain AS venv
COPY requirements.lock /tmp/moebench/requirements.lock
COPY wheels/ /tmp/moebench/wheels/
RUN python3 -m venv /opt/moebench/venv \
 && /opt/moebench/venv/bin/pip install --no-index --find-links /tmp/moebench/wheels --require-hashes \
      --no-compile --no-cache-dir -r /tmp/moebench/requirements.lock \
 && find /opt/moebench/venv -name __pycache__ -prune -exec rm -rf {} +

FROM toolchain
COPY --from=venv /opt/moebench /opt/moebench
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/moebench PATH=/opt/moebench/venv/bin:${PATH}
WORKDIR /moebench
ENTRYPOINT ["/opt/moebench/venv/bin/invoke", "--search-root", "/moebench"]
CMD ["--list"]
