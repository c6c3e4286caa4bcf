"""Time SRGAN's training and inference steps on this machine and compare them with its matmul peak.

    python bench.py                                   # the report's setting: B=16, LR 64 -> HR 256, batch 1
    python bench.py --precision bf16 --json bench-bf16.json
    python bench.py --steps pretrain --infer-sizes --validation skimage8   # and one validation, as train.py's

Builds the training graph exactly as train.py does (same flags), feeds it one fixed batch from an
in-graph dataset so that only the computation is timed, and reports the median of several repeats
of each step, its FLOPs (convolutions and matmuls counted from the graph, forward and backward),
the GFLOP/s reached and the fraction of the large-matmul rate measured in the same process (the
best of rounds measured before, between and after the steps).
The input pipeline is timed on its own, on 256x256 JPEGs like Places-205's, and --validation times
train.py's validation of a --val-set (the generator on random weights: the same arithmetic).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import data
import tflib
import train
import utils
import validation
import vgg16
from model import ON_BLOCKS_SCOPE, SCALE, SRGAN
from tflib import tf, tf1
FLOP_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul")


# ----------------------------------------------------------------------------- counting

def op_flops(op):
    """Multiply-adds x 2 of one conv or matmul op, from its static shapes; 0 for every other op. The
    convs of model.conv2d_on_blocks count the convolution they compute, not their kernel's zero taps."""
    if op.type == "MatMul":
        a, b = (t.shape.as_list() for t in op.inputs)
        m, k = a[::-1] if op.get_attr("transpose_a") else a
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return 2 * m * k * n
    if op.type == "Conv2D":
        output, (kh, kw, cin, _) = op.outputs[0].shape, op.inputs[1].shape
    elif op.type in ("Conv2DBackpropInput", "Conv2DBackpropFilter"):
        # Both compute as many multiply-adds as the forward conv whose output gradient they take.
        output = op.inputs[2].shape
        kernel = op.inputs[1] if op.type == "Conv2DBackpropInput" else op.outputs[0]
        kh, kw, cin, _ = kernel.shape
    else:
        return 0
    taps = layer_taps(op) if f"/{ON_BLOCKS_SCOPE}/" in op.name else kh * kw * cin
    return 2 * output.num_elements() * taps  # on blocks as many outputs as the direct convolution's


def layer_taps(op):
    """kh * kw * cin of the kernel variable of the conv2d layer that `op` (forward or gradient) computes on
    blocks: "optimizers/g_step/gradients/generator/conv_out/on_blocks/..." -> "generator/conv_out/kernel"."""
    scope = op.name.split(f"/{ON_BLOCKS_SCOPE}/")[0].split("/")
    for start in range(len(scope)):
        try:
            kernel = op.graph.get_operation_by_name("/".join(scope[start:] + ["kernel"]))
        except KeyError:
            continue
        kh, kw, cin, _ = (d.size for d in kernel.get_attr("shape").dim)
        return kh * kw * cin
    raise ValueError(f"no kernel variable for {op.name}")


def graph_flops(fetches):
    """Conv and matmul FLOPs of everything one sess.run(fetches) executes (data and control inputs)."""
    seen, stack = set(), [f.op if isinstance(f, tf.Tensor) else f for f in tf.nest.flatten(fetches)]
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return sum(op_flops(op) for op in seen)


# ----------------------------------------------------------------------------- timing

