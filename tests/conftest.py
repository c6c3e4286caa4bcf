import os
import sys

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
