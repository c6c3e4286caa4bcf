"""TensorFlow, set up in one place: imported quietly, in graph mode, with this project's session options.

Every module takes TensorFlow from here (`from tflib import tf, tf1`) and every command calls
init_tf() first, so a command's first line of output is its own: the start-up chatter TensorFlow's
C++ code writes to file descriptor 2 while it loads (before Python's logging exists, whatever
the C++ log level) is captured, and anything in it that is not known chatter, or all of it
if loading fails, is written out again.
"""
import os
import re
import sys
import tempfile

# Lines TensorFlow prints on every start on a machine without a GPU; nothing a user can act on.
CHATTER = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                     r"|oneDNN custom operations are on|Could not find cuda drivers|failed call to cuInit"
                     r"|This TensorFlow binary is optimized to use|rebuild TensorFlow with the appropriate compiler flags")


def _import_quietly():
    """import tensorflow (and find its devices, which logs the CUDA probe) with fd 2 captured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING of the C++ logger, once it exists
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True  # then all of it is shown: it may say why
        try:
            import tensorflow
            tensorflow.config.list_physical_devices()
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if failed or not CHATTER.search(line)))
            sys.stderr.flush()
    return tensorflow


tf = _import_quietly()
tf1 = tf.compat.v1


def init_tf():
    """What every command calls first: a TF1 program (graphs and sessions only), Python-side logs at ERROR."""
    tf1.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")


def onednn_enabled():
    """Whether TensorFlow runs its CPU kernels on oneDNN in this process: its default on AVX-512, or
    TF_ENABLE_ONEDNN_OPTS=1 (read when TensorFlow was imported)."""
    from tensorflow.python.util import _pywrap_util_port  # the check TensorFlow's own tests use
    return _pywrap_util_port.IsMklEnabled()


def assume_fixed_weights():
    """For a command that sets all its weights before its first step (infer.py, evaluate.py, docs/figures.py,
    docs/try_it.py), in its own process: oneDNN may then keep each convolution's filter in its fast layout.
    Otherwise TensorFlow hands oneDNN a batch of one's filters as stored, and with AVX2 (oneDNN on there only
    with TF_ENABLE_ONEDNN_OPTS=1) oneDNN runs them as plain GEMMs, or past a size as its reference code: the
    generator 3x to 70x slower than on Eigen (docs/performance.md). TensorFlow reads this once, at the first
    convolution, for the whole process: one that trained afterwards would compute with stale filters."""
    os.environ.setdefault("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")


def set_variables(sess, values):
    """Give each variable of the dict `values` its value through a feed to its initializer: no new op, so it
    works on a finalized graph (what the deprecated Variable.load does). One run for all: each run of a new
    set of fetches costs a pass over the graph, 0.2 s on the training graph."""
    sess.run([v.initializer for v in values], {v.initializer.inputs[1]: value for v, value in values.items()})


CPUINFO = "/proc/cpuinfo"


def bf16_cpu():
    """Whether this CPU has the bfloat16 instructions oneDNN's bf16 rewrite needs (AVX512_BF16 or AMX);
    elsewhere that rewrite emulates them, slower than fp32, or, where oneDNN is off (TensorFlow's default
    without AVX-512), changes nothing."""
    try:
        with open(CPUINFO) as f:
            return re.search(r"\b(avx512_bf16|amx_bf16)\b", f.read()) is not None
    except OSError:  # no /proc (macOS, Windows)
        return False


NO_BF16 = ("note: this CPU has no AVX512_BF16 or AMX, where --precision bf16 is no faster than fp32 (emulated "
           "or not done at all): running, and recording, fp32")


def resolve_precision(precision, file=None):
    """--precision auto: bf16 on a CPU with bfloat16 instructions and no GPU, else fp32; bf16 on a CPU
    without them: fp32, which it would run anyway, saying so (NO_BF16, to `file`, default stdout); others unchanged."""
    if precision == "bf16" and not bf16_cpu():
        print(NO_BF16, file=file)
        return "fp32"
    if precision != "auto":
        return precision
    return "bf16" if bf16_cpu() and not tf.config.list_physical_devices("GPU") else "fp32"


def session_config(precision="fp32"):
    """The training sessions' options: all of this machine's cores; soft placement, so that the same
    graph runs on a GPU where there is one; no constant folding, which would turn the zero initial
    values of Adam's slots into constants kept for the session's life; no memory optimizer, whose
    rewrite of a large AddN adds its inputs in the order they arrive, which made two runs of one
    command part after some iterations (docs/gan-phase.md, round 30); and for `precision` bf16, oneDNN's
    bfloat16 rewrite of convolutions and matmuls (float16 is the optimizers' job, see model.py).
    """
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    config = tf1.ConfigProto(allow_soft_placement=True, intra_op_parallelism_threads=cores,
                             inter_op_parallelism_threads=2)
    config.gpu_options.allow_growth = True
    config.graph_options.rewrite_options.constant_folding = RewriterConfig.OFF
    config.graph_options.rewrite_options.memory_optimization = RewriterConfig.NO_MEM_OPT
    if precision == "bf16":
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = RewriterConfig.ON
        # The rewrite would also cast D's dense kernels, whose matmuls at batch 1 only stream the kernel:
        # they stay fp32. They are the graph's only MatMuls.
        os.environ.setdefault("TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_ALLOWLIST_REMOVE", "MatMul")
    return config
