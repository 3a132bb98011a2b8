# GPU image: docker build -t tfgan_exp . && docker run --gpus all \
#   -v "$PWD/runs:/runs" -v "$HOME/tensorflow_datasets:/data/tensorflow_datasets" \
#   -v "$HOME/tfhub_cache:/data/tfhub_cache" tfgan_exp \
#   python run.py --dataset=stl10 --g_loss=nonsat
FROM tensorflow/tensorflow:2.21.0-gpu

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY run.py ./
COPY tfgan_exp ./tfgan_exp

# Runs go to /runs (the default --run_dir is runs/<name>, relative to /app); TFDS data,
# the TF-Hub Inception module and our cache (the real images' features, the digits
# classifier) are read from, and kept in, /data, so a new container computes none again.
RUN ln -s /runs /app/runs
ENV TFDS_DATA_DIR=/data/tensorflow_datasets \
    TFHUB_CACHE_DIR=/data/tfhub_cache \
    TFGAN_EXP_CACHE=/data/tfgan_exp_cache
VOLUME ["/runs", "/data"]

CMD ["python", "run.py"]
