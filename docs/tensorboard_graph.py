"""Open a run's TensorBoard in headless Chromium, check that its Graphs tab draws the graph's top-level
boxes at a readable size and its Scalars tab the losses, and screenshot the graph for the README.

    python train.py --preset quick --pretrain-iters 2 --gan-iters 1 --summary-every 1 --name graph
    python docs/tensorboard_graph.py runs/graph          # writes docs/tensorboard_graph.png

Needs Chromium (Debian: apt-get install chromium) and the pinned playwright, which drives it; Playwright's
own browser download is not used. tests/test_tensorboard.py runs the same check on a short run.
"""
import argparse
import contextlib
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DOCS = os.path.dirname(os.path.abspath(__file__))
MIN_BOX_WIDTH = 40  # pixels: a box narrower than this has no readable label
LOSS_TAGS = ("summaries/mse_loss", "summaries/d_loss", "summaries/g_loss", "summaries/adv_loss",
             "summaries/content_loss")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir, timeout=180):
    """The URL of a TensorBoard serving `logdir` on a free loopback port, stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port)]
    log = tempfile.TemporaryFile("w+")  # not a pipe, which a chatty server could fill and block on
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"tensorboard exited with {server.returncode}: {log.read()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/data/runs", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tensorboard did not answer on {url} within {timeout} s")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@contextlib.contextmanager
def browser_page(scale=1):
    """A headless Chromium page (1400x900 CSS pixels, `scale` device pixels per CSS pixel)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=scale)
        finally:
            browser.close()


def graph_view(page, url, timeout=120):
    """Opens the Graphs tab and waits for the graph. Returns (nodes, scale): {top-level name: (width,
    is a group)} of each top-level node drawn, its width in CSS pixels (function library nodes left out),
    and the scale of the drawn scene."""
    page.goto(url + "/#graphs")
    page.wait_for_selector("g.node", timeout=timeout * 1000)
    page.wait_for_timeout(1000)  # the scene fits itself to the pane just after drawing
    nodes = {}
    for node in page.query_selector_all("g.node"):
        name, shape = node.get_attribute("data-name"), node.query_selector(".nodeshape")
        if name and "/" not in name and not name.startswith("__function_library__") and shape:
            nodes[name] = (shape.bounding_box()["width"], "meta" in node.get_attribute("class").split())
    transform = page.query_selector("svg#svg > g#root").get_attribute("transform")
    return nodes, float(re.search(r"scale\(([\d.e+-]+)\)", transform).group(1))


def unreadable(nodes):
    """The groups of graph_view's nodes drawn narrower than MIN_BOX_WIDTH (single ops are drawn small)."""
    return {name: round(width) for name, (width, group) in nodes.items() if group and width < MIN_BOX_WIDTH}


def scalar_tags(page, url, timeout=120):
    """Opens the Scalars tab; the tags of the charts it shows once the losses' are there."""
    page.goto(url + "/#scalars")
    page.get_by_text(LOSS_TAGS[0], exact=True).first.wait_for(timeout=timeout * 1000)
    return {e.evaluate("card => card.tag") for e in page.query_selector_all("tf-scalar-card")}


def screenshot(page, path):
    """The Graphs tab's pane cropped to the drawn graph (main graph, auxiliary nodes, functions), as a PNG
    written whole or not at all."""
    pane = page.query_selector("svg#svg").bounding_box()
    scene = page.query_selector("svg#svg > g#root").bounding_box()
    margin = 16
    top = pane["y"] + 4  # below the toolbar's shadow
    png = page.screenshot(clip={"x": pane["x"], "y": top, "width": pane["width"],
                                "height": min(pane["height"], scene["y"] + scene["height"] + margin - top)})
    utils.write_atomic(path, lambda f: f.write(png))


def main(argv=None):
    parser = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory written by train.py")
    parser.add_argument("--out", default=os.path.join(DOCS, "tensorboard_graph.png"), help="default: %(default)s")
    args = parser.parse_args(argv)
    if not glob.glob(os.path.join(args.run_dir, "**", "events.out.tfevents.*"), recursive=True):
        sys.exit(f"error: no TensorBoard events in {args.run_dir}")
    if not os.path.exists(CHROMIUM):
        sys.exit(f"error: no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import Error as BrowserError
    except ImportError:
        sys.exit("error: playwright is not installed (pip install -r requirements.txt)")
    try:
        with tensorboard(args.run_dir) as url, browser_page(scale=2) as page:
            missing = sorted(set(LOSS_TAGS) - scalar_tags(page, url))
            nodes, scale = graph_view(page, url)
            print(f"scene scale {scale:.3f}; top-level nodes (CSS px wide): "
                  + ", ".join(f"{name} {width:.0f}" for name, (width, _) in sorted(nodes.items())))
            if missing or unreadable(nodes):
                sys.exit(f"error: not written: the Scalars tab lacks {missing or 'nothing'}, "
                         f"boxes narrower than {MIN_BOX_WIDTH} px: {unreadable(nodes) or 'none'}")
            screenshot(page, args.out)
    except (RuntimeError, BrowserError) as e:
        sys.exit(f"error: {str(e).splitlines()[0]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
