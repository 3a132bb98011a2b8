"""Where the time goes: the profiler trace's kernels, summed and tabled."""
import tensorflow as tf

from tfgan_exp.bench import profiling
from tfgan_exp.bench.profiling import KernelTime


def test_every_kernel_of_every_traced_call_is_counted(tmp_path):
    @tf.function
    def work(a, s):  # one costly kernel beside small ones, as in a training step
        return tf.reduce_sum(tf.matmul(a, a)) + tf.math.cumsum(tf.sin(s))

    a, s = tf.random.uniform([256, 256]), tf.random.uniform([4])
    for _ in range(5):  # warm-up: tracing, as the benchmark does before its trace
        work(a, s).numpy()
    path = profiling.trace(lambda: work(a, s).numpy(), 7, str(tmp_path))
    kernels = profiling.kernels_by_type(path)
    for op_type in ("Sin", "Cumsum", "Sum", "AddV2"):
        assert kernels[op_type].count == 7, op_type
    assert sum(k.count for t, k in kernels.items() if "MatMul" in t) == 7
    assert all(k.ms > 0 for k in kernels.values())
    assert not any("::" in op_type for op_type in kernels)  # executor events left out


def test_table_reports_per_step_time_shares_and_kernel_counts():
    profiles = {
        "ours": {"Conv2D": KernelTime(80.0, 20), "Mul": KernelTime(12.0, 40),
                 "L2Loss": KernelTime(8.0, 60)},
        "plain": {"Conv2D": KernelTime(80.0, 20), "Mul": KernelTime(20.0, 40)},
    }
    table = profiling.format_table(profiles, steps=10, top=2).splitlines()
    rows = {line[:40].strip(): line[40:].split() for line in table[2:]}
    assert rows["Conv2D"] == ["8.00", "80.0%", "8.00", "80.0%"]
    assert rows["Mul"] == ["1.20", "12.0%", "2.00", "20.0%"]
    assert rows["other (1 op types)"] == ["0.80", "8.0%", "0.00", "0.0%"]
    assert rows["total kernel time"] == ["10.00", "100.0%", "10.00", "100.0%"]
    assert rows["kernels per step"] == ["12.0", "6.0"]


def test_flops_are_counted_on_the_graph():
    matmul = tf.function(lambda a, b: tf.matmul(a, b)).get_concrete_function(
        tf.TensorSpec([4, 5]), tf.TensorSpec([5, 6]))
    assert profiling.graph_flops(matmul) == 2 * 4 * 5 * 6  # a multiply and an add each
