"""Grids: every combination of any setting, named by what varies, checked before the
first run trains; random search; shards; several runs at once; divergence as a result."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import command_line, run_command, wait_for
from tfgan_exp.grids import grid, launch, search
from tfgan_exp.gan import losses
from tfgan_exp.report import writer
from tfgan_exp.runtime import lease, timeline
from tfgan_exp.config import Config, UsageError
from tfgan_exp.rundir import RunDir, check_writable

TINY = ["--image_size=16", "--width=4", "--latent_dim=8", "--eval_samples=100"]


def test_any_training_setting_is_an_axis_and_folders_name_only_what_varies(tmp_path):
    expanded = grid.expand({"g_loss": ["minimax", "nonsat"], "lr_g": [1e-4, 2e-4],
                            "spectral_norm": [False, True], "seed": [0, 1], "width": [8]},
                           root=str(tmp_path))
    assert len(expanded.configs) == 16
    names = [os.path.basename(c.run_dir) for c in expanded.configs]
    assert names[0] == "g_loss=minimax,lr_g=0.0001,spectral_norm=false,seed=0"
    assert len(set(names)) == 16 and all("width" not in n for n in names)
    assert [c.seed for c in expanded.configs[:8]] == [0] * 8  # seeds vary slowest
    assert {c.spectral_norm for c in expanded.configs} == {False, True}
    single = grid.expand({"g_loss": ["hinge"]})
    assert not single.is_grid and single.configs[0].run_dir == "runs/digits-hinge-seed0"


def test_a_preset_applies_under_the_flags_you_set_and_a_dry_run_says_so(tmp_path):
    result = run_command("run.py", "--g_loss=wgan-gp,hinge", "--preset=wgan_gp_paper",
                         "--lr_g=3e-4", f"--run_dir={tmp_path / 'grid'}", "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"would train {tmp_path / 'grid'}/g_loss=")
    for line in lines:  # Gulrajani et al.'s settings, but the learning rate set here
        for setting in ("d_steps=5", "lr_g=0.0003", "lr_d=0.0001", "beta1=0", "beta2=0.9"):
            assert setting in line, (setting, line)
    assert not os.path.exists(tmp_path / "grid")


def test_settings_that_do_not_change_results_are_not_axes():
    with pytest.raises(UsageError, match="--keep_checkpoints takes one value"):
        grid.expand({"keep_checkpoints": [1, 2]})


def test_search_draws_are_seeded_reproducible_and_extend(tmp_path):
    four = search.draw_settings(4, seed=0)
    assert four == search.draw_settings(4, seed=0) and four != search.draw_settings(4, seed=1)
    assert search.draw_settings(8, seed=0)[:4] == four
    for setting in search.draw_settings(50, seed=0):
        assert 1e-5 <= setting["lr_g"] == setting["lr_d"] <= 1e-3
        assert setting["beta1"] in (0.0, 0.5) and setting["beta2"] in (0.9, 0.999)
        assert setting["d_steps"] in (1, 2, 5)
    expanded = grid.expand({"g_loss": ["minimax", "hinge"]}, root=str(tmp_path), search_count=4)
    assert len(expanded.configs) == 8
    assert os.path.basename(expanded.configs[0].run_dir) == "g_loss=minimax,trial=0,seed=0"
    # Every loss meets the same settings.
    by_trial = {}
    for config in expanded.configs:
        by_trial.setdefault(os.path.basename(config.run_dir).split(",")[1], set()).add(
            (config.lr_g, config.beta1, config.beta2, config.d_steps))
    assert all(len(settings) == 1 for settings in by_trial.values())
    with pytest.raises(UsageError, match="--search draws"):
        grid.expand({"lr_g": [1e-4, 2e-4]}, search_count=2)


def test_shards_are_disjoint_and_cover_the_grid():
    configs = grid.expand({"g_loss": ["minimax", "nonsat", "hinge"], "seed": [0, 1, 2]},
                          root="g").configs
    parts = [grid.shard(configs, k, 4) for k in range(4)]
    dirs = [c.run_dir for part in parts for c in part]
    assert sorted(dirs) == sorted(c.run_dir for c in configs) and len(set(dirs)) == 9


def test_shard_auto_reads_slurm_and_kubernetes_and_bad_shards_are_refused():
    # The task ID itself is the shard; N from auto/N, TFGAN_EXP_SHARDS, else the grid.
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4",
             "SLURM_ARRAY_TASK_COUNT": "3"}
    assert grid.parse_shard("auto", slurm, runs=18) == (5, 18)
    assert grid.parse_shard("auto", dict(slurm, TFGAN_EXP_SHARDS="6"), runs=18) == (5, 6)
    assert grid.parse_shard("auto/6", {"JOB_COMPLETION_INDEX": "4"}) == (4, 6)
    assert grid.parse_shard("auto", {"JOB_COMPLETION_INDEX": "1"}, runs=4) == (1, 4)
    assert grid.parse_shard("2/5", {}) == (2, 5)
    for text, message in (("3/2", "must be 0..N-1"), ("auto", "neither SLURM_ARRAY_TASK_ID"),
                          ("1", "expected K/N"), ("a/2", "not a whole number"),
                          ("0/0", "N at least 1")):
        with pytest.raises(UsageError, match=message):
            grid.parse_shard(text, {})
    with pytest.raises(UsageError, match="TFGAN_EXP_SHARDS='x' is not a whole number"):
        grid.parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "1", "TFGAN_EXP_SHARDS": "x"})


def slurm_array(spec):
    """The environment of each task Slurm starts for ``sbatch --array=SPEC``."""
    ids = []
    for part in spec.split(","):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        ids += list(range(int(first), int(last or first) + 1, int(step or 1)))
    return [{"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(i),
             "SLURM_ARRAY_TASK_MIN": str(min(ids)), "SLURM_ARRAY_TASK_MAX": str(max(ids)),
             "SLURM_ARRAY_TASK_COUNT": str(len(ids)),
             "SLURM_ARRAY_TASK_STEP": spec.rpartition(":")[2] if ":" in spec else "1"}
            for i in ids]


@pytest.mark.parametrize("spec", ["4,11", "0-34:2", "3-5"])
def test_every_job_array_trains_exactly_the_shards_its_task_ids_name(spec):
    # A resubmitted subset, a stepped array, an array that does not start at 0: task i
    # trains shard i of the whole grid's, one run per task (18 runs here).
    configs = grid.expand({"dataset": ["cifar10", "stl10"], "g_loss": ["minimax", "nonsat",
                                                                       "hinge"],
                           "seed": [0, 1, 2]}, root="g").configs
    for environ in slurm_array(spec):
        task = int(environ["SLURM_ARRAY_TASK_ID"])
        index, count = grid.parse_shard("auto", environ, runs=len(configs))
        assert (index, count) == (task, 18)
        assert grid.shard(configs, index, count) == configs[task:task + 1]  # [] past 17


@pytest.mark.parametrize("shards", ["auto/5", "TFGAN_EXP_SHARDS=5"])
def test_a_task_whose_index_is_past_the_shard_count_trains_nothing(shards):
    # 18 runs in 5 shards from an array of 18 tasks: tasks 5..17 would otherwise take
    # runs of shards 0..4 a second time (task 7: runs 7, 12, 17, which are shard 2's).
    configs = grid.expand({"dataset": ["cifar10", "stl10"], "g_loss": ["minimax", "nonsat",
                                                                       "hinge"],
                           "seed": [0, 1, 2]}, root="g").configs
    text, environ = ("auto/5", {}) if shards.startswith("auto") else ("auto", {
        "TFGAN_EXP_SHARDS": "5"})
    trained = []
    for environ_ in slurm_array("0-17"):
        index, count = grid.parse_shard(text, dict(environ_, **environ), runs=len(configs))
        assert count == 5
        part = grid.shard(configs, index, count)
        assert part == ([] if index >= 5 else configs[index::5])
        trained += part
    assert sorted(c.run_dir for c in trained) == sorted(c.run_dir for c in configs)


def test_a_slurm_array_that_leaves_runs_to_no_task_is_warned_of_naming_them():
    # --array=0-17 after the grid grew to 30 runs: one run per task leaves 18..29 out.
    expanded = grid.expand({"g_loss": ["minimax", "nonsat", "hinge"], "seed": list(range(10))},
                           root="g")
    environ = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_MAX": "17"}
    warning = grid.runs_outside_the_array("auto", expanded, environ)
    assert warning.startswith("warning: this Slurm array's task IDs are 0-17")
    assert "trains runs 18-29; not trained yet: g_loss=minimax,seed=6, " \
        "g_loss=nonsat,seed=6, " in warning
    assert "and 7 more" in warning and "--array=0-29" in warning
    assert "TFGAN_EXP_SHARDS" in warning
    # Shards past the array: --array=0-4 for 6 shards leaves shard 5's runs to no task.
    for text, env in (("auto/6", {}), ("auto", {"TFGAN_EXP_SHARDS": "6"})):
        shards = grid.runs_outside_the_array(text, expanded,
                                             dict(environ, SLURM_ARRAY_TASK_MAX="4", **env))
        assert "is split into 6 shards: no task of this array trains shard 5 of 6; not " \
            "trained yet: g_loss=hinge,seed=1, " in shards
        assert "--array=0-5" in shards
    # An array from 1 (--array=1-30): run 0 goes to no task; so do 0-3 of --array=4-29.
    ones = grid.runs_outside_the_array("auto", expanded, dict(
        environ, SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="30"))
    assert "task IDs are 1-30" in ones
    assert "trains run 0; not trained yet: g_loss=minimax,seed=0. Submit" in ones
    both = grid.runs_outside_the_array("auto", expanded, dict(
        environ, SLURM_ARRAY_TASK_MIN="4", SLURM_ARRAY_TASK_MAX="28"))
    assert "trains runs 0-3 and run 29; not trained yet: " in both
    # A resubmitted subset (--array=4,11) whose other runs an earlier array trained.
    subset = dict(environ, SLURM_ARRAY_TASK_MIN="4", SLURM_ARRAY_TASK_MAX="11")
    assert grid.runs_outside_the_array("auto", expanded, subset, trained=lambda c: True) == ""
    # An array that covers the grid, or no Slurm array: nothing to say.
    assert grid.runs_outside_the_array("auto/5", expanded, environ) == ""
    assert grid.runs_outside_the_array("auto", expanded,
                                       dict(environ, TFGAN_EXP_SHARDS="5")) == ""
    assert grid.runs_outside_the_array("auto", expanded,
                                       dict(environ, SLURM_ARRAY_TASK_MAX="29")) == ""
    assert grid.runs_outside_the_array("auto", expanded, {"JOB_COMPLETION_INDEX": "3"}) == ""
    assert grid.runs_outside_the_array("3/30", expanded, environ) == ""


@pytest.mark.slow
def test_a_task_past_the_grid_has_nothing_to_train_and_a_one_run_grid_trains_on_task_0(
        tmp_path):
    args = ["run.py", "--g_loss=minimax,hinge", f"--run_dir={tmp_path / 'grid'}",
            "--shard=auto", "--dry_run"]
    past = run_command(*args, env={"SLURM_ARRAY_TASK_ID": "2"})
    assert past.returncode == 0, past.stderr
    assert "has no runs" in past.stderr and "nothing to train" in past.stderr
    assert past.stdout == ""
    # Past the shard count (auto/N, or TFGAN_EXP_SHARDS) but not past the runs: none.
    for extra, env in ((["--shard=auto/1"], {}), ([], {"TFGAN_EXP_SHARDS": "1"})):
        past_shards = run_command(*args, *extra, env=dict(env, SLURM_ARRAY_TASK_ID="1"))
        assert past_shards.returncode == 0, past_shards.stderr
        assert past_shards.stdout == "" and "has no runs" in past_shards.stderr
    # An array of one task for two runs: the task says which run no task trains.
    short = run_command(*args, env={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MAX": "0"})
    assert short.returncode == 0, short.stderr
    assert "no task of this array trains run 1; not trained yet: g_loss=hinge." in short.stderr
    single = ["run.py", f"--run_dir={tmp_path / 'one'}", "--shard=auto", "--dry_run"]
    first = run_command(*single, env={"JOB_COMPLETION_INDEX": "0"})
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"would train {tmp_path / 'one'}")
    second = run_command(*single, env={"JOB_COMPLETION_INDEX": "1"})
    assert second.returncode == 0 and second.stdout == "" and "has no runs" in second.stderr


def finished_run(config):
    """A run folder that says it trained all of ``config``'s epochs, as training leaves
    it: config.json, a metrics line per epoch, the checkpoint state naming the last."""
    run_dir = RunDir(config.run_dir)
    run_dir.prepare(config)
    for epoch in range(1, config.epochs + 1):
        run_dir.append_metrics({"epoch": epoch, "step": 28 * epoch})
    with open(os.path.join(run_dir.checkpoint_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{28 * config.epochs}"\n')
    return run_dir


def test_a_dry_run_of_a_half_finished_grid_says_what_it_would_do_with_each_run(tmp_path):
    root = str(tmp_path / "grid")
    configs = grid.expand({"g_loss": ["minimax", "nonsat", "hinge"], "epochs": [2]},
                          root=root).configs
    finished_run(configs[0])
    RunDir(configs[1].run_dir).prepare(configs[1])
    RunDir(configs[1].run_dir).record_divergence({"epoch": 1, "step": 3, "values": {}})
    result = run_command("run.py", "--g_loss=minimax,nonsat,hinge", "--epochs=2",
                         f"--run_dir={root}", "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"finished {root}/g_loss=minimax"
    assert lines[1] == f"diverged (skipped) {root}/g_loss=nonsat"
    assert lines[2].startswith(f"would train {root}/g_loss=hinge  (") and len(lines) == 3
    assert result.stderr.splitlines()[-1].startswith(
        "dry run: 1 would train, 1 finished, 1 diverged (skipped), 0 held by another process")


def test_a_dry_run_with_overwrite_says_which_runs_it_would_delete(tmp_path):
    root = str(tmp_path / "grid")
    configs = grid.expand({"g_loss": ["minimax", "nonsat", "hinge"], "epochs": [2],
                           "overwrite": [True]}, root=root).configs
    finished_run(configs[0])
    finished_run(configs[1])
    RunDir(configs[1].run_dir).prepare(configs[1], overwrite=True, invocation="77_4")
    args = ["run.py", "--g_loss=minimax,nonsat,hinge", "--epochs=2", "--overwrite",
            f"--run_dir={root}", "--dry_run"]
    result = run_command(*args, env={"TFGAN_EXP_INVOCATION": "77_4"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"would overwrite {root}/g_loss=minimax  (")
    # Overwritten by this invocation already (a requeue): resumed, not deleted again.
    assert lines[1].startswith(f"would train {root}/g_loss=nonsat  (")
    assert lines[2].startswith(f"would train {root}/g_loss=hinge  (")  # nothing there
    assert result.stderr.splitlines()[-1].startswith(
        "dry run: 3 would train (1 deleting the run there first), 0 finished")


@pytest.mark.slow
def test_a_grid_whose_second_dataset_cannot_be_had_stops_before_its_first_run(tmp_path):
    # Offline, cifar10 is neither prepared nor downloadable; online, the Inception model
    # given is missing all the same. Either stops the grid before the digits run trains.
    root = tmp_path / "grid"
    result = run_command("run.py", "--dataset=digits,cifar10", "--epochs=1",
                         f"--data_dir={tmp_path / 'nodata'}",
                         f"--inception_model={tmp_path / 'no-inception'}",
                         f"--run_dir={root}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "found before the first run of the grid trained" in errors[0]
    assert "no SavedModel there" in result.stderr and "Traceback" not in result.stderr
    assert not root.exists() and "[grid" not in result.stderr


def test_a_folder_root_may_not_write_is_refused_before_anything_starts(monkeypatch):
    # os.access says yes to root for /proc; only creating a file there tells. It says
    # yes here to any user, so that only that probe can refuse.
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    with pytest.raises(UsageError, match="cannot create a file in /proc"):
        check_writable("/proc/tfgan_exp_run")


def test_a_sequential_grid_decides_already_trained_before_loading_anything(tmp_path):
    # A finished cifar10 run whose data is not on this machine: counted, never loaded.
    config = Config(dataset="cifar10", epochs=1, data_dir=str(tmp_path / "nodata"),
                    run_dir=str(tmp_path / "grid" / "dataset=cifar10")).resolved()
    finished_run(config)
    tally = launch.run_sequentially([config], str(tmp_path / "grid"))
    assert (tally.finished, tally.failed, tally.exit_status) == (1, 0, 0)


def test_every_clash_is_found_before_anything_trains(tmp_path):
    root = str(tmp_path / "grid")
    # An earlier run with --width=8 in the folder the nonsat run of this grid would use.
    earlier = Config(g_loss="nonsat", width=8, run_dir=os.path.join(root, "g_loss=nonsat"))
    RunDir(earlier.run_dir).prepare(earlier.resolved())
    expanded = grid.expand({"g_loss": ["minimax", "nonsat"]}, root=root)
    with pytest.raises(UsageError, match=r"(?s)1 run folder.*g_loss=nonsat holds a run with "
                                         r"other settings \(width: 8 there, 16 now\)"):
        grid.check(expanded)
    assert sorted(os.listdir(root)) == ["g_loss=nonsat"]  # minimax was not trained
    result = run_command("run.py", "--g_loss=minimax,nonsat", f"--run_dir={root}")
    assert result.returncode == 2 and "nothing was trained" in result.stderr
    # One error line, its details indented under it (what a script greps for).
    error = result.stderr[result.stderr.index("error: "):].splitlines()
    assert len(error) >= 2 and all(line.startswith("  ") for line in error[1:]), error
    assert sorted(os.listdir(root)) == ["g_loss=nonsat"]


# A grid whose runs train in no time (trainer.run stands in), and a SIGTERM that comes
# once the last run has ended, while the grid says how its runs ended.
SIGNAL_AFTER_THE_LAST_RUN = """
import os, signal, sys, types
import tfgan_exp.training
from tfgan_exp import cli
from tfgan_exp.grids import launch
trainer = types.ModuleType("tfgan_exp.training.trainer")
trainer.run = lambda config: None
sys.modules["tfgan_exp.training.trainer"] = tfgan_exp.training.trainer = trainer
summary = launch.Tally.summary
def summary_after_a_signal(tally):
    os.kill(os.getpid(), signal.SIGTERM)
    return summary(tally)
