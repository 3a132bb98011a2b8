"""What a run shows in TensorBoard: scalars in sections, its settings for the HParams
dashboard, and no duplicate points after a resume.

Tags are ``<section>/<key>``, so that TensorBoard's Scalars dashboard shows the losses,
the evaluation metrics, the diagnostics and the speed as separate sections. The step of
every point is the epoch (counted from 1).
"""
import glob
import os
from typing import Dict

import tensorflow as tf

SECTIONS = {
    "losses": ("d_loss", "g_loss", "gradient_penalty"),
    "diagnostics": ("d_real_prob", "d_fake_prob", "d_real_logit", "d_fake_logit",
                    "g_grad_norm", "d_grad_norm"),
    "speed": ("seconds", "images_per_sec", "eval_seconds"),
}
_SECTION_OF = {key: section for section, keys in SECTIONS.items() for key in keys}


def tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key: its section, then the key."""
    return f"{_SECTION_OF.get(key, 'evaluation')}/{key}"


def write_hparams(writer, settings: Dict[str, object], trial_id: str) -> None:
    """Writes the run's settings for TensorBoard's HParams dashboard.

    The dashboard then lists every run of ``tensorboard --logdir GRID`` with its
    settings beside the last value of each scalar (its metrics), to sort and filter.
    """
    from tensorboard.plugins.hparams import api as hp  # only where TensorBoard is used
    with writer.as_default():
        hp.hparams(settings, trial_id=trial_id)
    writer.flush()


def drop_events_after(directory: str, epoch: int) -> int:
    """Removes the points of epochs after ``epoch`` from the event files in ``directory``.

    A run resumed from an earlier checkpoint trains those epochs again and logs them
    again; without this, TensorBoard would show two points for each. The files are
    rewritten atomically, and only when they hold such points. Returns how many
    events were dropped.
    """
    dropped = 0
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        records, cut_short = _read_records(path)
        kept = [r for r in records
                if not _is_point_after(tf.compat.v1.Event.FromString(r), epoch)]
        if len(kept) == len(records) and not cut_short:
            continue
        dropped += len(records) - len(kept)
        temporary = f"{path}.{os.getpid()}.tmp"
        with tf.io.TFRecordWriter(temporary) as writer:
            for record in kept:
                writer.write(record)
        os.replace(temporary, path)
    return dropped


def _read_records(path: str):
    """(the whole records of a TFRecord file, whether its last one was cut short)."""
    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:  # a process killed while writing its last event
        return records, True
    return records, False


def _is_point_after(event, epoch: int) -> bool:
    return event.HasField("summary") and event.step > epoch
