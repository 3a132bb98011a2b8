"""Slots and studies: a --parallel grid's processes train run after run with the results
of separate processes, the costliest runs first; a study's phases share one queue; and
both record where the wall time went (the timeline)."""
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import run_command, wait_for
from tfgan_exp.grids import launch
from tfgan_exp.runtime import timeline
from tfgan_exp.config import Config
from tfgan_exp.rundir import RunDir

TINY = ["--image_size=16", "--width=4", "--latent_dim=8", "--eval_samples=100"]
# What a run computes: its metrics lines without the clock's numbers.
TIMED = {"seconds", "images_per_sec", "eval_seconds"}


def tiny(root, name, cache_dir, **settings):
    return Config(image_size=16, width=4, latent_dim=8, eval_samples=100, eval_every=1,
                  deterministic=True, cache_dir=cache_dir,
                  run_dir=os.path.join(root, name), **settings).resolved()


def results(config):
    return [{k: v for k, v in record.items() if k not in TIMED}
            for record in RunDir(config.run_dir).read_metrics()]


def runs_in_trace(path):
    """[(run name, pid, slot)] in the order the trace's runs started."""
    with open(path) as handle:
        events = json.load(handle)["traceEvents"]
    runs = sorted((e for e in events if e.get("cat") == timeline.RUN), key=lambda e: e["ts"])
    return [(e["name"], e["args"]["pid"], e["tid"]) for e in runs], events


@pytest.mark.slow
def test_a_slot_trains_runs_one_after_another_with_the_results_of_separate_processes(
        tmp_path, cache_dir, capsys):
    # The longer run is listed last and starts first; the shorter then trains in the
    # same process, after it, and must equal the same run trained in a process of its
    # own (--deterministic): Keras's state, the seeds and the reused scorer leave no trace.
    shared, alone = str(tmp_path / "shared"), str(tmp_path / "alone")
    short = dict(g_loss="hinge", epochs=1, seed=3)
    long = dict(g_loss="minimax", epochs=2, seed=1)
    tally = launch.run_in_parallel(
        [tiny(shared, "short", cache_dir, **short), tiny(shared, "long", cache_dir, **long)],
        shared, parallel=1, trace_path=os.path.join(shared, "timeline.json"))
    assert tally.finished == 2 and tally.exit_status == 0
    order, events = runs_in_trace(os.path.join(shared, "timeline.json"))
    assert [name for name, _, _ in order] == ["long", "short"]  # costliest first
    assert order[0][1] == order[1][1]  # one process trained both
    err = capsys.readouterr().err
    line = [l for l in err.splitlines() if l.startswith("timeline: ") and "efficiency" in l]
    assert line and 0 < float(line[0].split("efficiency ")[1].split()[0]) <= 1
    categories = {e.get("cat") for e in events}
    assert {timeline.STARTUP, timeline.RUN, timeline.EPOCH, timeline.TRACING,
            timeline.EVALUATION, timeline.EPOCH_END, timeline.DATA} <= categories
    # Every span of a run lies within it, on its slot's row.
    for run in (e for e in events if e.get("cat") == timeline.RUN):
        inside = [e for e in events if e.get("cat") == timeline.EPOCH
                  and run["ts"] <= e["ts"] < run["ts"] + run["dur"]]
        assert len(inside) == {"long": 2, "short": 1}[run["name"]]

    tally = launch.run_in_parallel(
        [tiny(alone, "short", cache_dir, **short), tiny(alone, "long", cache_dir, **long)],
        alone, parallel=1, trace_path=os.path.join(alone, "timeline.json"),
        process_per_run=True)
    assert tally.finished == 2
    order, events = runs_in_trace(os.path.join(alone, "timeline.json"))
    assert [name for name, _, _ in order] == ["long", "short"]
    assert order[0][1] != order[1][1]  # a process of its own each
    assert len([e for e in events if e.get("cat") == timeline.STARTUP]) == 2
    for name, settings in (("short", short), ("long", long)):
        ran_alone = results(tiny(alone, name, cache_dir, **settings))
        assert ran_alone and results(tiny(shared, name, cache_dir, **settings)) == ran_alone
        assert "digits_score" in ran_alone[-1]


def test_the_costliest_runs_start_first():
    ten, thirty = Config(epochs=10), Config(epochs=30)
    assert launch.longest_first([ten, thirty]) == [thirty, ten]
    # Fewer generator updates per epoch with more D steps: a little cheaper an epoch.
    assert launch.estimated_cost(Config(epochs=10, d_steps=5)) < launch.estimated_cost(ten)
    assert launch.estimated_cost(Config(epochs=10, width=32)) > launch.estimated_cost(ten)
    same = [Config(epochs=10, seed=s) for s in range(3)]
    assert launch.longest_first(same) == same  # ties keep the grid's order
    # A CIFAR-10 run outweighs a digits run of more epochs.
    assert launch.longest_first([thirty, Config(dataset="cifar10", epochs=10)])[0] != thirty
    # Runs another phase waits for (a study's search) go before all others.
    assert launch.longest_first([thirty, ten], first=lambda c: c is ten) == [ten, thirty]


