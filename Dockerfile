# The GPU image, as clusters run it (README.md, "Docker"):
#   docker build --build-arg GIT_COMMIT=$(git describe --always --dirty --abbrev=40 \
#     --exclude='*') -t tfgan_exp:0.1.0 .
#   docker run --gpus all --stop-timeout=120 -v "$PWD/runs:/runs" \
#     -v "$HOME/tfgan_data:/data" tfgan_exp:0.1.0 python run.py --dataset=stl10
# A slim Python with TensorFlow's CUDA libraries from pip (tensorflow[and-cuda]), as
# TensorFlow's install guide recommends; the official python:3.11-slim-bookworm tag.
# BASE may name another image with Debian bookworm and python/pip on PATH (a site's
# mirror of it; tests/standin_base.sh builds one with debootstrap for make test-image
# where Docker Hub is out of reach).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# tini as PID 1: it passes SIGTERM on to the training process and reaps children, and
# the training process's own handlers are set when it starts (tfgan_exp.runtime.stopping).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# REQUIREMENTS=requirements.txt builds a CPU-only image (TensorFlow without CUDA's
# libraries: about a third of the size), for CPU clusters.
ARG REQUIREMENTS=requirements-gpu.txt
COPY requirements.txt requirements-gpu.txt ./
RUN pip install --no-cache-dir -r "${REQUIREMENTS}"
COPY run.py ./
COPY tfgan_exp ./tfgan_exp

# A user of its own (root-squashed NFS refuses root's writes). UID at build time with
# --build-arg UID=..., or at run time with docker run --user UID:GID: /runs, /data and
# the home are writable by any user, so either works.
ARG UID=1000
RUN useradd --uid "${UID}" --create-home --home-dir /home/tfgan tfgan \
    && mkdir -p /runs /data \
    && chmod 1777 /runs /data /home/tfgan \
    && ln -s /runs /app/runs
ENV HOME=/home/tfgan \
    MPLCONFIGDIR=/tmp/matplotlib \
    TFDS_DATA_DIR=/data/tensorflow_datasets \
    TFHUB_CACHE_DIR=/data/tfhub_cache \
    TFGAN_EXP_CACHE=/data/tfgan_exp_cache
USER tfgan
VOLUME ["/runs", "/data"]

# TensorBoard: docker run -p 6006:6006 ... tensorboard --logdir /runs --bind_all
EXPOSE 6006
ENTRYPOINT ["tini", "--"]
CMD ["python", "run.py"]

# The commit the image was built from, "-dirty" if the tree had changes (git is not in
# the image): every run's provenance.json records it, so runs from two builds of one
# version stay apart. Last, so that a new commit rebuilds only this layer.
ARG GIT_COMMIT=
LABEL org.opencontainers.image.revision=${GIT_COMMIT}
ENV TFGAN_EXP_GIT_COMMIT=${GIT_COMMIT}
