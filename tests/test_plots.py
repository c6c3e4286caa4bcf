"""The report's figures (loss curves from TensorBoard files) and the GAN health check."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import monitor

tf1 = tf.compat.v1


def write_scalars(run_dir, points):
    """TensorBoard event file with {tag: [(step, value)]}, as train.py's summaries write them."""
    with tf.Graph().as_default():
        writer = tf1.summary.FileWriter(str(run_dir))
        for tag, series in points.items():
            for step, value in series:
                writer.add_summary(tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)]), step)
        writer.close()


def test_scalars_are_read_up_to_a_half_written_record(tmp_path):
    write_scalars(tmp_path, {"summaries/mse_loss": [(1, 0.5), (2, 0.4), (3, 0.3)],
                             "other/ignored": [(1, 1.0)], "summaries/D_x": [(3, 0.9)]})  # D_x written last
    scalars = monitor.read_scalars(str(tmp_path))
    assert set(scalars) == {"mse_loss", "D_x"}
    steps, values = scalars["mse_loss"]
    assert steps.tolist() == [1, 2, 3] and np.allclose(values, [0.5, 0.4, 0.3])
    (path,) = tmp_path.glob("events.out.tfevents.*")
    path.write_bytes(path.read_bytes()[:-5])  # as a running training leaves it between two writes
    scalars = monitor.read_scalars(str(tmp_path))
    assert scalars["mse_loss"][0].tolist() == [1, 2, 3] and "D_x" not in scalars


def test_every_curve_is_plotted(tmp_path):
    tags = ["g_loss", "d_loss", "adv_loss", "content_loss", "mse_loss", "D_x", "D_G_z"]
    write_scalars(tmp_path, {f"summaries/{tag}": [(s, math.sin(s) + 2) for s in range(1, 40)] for tag in tags})
    paths = monitor.plot_training(str(tmp_path))
    names = sorted(p.split("/")[-1] for p in paths)
    assert names == sorted(["g_loss.png", "d_loss.png", "adv_loss.png", "content_loss.png", "mse_loss.png", "D_outputs.png"])
    for path in paths:
        image = np.asarray(Image.open(path).convert("L"))
        assert image.shape[1] > 300 and image.std() > 0


def test_validation_scores_are_plotted_a_steps_last_kept(tmp_path):
    assert monitor.plot_training(str(tmp_path)) == []
    lines = [{"step": s, "psnr": 27 + s / 1000, "vgg": 0.15, "niqe": 9.0, "grid": 0.2} for s in (250, 500)]
    lines.append({"step": 500, "psnr": 30.0, "vgg": 0.1, "niqe": 8.0, "grid": 0.1})  # scored again on resuming
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 750, "ps')
    series = monitor.read_validation(str(tmp_path))
    assert list(series) == ["psnr", "vgg", "niqe", "grid"]
    assert series["psnr"][0].tolist() == [250, 500] and series["psnr"][1].tolist() == [27.25, 30.0]
    (path,) = monitor.plot_training(str(tmp_path))
    image = np.asarray(Image.open(path).convert("L"))
    assert path.endswith("validation.png") and image.shape[1] >= 4 * 300 and image.std() > 0


def test_a_change_of_validation_photos_breaks_the_line(tmp_path):
    """A resume with another --val-dir: its scores are not joined to the first set's."""
    lines = [{"step": s, "psnr": 29.0 + s / 1000, "images": ["chelsea.png", "coffee.png"]} for s in (100, 200)]
    lines += [{"step": s, "psnr": 27.0, "images": ["astronaut.png", "grass.png"]} for s in (300, 400)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    steps, values = monitor.read_validation(str(tmp_path))["psnr"]
    assert steps.tolist() == [100, 200, 300, 300, 400]
    assert np.isnan(values[2]) and values[[0, 1, 3, 4]].tolist() == [29.1, 29.2, 27.0, 27.0]
    (path,) = monitor.plot_training(str(tmp_path))
    assert np.asarray(Image.open(path).convert("L")).std() > 0


def test_smoothing_is_a_debiased_moving_average():
    assert np.allclose(monitor.smooth(np.full(10, 3.0)), 3.0)
    assert monitor.smooth(np.array([0.0, 10.0]))[1] == pytest.approx(10 * 0.1 / (1 - 0.81))


def healthy_step(i):
    return {"D_x": 0.7, "D_G_z": 0.3 + 0.01 * (i % 3), "adv_loss": 1.2, "d_loss": 1.0}


def test_gan_health_is_quiet_on_a_balanced_game():
    health = monitor.GANHealth(window=20)
    assert not any(health.update(healthy_step(i)) for i in range(60))


def test_gan_health_names_a_winning_discriminator_and_an_exploding_loss():
    health = monitor.GANHealth(window=20)
    collapsed = {"D_x": 1.0, "D_G_z": 1e-9, "adv_loss": 20.0, "d_loss": 0.0}
    for i in range(19):
        assert health.update(collapsed) == []
    problems = health.update(healthy_step(0))  # one spike in 20 iterations does not hide the collapse
    assert len(problems) == 3 and "D(G(z))" in problems[0] and "D(x)" in problems[1] and "adversarial" in problems[2]
    assert health.update(healthy_step(1))  # 18 of 20 collapsed: still most
    assert health.update(healthy_step(2)) == []  # 17 of 20: no longer


def test_gan_health_means_are_over_its_window_and_the_steps_that_have_each_value():
    health = monitor.GANHealth(window=20)
    warmup = [{"D_x": 0.9, "D_G_z": 0.01 * i, "adv_loss": 5.0} for i in range(10)]  # D warm-up: no g_loss
    steps = [dict(healthy_step(i), g_loss=0.1 * i) for i in range(15)]
    for step in warmup + steps:
        health.update(step)
    recent = warmup[-5:] + steps
    means = health.means()
    assert sorted(means) == sorted(steps[-1])
    for tag in ("D_x", "D_G_z", "adv_loss"):
        assert means[tag] == pytest.approx(np.mean([step[tag] for step in recent]))
    assert means["g_loss"] == pytest.approx(np.mean([step["g_loss"] for step in steps]))


def test_gan_health_names_nan():
    assert "d_loss is nan" in monitor.GANHealth().update(dict(healthy_step(0), d_loss=float("nan")))