@pytest.mark.slow
def test_a_study_queues_its_phases_together_stops_on_sigterm_and_resumes(tmp_path,
                                                                         cache_dir):
    root = tmp_path / "study"
    args = ["-m", "tfgan_exp.study", f"--run_dir={root}", "--parallel=2",
            f"--cache_dir={cache_dir}", *TINY, "--eval_every=1",
            "--checkpoint_every_steps=5",
            "--phase=seeds: --g_loss=minimax,hinge --seeds=1 --epochs=2",
            "--phase=search: --g_loss=minimax,hinge --search=2 --epochs=1",
            "--phase=tuned: --g_loss=minimax,hinge --seed=100 --epochs=1 "
            "--tuned_from=search"]
    process = subprocess.Popen([sys.executable, *args], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, PYTHONPATH=os.path.dirname(
                                   os.path.dirname(os.path.abspath(__file__)))))
    wait_for(lambda: list(root.glob("*/*/checkpoints/checkpoint")),  # a run trained a step
             "a run's checkpoint", 300, 0.02, process=process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM, run it again to resume" in err.splitlines()[-1]
    stopped = [line.split()[1] for line in out.splitlines()
               if line.startswith("[parallel] ") and " stopped (exit status" in line]
    assert stopped, out[-3000:]

    # A run stopped after its first step has a checkpoint and resumes from it; one that
    # the stop met while it started (the other slot's, say) has none and starts afresh.
    saved = {name for name in stopped if (root / name / "checkpoints" / "checkpoint").exists()}

    done = run_command(*args, timeout=600)  # run again: resumes
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == "grid: 8 runs: 8 finished, 0 diverged, 0 failed"
    for name in stopped:
        assert (f"[{name}] resuming" in done.stdout) == (name in saved), name
        assert f"[{name}] training " in done.stdout
    order, events = runs_in_trace(root / "timeline.json")
    assert len({slot for _, _, slot in order}) == 2 and len({pid for _, pid, _ in order}) == 2
    # The search first (the tuned phase waits for it), then the 2-epoch seeds before the
    # 1-epoch tuned runs; every tuned run starts after every search run has ended.
    phases = [name.split("/")[0] for name, _, _ in order]
    assert phases == sorted(phases, key=["search", "seeds", "tuned"].index), phases
    assert phases.count("tuned") == 2 and phases.count("seeds") == 2
    runs = {e["name"]: e for e in events if e.get("cat") == timeline.RUN}
    last_search = max(e["ts"] + e["dur"] for n, e in runs.items() if n.startswith("search/"))
    assert all(e["ts"] >= last_search for n, e in runs.items() if n.startswith("tuned/"))
    assert sorted(n for n in runs if n.startswith("tuned/")) == [
        "tuned/g_loss=hinge,seed=100", "tuned/g_loss=minimax,seed=100"]
    with open(root / "tuned" / "tuned.json") as handle:
        assert json.load(handle)["search"] == str(root / "search")
    for folder in root.glob("*/*"):
        if folder.is_dir():  # every epoch once, through the stop
            epochs = 2 if folder.parent.name == "seeds" else 1
            assert [r["epoch"] for r in RunDir(str(folder)).read_metrics()] == list(
                range(1, epochs + 1)), folder
    again = run_command(*args)  # every phase is done: none trains again
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already trained") == 8 and "started" not in again.stdout


@pytest.mark.parametrize("phase, says", [
    ("losses --epochs=2", "write it as 'NAME: FLAGS'"),
    ("a: --parallel=2", "'--parallel=2' is not a training flag of a phase"),
    ("a: --g_loss=nonsense", "--g_loss=nonsense"),
    ("a: --tuned_from=b", "names a phase that comes after it"),
])
def test_a_study_refuses_a_phase_it_cannot_run_in_one_line(tmp_path, phase, says):
    done = subprocess.run(
        [sys.executable, "-m", "tfgan_exp.study", f"--run_dir={tmp_path / 's'}",
         f"--phase={phase}", "--phase=b: --epochs=1"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "s").exists()  # nothing written


def span(category, start, end, name=""):
    return {"name": name or category, "cat": category, "start": start, "end": end,
            "args": {}}


def test_the_timeline_counts_epochs_once_and_every_idle_second(tmp_path, capsys):
    # Two slots over 100 s: slot 0 starts up (10 s), trains a run of two 30-s epochs
    # (the first step inside the first) with a 5-s evaluation, then idles; slot 1 starts
    # up late and trains one 40-s epoch, and exits.
    rows = {0: [span(timeline.STARTUP, 0, 10), span(timeline.RUN, 10, 80, "a"),
                span(timeline.EPOCH, 12, 42), span(timeline.TRACING, 12, 14),
                span(timeline.EPOCH, 42, 72), span(timeline.EVALUATION, 72, 77)],
            1: [span(timeline.STARTUP, 20, 30), span(timeline.RUN, 30, 75, "b"),
                span(timeline.EPOCH, 31, 71), span(timeline.EXIT, 75, 76)]}
    trace = str(tmp_path / "timeline.json")
    launch._finish_timeline(rows, 2, 0.0, trace, end=100.0)
    lines = capsys.readouterr().err.splitlines()
    numbers = timeline.summary([s for row in rows.values() for s in row], 2, 0.0, 100.0)
    assert numbers["epoch_seconds"] == 100  # 30 + 30 + 40: the first step not again
    assert numbers["efficiency"] == 0.5 and numbers["overhead_seconds"] == 100
    assert lines[-1].startswith("timeline: 100 s of wall time on 2 slot(s); epochs 100 s "
                                "(floor 50 s of wall), overhead 100 slot-s; efficiency 0.50")
    idle = {slot: sum(s["end"] - s["start"] for s in row if s["cat"] == timeline.IDLE)
            for slot, row in rows.items()}
    assert idle == {0: 20, 1: 44}  # slot 0 after its run; slot 1 before its start, after exit
    kinds = timeline.overhead_by_category([s for row in rows.values() for s in row])
    assert kinds["idle"] == 64 and kinds["start-up"] == 20 and kinds["evaluation"] == 5
    # What runs spent outside their phases: a 70-s run with 65 s of phases, a 45-s one
    # with 40 s.
    assert kinds["within runs, other"] == 10 and "first step" in lines[-2]
    with open(trace) as handle:
        document = json.load(handle)
    assert float(document["otherData"]["efficiency"]) == 0.5
    shown = subprocess.run([sys.executable, "-m", "tfgan_exp.timeline", trace],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.strip() == lines[-1].rsplit(" (", 1)[0]


def test_a_slot_that_dies_before_it_starts_gives_its_run_back_and_two_stop_the_grid(
        tmp_path, cache_dir, monkeypatch, capsys):
    from tfgan_exp.grids import slots
    monkeypatch.setattr(slots, "COMMAND", [sys.executable, "-c", "raise SystemExit(7)"])
    root = str(tmp_path / "grid")
    configs = [tiny(root, name, cache_dir, epochs=1) for name in ("a", "b", "c")]
    tally = launch.run_in_parallel(configs, root, parallel=2)
    out = capsys.readouterr().out
    assert tally.exit_status == 1 and tally.failed == 0 and tally.finished == 0
    assert "ended before they could start TensorFlow" in tally.summary()
    assert "goes back to the queue" in out
    for config in configs:  # nothing was written where no run ever started
        assert not os.path.exists(config.run_dir)


def test_a_studys_phases_each_get_their_own_flags_and_the_studys_win(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tfgan_exp.study", f"--run_dir={tmp_path / 's'}",
         "--dry_run", "--epochs=2",
         "--phase=fast: --lr_g=0.001 --epochs=7", "--phase=plain: --g_loss=hinge",
         "--phase=search: --search=2", "--phase=tuned: --seed=100 --tuned_from search"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    fast = lines[lines.index("phase fast:") + 1]
    plain = lines[lines.index("phase plain:") + 1]
    assert "lr_g=0.001" in fast and "epochs=2" in fast  # the study's --epochs wins
    assert "lr_g" not in plain and "g_loss=hinge" in plain and "epochs=2" in plain
    assert lines[lines.index("phase tuned:") + 1] == (
        "  its runs are chosen once phase search has ended")
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_a_phase_waits_until_every_run_of_its_search_has_ended_and_not_if_one_failed():
    # In a process of its own: the study's flags are run.py's, which clash with the
    # score command's that other tests load here.
    script = """
from tfgan_exp import study
from tfgan_exp.config import Config
search = study.Phase("search: --search=2", "/s", [])
tuned = study.Phase("tuned: --seed=100 --tuned_from=/s/search", "/s", ["search"])
assert tuned.after == "search" and tuned.args[-1] == "--tuned_from=/s/search"
phases = [search, tuned]
assert study._ended(phases, "search", {}) is None  # not expanded yet
search.configs = [Config(run_dir="/s/search/a"), Config(run_dir="/s/search/b")]
assert study._ended(phases, "search", {"/s/search/a": "finished"}) is None
assert study._ended(phases, "search", {"/s/search/a": "finished",
                                       "/s/search/b": "diverged"}) is True
assert study._ended(phases, "search", {"/s/search/a": "finished",
                                       "/s/search/b": "failed"}) is False
# A resumed study reads the folders: a diverged search run has ended, unless the search
# phase retries it (--retry_diverged), when its tuned phase must wait for the retry.
import tempfile
from tfgan_exp.rundir import RunDir
folder = tempfile.mkdtemp()
search.configs = [Config(run_dir=folder + "/trial=0", epochs=1).resolved()]
RunDir(search.configs[0].run_dir).prepare(search.configs[0])
RunDir(search.configs[0].run_dir).record_divergence({"epoch": 1, "step": 3, "values": {}})
assert study._ended(phases, "search", None) is True
search.retry_diverged = True
assert study._ended(phases, "search", None) is None
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
