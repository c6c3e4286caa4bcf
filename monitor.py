"""Watching a training: its curves read back from the TensorBoard files and plotted, and the GAN's health."""
import collections
import glob
import math
import os

import numpy as np

from tflib import tf, tf1
from utils import write_atomic

CURVES = {  # tag under summaries/: title (the report's figures 6 to 10, then D's outputs)
    "g_loss": "generator loss", "d_loss": "discriminator loss", "adv_loss": "adversarial loss",
    "content_loss": "content loss", "mse_loss": "MSE loss",
}


def read_scalars(run_dir):
    """{tag: (steps, values)} of the summaries/* scalars in a run's TensorBoard files.

    A file that ends in a half-written record (its run is still writing it) is read up to there.
    """
    series = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        try:
            for event in tf1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag.startswith("summaries/") and value.HasField("simple_value"):
                        series.setdefault(value.tag[len("summaries/"):], {})[event.step] = value.simple_value
        except tf.errors.DataLossError:
            pass
    return {tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)])) for tag, points in series.items()}


def smooth(values, weight=0.9):
    """TensorBoard's smoothing: a debiased exponential moving average."""
    out, average = np.empty(len(values)), 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average / (1 - weight ** (i + 1))
    return out


def plot_training(run_dir):
    """Write run_dir/plots/<tag>.png for each loss and D_outputs.png (mean D(x), D(G(z))); returns their paths.

    Each curve is drawn smoothed, with the raw values faint behind it; positive losses on a log scale.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run_dir)
    figures = [(tag, title, [tag]) for tag, title in CURVES.items() if tag in scalars]
    if "D_x" in scalars:
        figures.append(("D_outputs", "mean discriminator output", ["D_x", "D_G_z"]))
    paths = []
    for name, title, tags in figures:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for tag, color in zip(tags, ("C0", "C3")):
            steps, values = scalars[tag]
            label = {"D_x": "D(x)", "D_G_z": "D(G(z))"}.get(tag, tag)
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values), color=color, linewidth=1.5, label=label)
        ax.set(title=title, xlabel="iteration")
        if name != "D_outputs" and all((scalars[tag][1] > 0).all() for tag in tags):
            ax.set_yscale("log")  # a loss falls by orders of magnitude; its later steps matter as much
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(run_dir, "plots", name + ".png"))
        write_atomic(paths[-1], lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
    return paths


class GANHealth:
    """Looks at the values each GAN iteration already fetches and names what looks unhealthy."""

    def __init__(self, window=50):
        self.recent = collections.deque(maxlen=window)
        self.problems = []

    def update(self, losses):
        """Add one iteration's {"D_x", "D_G_z", "adv_loss", ...}; returns (and keeps) the problems seen, [] when healthy."""
        self.recent.append(losses)
        problems = [f"{tag} is {value}" for tag, value in losses.items() if not math.isfinite(value)]
        if len(self.recent) == self.recent.maxlen:
            n = len(self.recent)

            def mostly(test):  # 90%: a GAN that collapsed still has the odd spike
                return sum(map(test, self.recent)) >= 0.9 * n

            if mostly(lambda step: step["D_G_z"] < 0.01):
                problems.append(f"D(G(z)) below 0.01 in most of the last {n} iterations: the discriminator wins, "
                                "the generator gets little adversarial signal")
            if mostly(lambda step: step["D_x"] > 0.99):
                problems.append(f"D(x) above 0.99 in most of the last {n} iterations")
            if mostly(lambda step: step["adv_loss"] > 10):
                problems.append(f"adversarial loss above 10 in most of the last {n} iterations (exploding)")
        self.problems = problems
        return problems
