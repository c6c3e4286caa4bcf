"""bench.py counts FLOPs right and runs end to end; reduced precisions train with float32 variables."""
import json

import numpy as np
import pytest
import tensorflow as tf

import bench
import model
import tflib
import train
from model import SRGAN
from conftest import run_script

tf1 = tf.compat.v1


def test_conv_and_matmul_flops_equal_the_hand_count():
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [1, 32, 32, 64])
        kernel = tf1.get_variable("k", [3, 3, 64, 128])
        y = tf.nn.conv2d(x, kernel, 2, "SAME")  # 16 x 16 x 128 outputs, 3 * 3 * 64 multiply-adds each
        forward = 2 * 16 * 16 * 128 * 3 * 3 * 64
        assert bench.graph_flops(y) == forward
        grad_x, grad_k = tf.gradients(tf.reduce_sum(tf.square(y)), [x, kernel])
        assert bench.graph_flops(grad_x) == 2 * forward  # the forward conv and its input gradient
        assert bench.graph_flops([grad_x, grad_k]) == 3 * forward
        a, b = tf1.placeholder(tf.float32, [5, 7]), tf1.placeholder(tf.float32, [11, 7])
        assert bench.graph_flops(tf.matmul(a, b, transpose_b=True)) == 2 * 5 * 7 * 11


def test_a_convolution_on_blocks_counts_the_flops_of_the_direct_one():
    """Not those of the blocked kernel's zero taps: k9n3 on 2x2 blocks multiplies 1.23x as many."""
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [1, 32, 32, 64])
        y = model.conv2d(x, 3, 9, name="conv_out", blocks=2)
        forward = 2 * 32 * 32 * 3 * 9 * 9 * 64
        assert bench.graph_flops(y) == forward
        grad_x, grad_k = tf.gradients(tf.reduce_sum(tf.square(y)), [x, tf1.trainable_variables("conv_out/kernel")[0]])
        assert bench.graph_flops([grad_x, grad_k]) == 3 * forward


def test_bench_runs_end_to_end_on_a_tiny_configuration(tmp_path, vgg_weights):
    out = tmp_path / "bench.json"
    result = run_script("bench.py", "--blocks", "1", "--hr-size", "32", "--warmup", "1", "--repeats", "1", "--infer-sizes", "8",
                        "--matmul-size", "256", "--pipeline-images", "5", "--validation", "skimage2", "--json", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["steps"]) == {"pretrain", "d_step", "g_step", "gan_iteration", "infer_8_to_32"}
    steps = report["steps"]
    assert all(s["ms"] > 0 and s["gflop"] > 0 for s in steps.values())
    assert steps["gan_iteration"]["gflop"] == pytest.approx(steps["d_step"]["gflop"] + steps["g_step"]["gflop"])
    assert steps["g_step"]["gflop"] > steps["pretrain"]["gflop"]  # the VGG and D passes on top of G's
    assert report["matmul_gflops"]["fp32"] > 0 and report["pipeline"]["images_per_s"] > 0
    assert report["matmul_rounds"] == len(steps) + 1  # one before each timed step, one after them all
    peak = report["matmul_gflops"]["fp32"]
    assert all(s["fraction_of_peak"] == pytest.approx(s["gflops"] / peak) for s in steps.values())
    assert "gan_iteration" in result.stdout and "of peak" in result.stdout
    assert report["validation"]["seconds"] > 0 and report["validation"]["copies"] == (2 if tflib.onednn_enabled() else 1)
    assert "validation of skimage2 (2 photos" in result.stdout


def test_the_matmul_peak_is_the_best_of_every_round():
    """Not the last round's, nor one round's median: a round slowed by other work does not lower it."""
    runs = {"fp32": iter([300, 500, 400, 100, 120, 90, 480, 490, 510]), "bf16": iter([800, 850, 700] * 3)}
    peak = bench.MatmulPeak({p: lambda p=p: next(runs[p]) for p in runs}, runs=3)
    peak.measure()
    assert peak.best == {"fp32": 500, "bf16": 850}
    peak.measure()  # a slow round
    assert peak.best == {"fp32": 500, "bf16": 850}
    peak.measure()
    assert peak.best == {"fp32": 510, "bf16": 850} and peak.rounds == 3


def partition_graph_types(sess, fetch):
    """The dtypes the graph ops really ran with after TensorFlow's rewrites."""
    metadata = tf1.RunMetadata()
    sess.run(fetch, options=tf1.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    return {(node.op, attr.type) for graph in metadata.partition_graphs for node in graph.node
            for key, attr in node.attr.items() if key == "T"}


@pytest.mark.parametrize("precision", ["bf16", "mixed_float16"])
def test_reduced_precision_trains_with_float32_variables(precision):
    cfg = dict(train.DEFAULTS, blocks=1, hr_size=32, content_loss="mse", precision=precision, gan_update="fused")
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as graph:
        lr = tf.constant(rng.uniform(-1, 1, (1, 8, 8, 3)), tf.float32)
        hr = tf.constant(rng.uniform(-1, 1, (1, 32, 32, 3)), tf.float32)
        model = SRGAN(lr, hr, train.model_config(cfg))
        init = tf1.global_variables_initializer()
        graph.finalize()
    with tf1.Session(graph=graph, config=tflib.session_config(precision)) as sess:
        sess.run(init)
        for op in (model.pretrain_op, model.d_train_op, model.g_train_op, model.gan_train_op):
            sess.run(op)
        types = partition_graph_types(sess, model.gan_train_op)
        weights = sess.run(tf1.global_variables())
    assert all(v.dtype.base_dtype in (tf.float32, tf.int32, tf.int64) for v in graph.get_collection("variables"))
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert all(t.dtype == tf.float32 for t in (model.d_loss, model.g_loss, model.mse_loss))
    if precision == "bf16":
        if not tflib.bf16_cpu():
            pytest.skip("this CPU has no AVX512_BF16 or AMX: TensorFlow keeps the graph in float32")
        assert any(op.endswith("Conv2D") and t == tf.bfloat16.as_datatype_enum for op, t in types), sorted(types)[:20]
        # D's dense layers stream their kernel: they stay in float32.
        matmuls = {t for op, t in types if op.endswith("MatMul")}
        assert matmuls == {tf.float32.as_datatype_enum}, sorted(types)
