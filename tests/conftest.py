import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def vgg_weights():
    """The real ImageNet VGG16 weights (converted offline on first use)."""
    import vgg16
    return vgg16.resolve_weights()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, vgg_weights):
    """A real run directory from train.py: 2 residual blocks, 2 MSE pre-training iterations and 1 GAN
    iteration on 32x32 crops, scalars at every step."""
    import subprocess
    runs = tmp_path_factory.mktemp("runs")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--dataset", "sample", "--hr-size", "32",
                             "--blocks", "2", "--pretrain-iters", "2", "--gan-iters", "1", "--summary-every", "1", "--val-every", "0",
                             "--name", "tiny", "--runs-dir", str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return runs / "tiny"


# Runs command lines of this project's scripts one after another in one Python process, each as
# `python SCRIPT ARGS...` runs it (runpy, as __main__, with its own sys.argv) and with file descriptors 1
# and 2 sent to files of its own, so that TensorFlow's C++ output is caught too. The modules the scripts
# import, TensorFlow first, are imported once for all of them instead of once per command.
IN_TURN = """
import json, os, runpy, sys, traceback
commands, folder = json.loads(sys.argv[1]), sys.argv[2]
for i, argv in enumerate(commands):
    saved = os.dup(1), os.dup(2)
    with open(f"{folder}/{i}.out", "w") as out, open(f"{folder}/{i}.err", "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.argv = argv
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
    with open(f"{folder}/{i}.code", "w") as f:
        f.write(str(code))
"""


def run_in_turn(commands):
    """[(script, *args)] run as by subprocess.run([python, script, *args], cwd=ROOT), but all in one process
    (IN_TURN); their subprocess.CompletedProcess results, in order."""
    commands = [[os.path.join(ROOT, script), *map(str, args)] for script, *args in commands]
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-c", IN_TURN, json.dumps(commands), folder], cwd=ROOT, check=True, timeout=600)

        def read(i, kind):
            with open(os.path.join(folder, f"{i}.{kind}"), errors="replace") as f:
                return f.read()
        return [subprocess.CompletedProcess(argv, int(read(i, "code")), read(i, "out"), read(i, "err"))
                for i, argv in enumerate(commands)]


SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def shared_data(*parts):
    """Path under ../shared/data (real test images, never copied into the repo); skips the test when absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"needs the real test images at {os.path.abspath(path)} (../shared beside the checkout)")
    return path


def assert_one_error_line(result, message):
    """A finished command failed with one line "error: ..." holding `message`, and no traceback; returns the line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    return errors[0]
