"""tflib: every command starts quietly, its first line its own, and a real TensorFlow failure still shows;
the training sessions' options keep runs repeatable."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_script

# A stand-in for TensorFlow that writes to file descriptor 2 from "C++" as the real one does while it loads.
FAKE_TENSORFLOW = '''
import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see slightly different results\\n")
os.write(2, b"E0000 loader.cc:1] {message}\\n")
{ending}
'''
WORKS = '''
class config:
    list_physical_devices = staticmethod(lambda: [])
class compat:
    v1 = None
'''


def run(args, fake=None, tmp_path=None):
    env = dict(os.environ)
    if fake:
        package = tmp_path / "tensorflow"
        package.mkdir()
        (package / "__init__.py").write_text(fake)
        env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ["train.py", "infer.py", "evaluate.py", "bench.py", "vgg16.py"])
def test_help_prints_nothing_before_its_own_first_line(script):
    result = run([script, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert result.stdout.splitlines()[0].startswith(f"usage: {script}")


def test_a_failing_tensorflow_import_still_shows_what_it_wrote_and_why(tmp_path):
    fake = FAKE_TENSORFLOW.format(message="libtensorflow_framework.so.2: cannot open shared object file",
                                  ending="raise ImportError('broken install')")
    result = run(["train.py", "--help"], fake, tmp_path)
    assert result.returncode != 0 and result.stdout == ""
    assert "libtensorflow_framework.so.2: cannot open shared object file" in result.stderr
    assert "ImportError: broken install" in result.stderr
    assert "oneDNN custom operations are on" in result.stderr  # all of it, when loading failed


def test_a_working_import_drops_only_the_known_chatter(tmp_path):
    fake = FAKE_TENSORFLOW.format(message="something TensorFlow needs you to know", ending=WORKS)
    result = run(["-c", "import tflib; print('first line')"], fake, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first line\n"
    assert result.stderr == "E0000 loader.cc:1] something TensorFlow needs you to know\n"


@pytest.mark.parametrize("switch, expected", [("0", "False"), ("1", "True")])
def test_onednn_enabled_follows_tensorflows_switch(monkeypatch, switch, expected):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", switch)
    result = run(["-c", "import tflib; print(tflib.onednn_enabled())"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == expected + "\n"


@pytest.mark.parametrize("flags, gpus, expected", [
    ("fpu sse2 avx512f avx512_bf16 avx512_vnni", [], "bf16"),
    ("fpu sse2 avx512f amx_bf16 amx_tile", [], "bf16"),
    ("fpu sse2 avx512f avx512_vnni", [], "fp32"),  # bf16 would be emulated: slower than fp32
    ("fpu sse2 avx512f avx512_bf16", ["GPU:0"], "fp32"),  # the graph runs on the GPU, not oneDNN
])
def test_auto_precision_is_bf16_only_on_a_cpu_with_bfloat16_instructions(tmp_path, monkeypatch, flags, gpus, expected):
    import tflib
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(tflib, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(tflib.tf.config, "list_physical_devices", lambda kind=None: gpus)
    assert tflib.resolve_precision("auto") == expected
    assert tflib.resolve_precision("fp32") == "fp32"
    assert tflib.resolve_precision("bf16") == ("bf16" if "_bf16" in flags else "fp32")  # else it would run fp32
    monkeypatch.setattr(tflib, "CPUINFO", str(tmp_path / "missing"))  # no /proc: fp32
    assert tflib.resolve_precision("auto") == "fp32"


def test_bf16_asked_on_a_cpu_without_bfloat16_runs_and_records_fp32_and_says_so(tmp_path, monkeypatch, capsys):
    """There oneDNN's rewrite is emulated or not done: a run that recorded bf16 would say what it did not do."""
    import tflib
    import train
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    monkeypatch.setattr(tflib, "CPUINFO", str(cpuinfo))
    cfg, _, _ = train.make_config(["--precision", "bf16", "--runs-dir", str(tmp_path), "--name", "r"])
    assert cfg["precision"] == "fp32"
    assert tflib.NO_BF16 in capsys.readouterr().out
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    cfg, _, _ = train.make_config(["--precision", "bf16", "--runs-dir", str(tmp_path), "--name", "r"])
    assert cfg["precision"] == "bf16" and tflib.NO_BF16 not in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["train.py", "--hr-size", "30"],  # an error: line, exit 1
    ["train.py", "--no-such-flag"],  # argparse: usage, exit 2
    ["-c", "import sys; print('out'); sys.exit('a message')"],
    ["-c", "print('out'); raise ValueError('a traceback')"],
])
def test_the_tests_forked_commands_end_as_fresh_processes_do(argv, tmp_path):
    """run_script, which most tests run the scripts with, gives the exit code, output and last error
    line that `python ARGV` gives."""
    fresh = run(argv)
    forked = run_script(None, *argv[2:], code=argv[1]) if argv[0] == "-c" else run_script(*argv)
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout)
    assert forked.stderr.splitlines()[-1:] == fresh.stderr.splitlines()[-1:] != []


def test_training_sessions_keep_each_addn_whole_so_runs_repeat():
    """Grappler's memory optimizer turns an AddN it expects to be live at peak memory into additions
    to a temporary variable, made in whatever order the inputs arrive: two runs of one command then
    part. The training sessions' options leave every AddN whole."""
    import tflib
    from model import SRGAN, SRGANConfig
    from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
    from tensorflow.python.grappler import tf_optimizer
    tf, tf1 = tflib.tf, tflib.tf1
    graph = tf.Graph()
    with graph.as_default():  # the recipe's batch of 16 96x96 crops: large enough for the rewrite
        lr, hr = tf1.placeholder(tf.float32, [16, 24, 24, 3]), tf1.placeholder(tf.float32, [16, 96, 96, 3])
        model = SRGAN(lr, hr, SRGANConfig(blocks=2, content_loss="mse+vgg"))
        graph.add_to_collection("train_op", model.g_train_op)
        graph.add_to_collection("train_op", model.d_train_op)
        meta_graph = tf1.train.export_meta_graph(graph=graph)

    def temporary_variables(config):
        return [n.name for n in tf_optimizer.OptimizeGraph(config, meta_graph).node if n.op == "TemporaryVariable"]

    with_memory_optimizer = tflib.session_config("fp32")
    with_memory_optimizer.graph_options.rewrite_options.memory_optimization = RewriterConfig.DEFAULT_MEM_OPT
    if not temporary_variables(with_memory_optimizer):
        pytest.skip("the memory optimizer rewrites no AddN of this graph on this machine (more memory): "
                    "nothing to check")
    assert temporary_variables(tflib.session_config("fp32")) == []
    assert temporary_variables(tflib.session_config("bf16")) == []
