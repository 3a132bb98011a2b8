"""tfgan_exp: does the GAN loss matter? Train, score and compare, by measurement.

Importing this package selects the Keras 2 API (``tf_keras``) for TensorFlow, which
must happen before TensorFlow is first imported: Keras 3's ``fit`` with a custom
``train_step`` fails under ``MultiWorkerMirroredStrategy``, and TF-GAN's Inception
wrapper and TensorFlow Hub need ``tf_keras`` anyway.
"""
import os
import sys
import warnings

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "tfgan_exp must be imported before tensorflow (or run with "
        "TF_USE_LEGACY_KERAS=1): it needs the Keras 2 API (tf_keras).")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# A run started by --parallel is pinned to its cores here, before numpy or TensorFlow
# start their thread pools (threads keep the mask they were created with).
if os.environ.get("TFGAN_EXP_CPUS"):
    os.sched_setaffinity(0, [int(c) for c in os.environ["TFGAN_EXP_CPUS"].split(",")])
# TensorFlow's C++ start-up chatter hides the messages a user needs; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow Hub 0.16 imports pkg_resources (tensorflow/hub#934), which warns on every
# start; setuptools is bounded below 81 in requirements.txt so the import keeps working.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated",
                        category=UserWarning)

__version__ = "0.1.0"