launch.Tally.summary = summary_after_a_signal
sys.argv = ["run.py", "--g_loss=minimax,hinge", "--eval_every=0", "--run_dir=grid"]
cli.run()
"""


def test_a_signal_after_a_grids_last_run_does_not_turn_it_into_a_stopped_grid(tmp_path):
    result = run_command("-c", SIGNAL_AFTER_THE_LAST_RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grid: 2 runs: 2 finished, 0 diverged, 0 failed" in result.stderr


@pytest.mark.slow
def test_a_diverged_run_is_recorded_and_the_grid_goes_on(tmp_path, cache_dir, monkeypatch,
                                                          capsys):
    root = str(tmp_path / "grid")
    expanded = grid.expand({"g_loss": ["minimax", "hinge"], "epochs": [2], "image_size": [16],
                            "width": [4], "latent_dim": [8], "eval_every": [0],
                            "strategy": ["default"], "cache_dir": [cache_dir]}, root=root)
    # The fault is injected into the minimax loss, not into the code under test: its
    # loss is NaN from the first step.
    real_minimax = losses.G_LOSSES["minimax"]
    monkeypatch.setitem(losses.G_LOSSES, "minimax", lambda f: real_minimax(f) * float("nan"))
    tally = launch.run_sequentially(expanded.configs, root)
    assert (tally.finished, tally.diverged, tally.failed, tally.exit_status) == (1, 1, 0, 0)
    assert "grid: 2 runs: 1 finished, 1 diverged, 0 failed" == tally.summary()
    record = RunDir(os.path.join(root, "g_loss=minimax")).divergence()
    assert record["epoch"] == 1 and record["step"] == 1 and record["values"]["g_loss"] == "nan"
    assert not os.path.exists(os.path.join(root, "g_loss=hinge", "diverged.json"))
    # Again: the diverged run is not retrained (the fault is gone, yet it is skipped).
    monkeypatch.setitem(losses.G_LOSSES, "minimax", real_minimax)
    notes = grid.check(expanded)
    assert notes == [f"{root}/g_loss=minimax diverged before; it is skipped "
                     "(--retry_diverged trains it again)"]
    capsys.readouterr()
    again = launch.run_sequentially(expanded.configs, root)
    assert (again.finished, again.diverged) == (1, 1)
    assert "diverged before, in epoch 1, step 1" in capsys.readouterr().err
    # A retry trains it, from its last good checkpoint (none: from the start), and clears
    # the record.
    retried = [Config(**dict(vars(c), retry_diverged=True)) for c in expanded.configs]
    assert launch.run_sequentially(retried, root).finished == 2
    assert RunDir(os.path.join(root, "g_loss=minimax")).divergence() is None
    text = open(writer.write_report(root)).read()
    assert "| minimax / bce | 1 | 0 |" in text


@pytest.mark.slow
def test_two_shards_train_each_run_once_and_the_report_covers_all(tmp_path, cache_dir):
    root = tmp_path / "grid"
    args = ["run.py", "--g_loss=minimax,hinge", "--seeds=2", "--epochs=1", *TINY,
            f"--cache_dir={cache_dir}", f"--run_dir={root}"]
    shards = [subprocess.Popen(command_line(*args, f"--shard={k}/2"), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for k in range(2)]
    outputs = [p.communicate(timeout=600) for p in shards]
    for process, (_, err) in zip(shards, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "shard" in err and "2 of the grid's 4 runs" in err
    trained = [name for _, err in outputs for name in re.findall(r"-> \S+/(\S+)\n", err)]
    folders = [name for name in os.listdir(root) if os.path.isdir(root / name)]
    assert sorted(trained) == sorted(folders) and len(set(trained)) == 4
    # Each shard wrote its own timeline, neither over the other's.
    assert sorted(set(os.listdir(root)) - set(folders)) == [
        "timeline-shard0of2.json", "timeline-shard1of2.json"]
    for name in trained:  # each trained exactly once: one epoch, one line
        assert len(RunDir(str(root / name)).read_metrics()) == 1
    text = open(writer.write_report(str(root))).read()
    assert "| minimax / bce | 2 |" in text and "| hinge / hinge | 2 |" in text
    again = run_command(*args, "--shard=1/2")  # a shard run again skips its finished runs
    assert again.returncode == 0 and again.stderr.count("already trained") == 2


def cores_of(pid):
    """The CPU cores any thread of process ``pid`` may run on."""
    cores = set()
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            cores |= os.sched_getaffinity(int(thread))
        except ProcessLookupError:  # the thread has ended meanwhile
            pass
    return cores


@pytest.mark.slow
def test_parallel_runs_at_once_and_sigterm_leaves_every_run_resumable(tmp_path, cache_dir):
    root = tmp_path / "grid"
    args = ["run.py", "--g_loss=minimax,hinge", "--epochs=2", "--parallel=2",
            "--checkpoint_every_steps=5", *TINY, f"--cache_dir={cache_dir}",
            f"--run_dir={root}"]
    process = subprocess.Popen(command_line(*args), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    pids, deadline = {}, time.time() + 300
    for line in process.stdout:
        found = re.match(r"\[parallel\] started (\S+) \(pid (\d+)", line)
        if found:
            pids[found.group(1)] = int(found.group(2))
        if len(pids) == 2:
            break
        assert time.time() < deadline
    # Each process's cores, read once its run has trained a step (a child pins itself as
    # it starts), while it has most of its run ahead of it. Polled, not checked per
    # output line: lines come once an epoch.
    masks = {}

    def every_mask_read():
        for name, pid in pids.items():
            if name not in masks and (root / name / "checkpoints" / "checkpoint").exists():
                masks[name] = cores_of(pid)
        return len(masks) == len(pids)
    wait_for(every_mask_read, "each run's checkpoint", deadline - time.time(), 0.02,
             process=process)
    if len(os.sched_getaffinity(0)) >= 2:  # each pinned, every thread, to its own cores
        first, second = masks.values()
        assert first and second and not first & second
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, rest
    assert "stopped by SIGTERM" in rest and "run it again to resume" in rest
    # A run may still end just before the signal reaches it; every run stopped resumes.
    stopped = re.findall(r"\[parallel\] (\S+) stopped \(exit status", rest)
    assert stopped and set(stopped) <= set(pids), rest
    # Two processes at once: each slot's row of the timeline (its start-up, its run)
    # overlaps the other's. (Their runs need not: one may train whole while the other
    # still starts.)
    with open(root / "timeline.json") as handle:
        events = [e for e in json.load(handle)["traceEvents"] if "dur" in e]
    rows = {}
    for event in events:
        if event.get("cat") in (timeline.STARTUP, timeline.RUN):
            begin, end = rows.get(event["tid"], (event["ts"], event["ts"]))
            rows[event["tid"]] = (min(begin, event["ts"]), max(end, event["ts"] + event["dur"]))
    assert len(rows) == 2 and max(b for b, _ in rows.values()) < min(e for _, e in rows.values())
    resumed = run_command(*args, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    for name in pids:
        if name in stopped:
            assert f"[{name}] resuming" in resumed.stdout
        assert [r["epoch"] for r in RunDir(str(root / name)).read_metrics()] == [1, 2]
    assert "grid: 2 runs: 2 finished, 0 diverged, 0 failed" in resumed.stderr
    again = run_command(*args)  # all trained: no process is started for them
    assert again.returncode == 0 and "started" not in again.stdout
    assert again.stdout.count("already trained for 2 epochs") == 2


def test_values_that_resolve_to_one_run_make_it_once():
    twice = grid.expand({"g_loss": ["nonsat", "nonsat"]})
    assert len(twice.configs) == 1 and not twice.is_grid
    assert twice.notes and "resolve to a run listed before" in twice.notes[0]
    spelled = grid.expand({"g_loss": ["minimax", "hinge"], "lr_g": [2e-4, 0.0002]}, root="g")
    assert [os.path.basename(c.run_dir) for c in spelled.configs] == [
        "g_loss=minimax", "g_loss=hinge"]
    # Two runs whose values differ only past six digits: two folders, named apart.
    close = grid.expand({"lr_g": [2e-4, 2.0000001e-4]}, root="g")
    assert [os.path.basename(c.run_dir) for c in close.configs] == [
        "lr_g=0.0002", "lr_g=0.00020000001"]
    default = grid.expand({"width": [0, 16]})  # 0 is digits' default width, 16
    assert len(default.configs) == 1 and default.configs[0].width == 16
    # Across datasets 0 means each one's default: two runs on digits, one on cifar10.
    mixed = grid.expand({"dataset": ["digits", "cifar10"], "width": [0, 64]}, root="g")
    assert sorted(os.path.basename(c.run_dir) for c in mixed.configs) == [
        "dataset=cifar10,width=0", "dataset=digits,width=0", "dataset=digits,width=64"]
    assert sorted(c.width for c in mixed.configs) == [16, 64, 64]


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_run_another_grid_began_since_this_one_started_is_left_to_it(tmp_path, parallel):
    """Grid A adopted its folders at its start; grid B, widened, has since begun A's
    second run under its own name. When A reaches that run, it leaves it to B."""
    root = tmp_path / "grid"
    a = grid.expand({"g_loss": ["nonsat"], "seed": [0, 1], "epochs": [1]}, root=str(root))
    b = grid.expand({"g_loss": ["nonsat", "hinge"], "seed": [1], "epochs": [1]},
                    root=str(root))
    second = a.configs[1]
    twin = next(c for c in b.configs if c.g_loss == "nonsat")
    assert grid.twin_elsewhere(second) is None
    RunDir(twin.run_dir).prepare(twin)  # B's run, begun in its own folder
    assert grid.twin_elsewhere(second) == twin.run_dir
    assert grid.twin_elsewhere(twin) is None  # its own folder holds it
    if parallel == 1:
        tally = launch.run_sequentially([second], str(root))
    else:
        tally = launch.run_in_parallel([second], str(root), parallel)
    assert tally.held_runs == [os.path.basename(second.run_dir)] and tally.finished == 0
    assert tally.exit_status != 0  # a scheduler sees the grid did not finish its runs
    assert not os.path.exists(os.path.join(second.run_dir, "config.json"))


def test_widening_a_grid_continues_its_runs_in_their_folders(tmp_path):
    root = str(tmp_path / "grid")
    first = grid.expand({"g_loss": ["minimax", "hinge"]}, root=root)
    for config in first.configs:
        RunDir(config.run_dir).prepare(config)
    wider = grid.expand({"g_loss": ["minimax", "hinge"], "spectral_norm": [False, True]},
                        root=root)
    notes = grid.adopt_existing(wider)
    dirs = sorted(os.path.relpath(c.run_dir, root) for c in wider.configs)
    assert dirs == ["g_loss=hinge", "g_loss=hinge,spectral_norm=true", "g_loss=minimax",
                    "g_loss=minimax,spectral_norm=true"]
    assert len(notes) == 2 and "same settings and seed" in notes[0]
    assert grid.check(wider) == []  # the adopted folders hold exactly these settings
    # A run still starting elsewhere has no config.json yet, only its lease, whose
    # record names the run: a widened grid meets it there (held), not by another name.
    late_root = str(tmp_path / "late")
    starting = grid.expand({"g_loss": ["minimax", "hinge"]}, root=late_root).configs[0]
    held = lease.Lease(starting.run_dir, run=dataclasses.asdict(starting)).acquire()
    try:
        late = grid.expand({"g_loss": ["minimax", "hinge"], "lr_g": [2e-4, 1e-4]},
                           root=late_root)
        assert len(grid.adopt_existing(late)) == 1
        same = next(c for c in late.configs if (c.g_loss, c.lr_g) == ("minimax", 2e-4))
        assert same.run_dir == starting.run_dir
        assert launch.plan(same)[0] == "held"
    finally:
        held.release()


def test_tuned_from_reruns_each_losss_best_setting_with_fresh_seeds(tmp_path):
    from test_report import write_search
    search_dir = tmp_path / "search"
    drawn = write_search(search_dir, ["nonsat", "hinge"], 3,
                         lambda c, trial: {0: 5.0, 1: 7.0, 2: 6.0}[trial]
                         + (2.0 if (c.g_loss, trial) == ("hinge", 2) else 0))
    trials = drawn.search["trials"]
    args = ["run.py", "--g_loss=nonsat,hinge", "--epochs=2", f"--tuned_from={search_dir}",
            f"--run_dir={tmp_path / 'tuned'}"]
    result = run_command(*args, "--seed=100,101", "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:  # nonsat's best is trial 1, hinge's trial 2
        trial = trials[2] if "g_loss=hinge" in line else trials[1]
        assert f"lr_g={grid.format_value(trial['lr_g'])}" in line, line
        assert f"d_steps={trial['d_steps']}" in line or trial["d_steps"] == 1, line
    reused = run_command(*args, "--seed=0,100", "--dry_run")
    assert reused.returncode == 2 and "seed(s) 0 trained the search's settings" in reused.stderr
    both = run_command(*args, "--seed=100", "--lr_g=1e-4", "--dry_run")
    assert both.returncode == 2 and "do not also give --lr_g" in both.stderr


def test_a_widened_grid_with_more_epochs_continues_a_run_only_where_it_is_unambiguous(
        tmp_path):
    root = str(tmp_path / "grid")
    first = grid.expand({"g_loss": ["minimax", "hinge"], "epochs": [10]}, root=root)
    for config in first.configs:
        RunDir(config.run_dir).prepare(config)
    longer = grid.expand({"g_loss": ["minimax", "hinge"], "spectral_norm": [False, True],
                          "epochs": [30]}, root=root)
    grid.adopt_existing(longer)
    assert sorted(os.path.relpath(c.run_dir, root) for c in longer.configs
                  if not c.spectral_norm) == ["g_loss=hinge", "g_loss=minimax"]
    # Two runs of this grid (10 and 30 epochs) could continue the 10-epoch folder:
    # only the exact one does, the other gets a folder of its own.
    both = grid.expand({"g_loss": ["minimax", "hinge"], "epochs": [10, 30]}, root=root)
    grid.adopt_existing(both)
    dirs = {(c.g_loss, c.epochs): os.path.relpath(c.run_dir, root) for c in both.configs}
    assert dirs[("minimax", 10)] == "g_loss=minimax"
    assert dirs[("minimax", 30)] == "g_loss=minimax,epochs=30"


def test_search_folders_are_named_by_what_the_command_varies_and_the_trial(tmp_path):
    result = run_command("run.py", "--g_loss=minimax,hinge", "--search=2", "--dry_run",
                         f"--run_dir={tmp_path / 'search'}")
    assert result.returncode == 0, result.stderr
    names = sorted(line.split()[2].split("/")[-1] for line in result.stdout.splitlines()
                   if line.startswith("would train"))
    assert names == ["g_loss=hinge,trial=0,seed=0", "g_loss=hinge,trial=1,seed=0",
                     "g_loss=minimax,trial=0,seed=0", "g_loss=minimax,trial=1,seed=0"]


@pytest.mark.slow
def test_a_crashing_run_is_recorded_and_a_sequential_grid_goes_on(tmp_path, cache_dir,
                                                                   capsys):
    root = str(tmp_path / "grid")
    configs = grid.expand({"g_loss": ["minimax", "hinge"], "epochs": [2], "image_size": [16],
                           "width": [4], "latent_dim": [8], "eval_every": [0],
                           "strategy": ["default"], "cache_dir": [cache_dir]},
                          root=root).configs
    first = Config(**dict(vars(configs[0]), epochs=1))
    launch.run_sequentially([first], root)
    # A real fault in the run's input: its only checkpoint's index is garbage.
    index = os.path.join(configs[0].run_dir, "checkpoints", "ckpt-28.index")
    with open(index, "wb") as f:
        f.write(b"not a checkpoint index")
    capsys.readouterr()
    tally = launch.run_sequentially(configs, root)
    assert (tally.finished, tally.failed, tally.exit_status) == (1, 1, 1)
    assert tally.summary() == "grid: 2 runs: 1 finished, 0 diverged, 1 failed (g_loss=minimax)"
    assert f"failed: {configs[0].run_dir}: UsageError: no checkpoint" in capsys.readouterr().err
    failure = RunDir(configs[0].run_dir).failure()
    assert failure["error_type"] == "UsageError" and "can be restored" in failure["message"]
    assert failure["host"] and failure["when"] and failure["traceback"]
    assert [r["epoch"] for r in RunDir(configs[1].run_dir).read_metrics()] == [1, 2]
    # Trained again successfully (afresh), the run's failure record goes.
    retried = Config(**dict(vars(configs[0]), overwrite=True))
    assert launch.run_sequentially([retried], root).finished == 1
    assert RunDir(configs[0].run_dir).failure() is None


@pytest.mark.slow
def test_a_child_killed_from_outside_fails_the_parallel_grid_and_the_others_train(
        tmp_path, cache_dir):
    root = tmp_path / "grid"
    # Three runs on two slots: the killed slot is replaced for the run still waiting.
    args = ["run.py", "--g_loss=minimax,hinge,nonsat", "--epochs=2", "--parallel=2",
            "--eval_every=0",
            "--checkpoint_every_steps=5", *TINY, f"--cache_dir={cache_dir}",
            f"--run_dir={root}"]
    process = subprocess.Popen(command_line(*args), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.time() + 300
    for line in process.stdout:
        found = re.match(r"\[parallel\] started g_loss=minimax \(pid (\d+)", line)
        if found:
            victim = int(found.group(1))
            break
    assert victim, process.communicate()
    wait_for((root / "g_loss=minimax" / "checkpoints" / "checkpoint").exists,
             "g_loss=minimax's checkpoint", deadline - time.time(), 0.02, process=process)
    os.kill(victim, signal.SIGKILL)  # as the out-of-memory killer would
    out, err = process.communicate(timeout=600)
    assert process.returncode == 1, err[-3000:]
    assert "g_loss=minimax failed: killed by SIGKILL (out of memory?)" in out
    assert err.splitlines()[-1] == ("grid: 3 runs: 2 finished, 0 diverged, 1 failed "
                                    "(g_loss=minimax)")
    failure = RunDir(str(root / "g_loss=minimax")).failure()
    assert failure["why"] == "killed by SIGKILL (out of memory?)" and failure["exit_status"] == -9
    for name in ("g_loss=hinge", "g_loss=nonsat"):
        assert [r["epoch"] for r in RunDir(str(root / name)).read_metrics()] == [1, 2]


def test_a_signal_that_comes_while_a_child_starts_reaches_it(tmp_path, cache_dir,
                                                             monkeypatch):
    # The signal is timed by the process start itself (not by the launcher under test):
    # it arrives after the launcher decided to start the child, before Popen returns.
    real_popen = subprocess.Popen

    def popen_with_a_signal(command, *args, **kwargs):
        if "tfgan_exp.cli" in command:  # a run's process, not some other tool
            os.kill(os.getpid(), signal.SIGTERM)
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(launch.subprocess, "Popen", popen_with_a_signal)
    root = str(tmp_path / "grid")
    config = Config(g_loss="hinge", epochs=1, image_size=16, width=4, latent_dim=8,
                    eval_every=0, cache_dir=cache_dir,
                    run_dir=os.path.join(root, "g_loss=hinge")).resolved()
    tally = launch.run_in_parallel([config], root, parallel=2)
    assert tally.signal == signal.SIGTERM and tally.exit_status == 128 + signal.SIGTERM
    assert (tally.finished, tally.failed) == (0, 0)  # stopped, not trained, not failed
    assert RunDir(config.run_dir).read_metrics() == []


def fake_nvidia_smi(folder, listing, indices):
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/bash\nif [ \"$1\" = -L ]; then printf '{listing}'; "
                    f"else printf '{indices}'; fi\n")
    tool.chmod(0o755)


def test_gpus_for_parallel_runs_are_nvidia_smis_indices_and_need_no_nvidia_smi(tmp_path):
    mig = ("GPU 0: NVIDIA A100 (UUID: GPU-a)\\n  MIG 3g.20gb Device 0: (UUID: MIG-b)\\n"
           "GPU 1: NVIDIA A100 (UUID: GPU-c)\\n")
    fake_nvidia_smi(tmp_path, mig, "0\\n1\\n")
    environ = {"PATH": str(tmp_path)}
    assert launch.visible_gpus(environ, proc_dir=str(tmp_path / "none")) == ["0", "1"]
    # No nvidia-smi at all: the driver's list of GPUs, not "every child every GPU".
    proc = tmp_path / "proc"
    for bus in ("0000:17:00.0", "0000:65:00.0"):
        (proc / bus).mkdir(parents=True)
    empty = tmp_path / "bin"
    empty.mkdir()
    assert launch.visible_gpus({"PATH": str(empty)}, proc_dir=str(proc)) == ["0", "1"]
    placed = launch.slot_environment(1, 2, [0, 1], ["0", "1"])["environ"]
    assert placed["CUDA_VISIBLE_DEVICES"] == "1" and placed["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
