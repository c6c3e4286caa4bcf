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
    runs = tmp_path_factory.mktemp("runs")
    result = run_script("train.py", "--dataset", "sample", "--hr-size", "32", "--blocks", "2", "--pretrain-iters", "2",
                        "--gan-iters", "1", "--summary-every", "1", "--val-every", "0", "--name", "tiny", "--runs-dir", runs)
    assert result.returncode == 0, result.stderr[-2000:]
    return runs / "tiny"


# Runs `python SCRIPT ARGS...` command lines each in a process of its own, forked from one that has
# imported TensorFlow and this project's modules once (about 7 of the 10-30 seconds a tiny run takes
# here). The fork runs the script as `python SCRIPT` would (runpy, as __main__, with its own sys.argv,
# working directory and sys.path[0]) with file descriptors 1 and 2 sent to files, so that TensorFlow's
# C++ output is caught too, and exits with the code `python SCRIPT` would.
FORKER = """
import json, os, runpy, signal, sys, time, traceback
sys.path[0] = os.getcwd()  # ROOT: the modules' __file__ absolute, whatever directory a fork moves to
import tflib, bench, evaluate, infer, model_card, train, vgg16  # what the scripts import, loaded once
for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        for fd, name in ((1, "out"), (2, "err")):
            with open(f"{job['folder']}/{name}", "w") as f:
                os.dup2(f.fileno(), fd)
        with open(os.devnull) as f:
            os.dup2(f.fileno(), 0)
        sys.argv, sys.path[0] = job["argv"], "" if job["code"] else os.path.dirname(job["argv"][0])
        try:
            if job["code"]:
                exec(compile(job["code"], "<string>", "exec"), {"__name__": "__main__"})
            else:
                runpy.run_path(job["argv"][0], run_name="__main__")
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
        os._exit(code)
    deadline, timed_out = time.time() + job["timeout"], False
    while not (status := os.waitpid(pid, os.WNOHANG))[0]:
        if time.time() > deadline and not timed_out:
            os.kill(pid, signal.SIGKILL)
            timed_out = True
        time.sleep(0.02)
    print(json.dumps([os.waitstatus_to_exitcode(status[1]), timed_out]), flush=True)
"""
_forker = None


def run_script(script, *args, cwd=ROOT, timeout=600, code=None):
    """subprocess.run([python, ROOT/script, *args], cwd=cwd, capture_output=True, text=True), or with
    `code` [python, "-c", code, *args], as the forks of FORKER run it: a subprocess.CompletedProcess."""
    global _forker
    if _forker is None or _forker.poll() is not None:
        _forker = subprocess.Popen([sys.executable, "-c", FORKER], cwd=ROOT, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    argv = ["-c" if code else os.path.join(ROOT, script), *map(str, args)]
    with tempfile.TemporaryDirectory() as folder:
        job = {"argv": argv, "code": code, "cwd": str(cwd), "folder": folder, "timeout": timeout}
        _forker.stdin.write(json.dumps(job) + "\n")
        _forker.stdin.flush()
        exit_code, timed_out = json.loads(_forker.stdout.readline())
        if timed_out:
            raise subprocess.TimeoutExpired(argv, timeout)

        def read(name):
            with open(os.path.join(folder, name), errors="replace") as f:
                return f.read()
        return subprocess.CompletedProcess(argv, exit_code, read("out"), read("err"))


def run_in_turn(commands):
    """[(script, *args)] run one after another by run_script; their results, in order."""
    return [run_script(*command) for command in commands]


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
