"""The TensorBoard view of a run: the graph's top level is the report's blocks, and a real browser draws
them at a readable size (Chromium driven by Playwright, as docs/tensorboard_graph.py does)."""
import contextlib
import os
import sys

import pytest
import tensorflow as tf

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "docs"))
import tensorboard_graph  # noqa: E402  (docs/, the script that makes the README's screenshot)

# Every op of the training graph is in one of these, so that TensorBoard draws one box per block.
TOP_LEVEL = {"data", "generator", "discriminator", "discriminator_1", "vgg16", "vgg_hr", "vgg_sr", "losses",
             "optimizers", "summaries", "inference", "save", "global_step", "phase", "init"}


def graph_def(run_dir):
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
                if event.graph_def:
                    return tf.compat.v1.GraphDef.FromString(event.graph_def)
    raise AssertionError(f"no graph in the TensorBoard files of {run_dir}")


def test_the_graph_top_level_is_the_report_blocks(tiny_run):
    nodes = graph_def(tiny_run).node
    assert {n.name.split("/")[0] for n in nodes} == TOP_LEVEL
    # Expanding discriminator_1 shows the first call's variables: it reads them and has none of its own.
    kinds = {n.name: n.op for n in nodes}
    second = [n for n in nodes if n.name.startswith("discriminator_1/")]
    assert not [n.name for n in second if n.op == "VarHandleOp"]
    read = {i for n in second for i in n.input if kinds.get(i) == "VarHandleOp"}
    assert read and all(name.startswith("discriminator/") for name in read)
    assert {"discriminator/conv0/kernel", "discriminator/conv7/kernel", "discriminator/dense0/bias"} <= read


@pytest.fixture
def page():
    """A headless Chromium page, or a skip saying why there is none."""
    try:
        from playwright.sync_api import Error
    except ImportError:
        pytest.skip("playwright is not installed: pip install -r requirements.txt")
    if not os.path.exists(tensorboard_graph.CHROMIUM):
        pytest.skip(f"no Chromium at {tensorboard_graph.CHROMIUM}: apt-get install chromium (bash .ci/run does)")
    with contextlib.ExitStack() as stack:
        try:
            page = stack.enter_context(tensorboard_graph.browser_page())
        except Error as e:
            pytest.skip(f"Chromium does not start here: {str(e).splitlines()[0]}")
        yield page


def test_a_browser_draws_the_graph_readably_and_the_loss_scalars(page, tiny_run):
    with tensorboard_graph.tensorboard(tiny_run) as url:
        nodes, scale = tensorboard_graph.graph_view(page, url)
        tags = tensorboard_graph.scalar_tags(page, url)
    print(f"scene scale {scale:.3f}; widths {sorted((n, round(w)) for n, (w, _) in nodes.items())}")
    assert set(nodes) == TOP_LEVEL
    assert not tensorboard_graph.unreadable(nodes)
    assert sum(group for _, group in nodes.values()) == len(TOP_LEVEL) - 1  # all but the init op
    assert 0.5 < scale < 2
    assert set(tensorboard_graph.LOSS_TAGS) <= tags