def median_seconds(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_timer(precision, size):
    """A function that runs one size x size matmul in `precision` (fp32 or bf16) and returns its GFLOP/s."""
    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    with tf.Graph().as_default() as graph:
        a = tf1.get_variable("a", [size, size], dtype, tf1.random_normal_initializer())
        b = tf1.get_variable("b", [size, size], dtype, tf1.random_normal_initializer())
        product = tf.reduce_sum(tf.matmul(a, b)[0, 0])  # fetch one number, not size^2 of them
        init = tf1.global_variables_initializer()
        graph.finalize()
    sess = tf1.Session(graph=graph, config=tflib.session_config("fp32"))
    sess.run(init)
    sess.run(product)  # the first run allocates and picks its kernels

    def rate():
        start = time.perf_counter()
        sess.run(product)
        return 2 * size ** 3 / (time.perf_counter() - start) / 1e9
    return rate


class MatmulPeak:
    """The machine's practical peak per precision: the best GFLOP/s of a large matmul over all the rounds
    measured. bench.py measures a round before, between and after the timed steps, so that a round that
    came out low on a busy machine does not stand for the peak."""

    def __init__(self, timers, runs=3):
        self.timers, self.runs = timers, runs  # {precision: matmul_timer(...)}; runs per round
        self.best = dict.fromkeys(timers, 0.0)
        self.rounds = 0

    def measure(self):
        for precision, rate in self.timers.items():
            self.best[precision] = max(self.best[precision], *(rate() for _ in range(self.runs)))
        self.rounds += 1


def pipeline_rate(hr_size, count, batches):
    """Images per second that data.make_dataset delivers from `count` hr_size JPEGs (Places-205's size),
    each decoded at every draw as from a dataset larger than the image cache."""
    import imageio.v3 as iio

    sample = data.list_images("sample")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(count):
            image = data.load_image(sample[i % len(sample)])
            y, x = (rng.integers(0, s - hr_size + 1) for s in image.shape[:2])
            paths.append(os.path.join(folder, f"{i}.jpg"))
            iio.imwrite(paths[-1], image[y:y + hr_size, x:x + hr_size], quality=90)
        with tf.Graph().as_default() as graph:
            batch = tf1.data.make_one_shot_iterator(data.make_dataset(paths, hr_size, SCALE, seed=0,
                                                                             cache_bytes=0)).get_next()
            graph.finalize()
            with tf1.Session(graph=graph, config=tflib.session_config("fp32")) as sess:
                for _ in range(10):
                    sess.run(batch)
                start = time.perf_counter()
                for _ in range(batches):
                    sess.run(batch)
                return batches / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- the steps

def bench_steps(cfg, warmup, repeats, infer_sizes, only=None, between=lambda: None):
    """{step: (median seconds, FLOPs)} for the training steps and generator inference; `between()` runs
    before each of them."""
    rng = np.random.default_rng(cfg["seed"])
    size = cfg["hr_size"]
    shapes = [(cfg["batch_size"], size // SCALE, size // SCALE, 3), (cfg["batch_size"], size, size, 3)]
    batch = tuple(rng.uniform(-1, 1, shape).astype(np.float32) for shape in shapes)
    with tf.Graph().as_default() as graph:
        tf1.set_random_seed(cfg["seed"])
        # A dataset, not constants: grappler would fold whatever depends only on constants (VGG of HR).
        dataset = data.without_autotuning(tf.data.Dataset.from_tensors(batch).repeat())
        lr, hr = tf1.data.make_one_shot_iterator(dataset).get_next()
        srgan = SRGAN(lr, hr, train.model_config(cfg))
        init = tf1.global_variables_initializer()
        graph.finalize()
        sess = tf1.Session(graph=graph, config=tflib.session_config(cfg["precision"]))
    sess.run(init)  # random weights: the same arithmetic as trained ones

    gan = [srgan.gan_train_op] if cfg["gan_update"] == "fused" else [srgan.d_train_op, srgan.g_train_op]
    steps = {"pretrain": [srgan.pretrain_op], "d_step": [srgan.d_train_op], "g_step": [srgan.g_train_op],
             "gan_iteration": gan}
    results = {}
    for name, ops in steps.items():
        if only and name not in only:
            continue
        between()
        seconds = median_seconds(lambda: [sess.run(op) for op in ops], warmup, repeats)
        with graph.as_default():
            results[name] = (seconds, sum(graph_flops(op) for op in ops))
        print(f"  {name}: {1000 * seconds:.1f} ms", file=sys.stderr)
    # The inference path has no static spatial shape: its FLOPs are the training generator's, by area.
    generator_flops = graph_flops(srgan.Gz) / cfg["batch_size"] / (size // SCALE) ** 2
    for lr_size in infer_sizes:
        image = rng.uniform(-1, 1, (1, lr_size, lr_size, 3)).astype(np.float32)
        between()
        seconds = median_seconds(lambda: sess.run(srgan.sr_output, {srgan.lr_input: image}), 1, max(repeats // 2, 1))
        results[f"infer_{lr_size}_to_{lr_size * SCALE}"] = (seconds, generator_flops * lr_size ** 2)
        print(f"  inference {lr_size}: {1000 * seconds:.1f} ms", file=sys.stderr)
    sess.close()
    return results


def bench_validation(cfg, val_set, warmup, repeats):
    """(median seconds, copies): one call of train.py's validation.Validator on `val_set`'s photos, and how
    many copies of each image it runs as a batch."""
    validator = validation.Validator(validation.load_pairs(validation.set_paths(val_set)), cfg["blocks"],
                                     vgg16.resolve_weights(cfg["vgg_weights"]))
    validator.sess.run([v.initializer for v in validator.variables])
    values = validator.sess.run(validator.variables)
    seconds = median_seconds(lambda: validator(values), warmup, repeats)
    validator.close()
    return seconds, validator.copies


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    tflib.init_tf()
    p = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                             parents=[train.graph_flags()])
    p.add_argument("--steps", nargs="*", choices=("pretrain", "d_step", "g_step", "gan_iteration"),
                   help="time only these training steps (default: all)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs of each step first")
    p.add_argument("--repeats", type=int, default=7, help="timed runs of each step; the median is reported")
    p.add_argument("--infer-sizes", type=int, nargs="*", default=[64, 256], help="LR sizes for generator inference (an LR of 1024 needs about 16 GB)")
    p.add_argument("--matmul-size", type=int, default=4096)
    p.add_argument("--pipeline-images", type=int, default=200, help="batches the input pipeline is timed on (0: skip)")
    p.add_argument("--validation", choices=sorted(validation.VAL_SETS),
                   help="also time one validation of these photos (train.py's --val-set), the median of --repeats/2")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cfg = dict(train.DEFAULTS, **{k: v for k, v in vars(args).items() if k in train.DEFAULTS})
    cfg["precision"] = tflib.resolve_precision(cfg["precision"], file=sys.stderr)  # what is timed
    try:
        train.check_config(cfg)
    except train.ConfigError as e:
        p.error(str(e))

    print(f"bench: B={cfg['blocks']}, LR {cfg['hr_size'] // SCALE} -> HR {cfg['hr_size']}, batch "
          f"{cfg['batch_size']}, {cfg['precision']}, {cfg['content_loss']} ({cfg['vgg_layer']}), "
          f"{cfg['gan_update']} GAN update", file=sys.stderr)
    matmul = MatmulPeak({p: matmul_timer(p, args.matmul_size) for p in ("fp32", "bf16")})
    steps = bench_steps(cfg, args.warmup, args.repeats, args.infer_sizes, args.steps, between=matmul.measure)
    matmul.measure()
    peak = matmul.best
    reference = peak["bf16" if cfg["precision"] == "bf16" else "fp32"]
    print(f"\n{'step':<24}{'ms':>10}{'GFLOP':>10}{'GFLOP/s':>10}{'of peak':>9}")
    for name, (seconds, flops) in steps.items():
        rate = flops / seconds / 1e9
        print(f"{name:<24}{1000 * seconds:>10.1f}{flops / 1e9:>10.1f}{rate:>10.1f}{rate / reference:>9.0%}")
    print(f"matmul {args.matmul_size}^2 peak: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s "
          f"(the best of {matmul.rounds} rounds of {matmul.runs} runs, between the steps)")
    report = {"config": cfg, "matmul_gflops": peak, "matmul_rounds": matmul.rounds,
              "steps": {name: {"ms": 1000 * s, "gflop": f / 1e9, "gflops": f / s / 1e9, "fraction_of_peak": f / s / 1e9 / reference}
                        for name, (s, f) in steps.items()}}
    if args.pipeline_images and "gan_iteration" in steps:
        rate = pipeline_rate(cfg["hr_size"], 64, args.pipeline_images)
        consumed = train.batches_per_gan_iteration(cfg["gan_update"]) / steps["gan_iteration"][0]
        print(f"input pipeline: {rate:.1f} images/s; the GAN iteration consumes {consumed:.2f}/s ({rate / consumed:.0f}x)")
        report["pipeline"] = {"images_per_s": rate, "consumed_per_s": consumed}
    if args.validation:
        seconds, copies = bench_validation(cfg, args.validation, 1, max(args.repeats // 2, 1))
        photos = len(validation.VAL_SETS[args.validation])
        print(f"validation of {args.validation} ({photos} photos, each run as a batch of {copies}): {seconds:.2f} s")
        report["validation"] = {"val_set": args.validation, "seconds": seconds, "copies": copies}
    if args.json:
        utils.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
