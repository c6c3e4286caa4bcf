import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def vgg_weights():
    """The real ImageNet VGG16 weights (converted offline on first use)."""
    import vgg16
    return vgg16.resolve_weights()
