"""infer.py and evaluate.py on a real (tiny) run: image kinds, tiling, SavedModel export, the results table, bad input."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
import skimage.data

import data
import infer
import metrics
import niqe
from conftest import ROOT, assert_one_error_line, run_in_turn, run_script
from test_data import write_png16

PHOTO = skimage.data.astronaut()


def cli(script, *args):
    return run_script(script, *args)


@pytest.fixture(scope="module")
def upscaler(tiny_run):
    up = infer.Upscaler(str(tiny_run))
    yield up
    up.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Odd-sized RGB JPEG, grey PNG, 1-bit PNG, RGBA PNG, 16-bit grey and 16-bit RGB PNGs."""
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(PHOTO[100:137, 200:223]).save(folder / "odd.jpg", quality=95)
    Image.fromarray(PHOTO[:30, :21, 1]).save(folder / "grey.png")
    Image.fromarray(PHOTO[:20, :23, 1] > 127).save(folder / "bits.png")  # black and white, a scan's
    alpha = np.tile(np.linspace(0, 255, 19).astype(np.uint8), (25, 1))
    Image.fromarray(np.dstack([PHOTO[:25, :19], alpha])).save(folder / "rgba.png")
    Image.fromarray(PHOTO[:21, :17, 0].astype(np.uint16) * 257).save(folder / "grey16.png")
    write_png16(str(folder / "rgb16.png"), PHOTO[:18, :22].astype(np.uint16) * 257)
    return folder


@pytest.fixture(scope="module")
def outputs(tiny_run, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    result = cli("infer.py", "--checkpoint", tiny_run, inputs, "-o", out)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_every_kind_of_image_comes_out_x4_with_its_channels(outputs, inputs, upscaler):
    for name in ("odd.jpg", "grey.png", "bits.png", "rgba.png", "grey16.png", "rgb16.png"):
        pixels = infer.read_image(str(inputs / name))
        out = infer.read_image(str(outputs / (os.path.splitext(name)[0] + "_x4.png")))
        assert out.shape == (pixels.shape[0] * 4, pixels.shape[1] * 4, pixels.shape[2]), name
        assert out.dtype == pixels.dtype, name
    rgb = infer.read_image(str(inputs / "odd.jpg"))
    np.testing.assert_array_equal(infer.read_image(str(outputs / "odd_x4.png")), upscaler.upscale(rgb))


@pytest.mark.parametrize("name", ["grey", "bits"])
def test_grey_stays_grey_and_is_the_mean_of_the_colour_result(outputs, inputs, upscaler, name):
    grey = np.asarray(Image.open(inputs / f"{name}.png").convert("L"))
    assert Image.open(outputs / f"{name}_x4.png").mode == "L"
    sr = upscaler.upscale(np.repeat(grey[:, :, None], 3, axis=2))
    assert np.abs(np.asarray(Image.open(outputs / f"{name}_x4.png")).astype(int) - sr.mean(axis=2)).max() <= 1


def test_rgba_keeps_its_alpha_upscaled_bicubically(outputs, inputs, upscaler):
    rgba = np.asarray(Image.open(inputs / "rgba.png"))
    out = np.asarray(Image.open(outputs / "rgba_x4.png"))
    alpha = np.clip(np.round(metrics.imresize(rgba[:, :, 3].astype(float), 4)), 0, 255)
    np.testing.assert_array_equal(out[:, :, 3], alpha)
    np.testing.assert_array_equal(out[:, :, :3], upscaler.upscale(rgba[:, :, :3]))


def test_16_bit_in_16_bit_out_on_the_same_scale(outputs, upscaler):
    out = infer.read_image(str(outputs / "rgb16_x4.png"))
    as_8_bit = upscaler.upscale(PHOTO[:18, :22])
    assert np.abs(out / 257 - as_8_bit).max() <= 1.5
    assert len(np.unique(out % 257)) > 1  # real 16-bit values, not 8-bit ones scaled


def test_tiled_matches_untiled(upscaler):
    lr = metrics.imresize(PHOTO[:280, :200], 1 / 4)  # 70 x 50
    assert len(infer.spans(70, 32, 12)) > 2 and len(infer.spans(50, 32, 12)) > 1
    tiled, whole = upscaler.upscale(lr, tile=32, overlap=12), upscaler.upscale(lr, tile=0)
    hr = PHOTO[:280, :200]
    assert abs(metrics.sr_metrics(tiled, hr)[0] - metrics.sr_metrics(whole, hr)[0]) < 0.01
    assert metrics.psnr(tiled, whole) > 50
    bands = [len(band) for band in upscaler.bands(lr / 127.5 - 1, tile=32, overlap=12)]
    assert len(bands) == len(infer.spans(70, 32, 12)) and sum(bands) == 280  # streamed a row of tiles at a time


FIXED_WEIGHTS_CHILD = """
import sys, numpy as np, tflib, infer
tflib.assume_fixed_weights()
tflib.init_tf()
lr = np.load(sys.argv[1])
np.save(sys.argv[2], np.stack([infer.Upscaler(model).run(lr) for model in sys.argv[3:]]))
"""


def test_generators_in_a_process_that_assumes_fixed_weights_give_their_own_outputs(tmp_path):
    """infer.py and evaluate.py let oneDNN keep filters cached (tflib.assume_fixed_weights): in such a process,
    with oneDNN on whatever this CPU's default, each generator, one after another, gives what it gives in this
    process, which does not assume it. A generator run once before its weights were set would keep the
    filters of that run."""
    lr = metrics.imresize(PHOTO[:96, :120], 1 / 4).astype(np.float32) / 127.5 - 1
    np.save(tmp_path / "lr.npy", lr)
    models = [infer.resolve_model(name) for name in ("srresnet", "srgan", "srresnet")]
    result = subprocess.run([sys.executable, "-c", FIXED_WEIGHTS_CHILD, tmp_path / "lr.npy", tmp_path / "sr.npy", *models],
                            cwd=ROOT, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS" not in os.environ
    references = {}
    for model in dict.fromkeys(models):  # srresnet's reference once, though the child runs it twice
        up = infer.Upscaler(model)
        references[model] = up.run(lr)
        up.close()
    for model, sr in zip(models, np.load(tmp_path / "sr.npy")):
        assert np.abs(sr - references[model]).max() < 1e-3, model


def test_export_reloads_with_infer_and_plain_tensorflow(tiny_run, upscaler, tmp_path):
    export = tmp_path / "exported"
    result = cli("infer.py", "--checkpoint", tiny_run, "--export", export)
    assert result.returncode == 0, result.stderr[-2000:]
    lr = metrics.imresize(PHOTO[:64, :48], 1 / 4)
    loaded = infer.Upscaler(str(export))
    np.testing.assert_array_equal(loaded.upscale(lr), upscaler.upscale(lr))
    loaded.close()

    model = tf.saved_model.load(str(export))  # eager TF2, as any TensorFlow user would
    sr = model.signatures["serving_default"](lr=tf.constant(lr[None] / 127.5 - 1, tf.float32))["sr"].numpy()[0]
    np.testing.assert_allclose(sr, upscaler.run(lr / 127.5 - 1), atol=1e-5)
    sr8 = model.signatures["uint8"](lr=tf.constant(lr[None]))["sr"].numpy()[0]
    assert sr8.dtype == np.uint8 and np.abs(sr8.astype(int) - upscaler.upscale(lr)).max() <= 1

    again = cli("infer.py", "--checkpoint", tiny_run, "--export", export)
    assert_one_error_line(again, "already exists")


def test_outputs_are_never_overwritten_without_the_flag(tiny_run, inputs, outputs):
    before = (outputs / "odd_x4.png").read_bytes()
    (outputs / "odd_x4.png").write_bytes(b"mine")
    result = cli("infer.py", "--checkpoint", tiny_run, inputs / "odd.jpg", "-o", outputs)
    assert_one_error_line(result, "--overwrite")
    assert (outputs / "odd_x4.png").read_bytes() == b"mine"
    result = cli("infer.py", "--checkpoint", tiny_run, inputs / "odd.jpg", "-o", outputs, "--overwrite")
    assert result.returncode == 0 and (outputs / "odd_x4.png").read_bytes() == before
    assert not [name for name in os.listdir(outputs) if name.startswith(".tmp")]


@pytest.fixture(scope="module")
def bad_runs(tiny_run, tmp_path_factory):
    """A run directory without a checkpoint, and one whose config.json says 3 blocks for a 2-block checkpoint."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    shutil.copy(tiny_run / "config.json", root / "empty")
    shutil.copytree(tiny_run, root / "other-blocks")
    config = json.loads((tiny_run / "config.json").read_text())
    (root / "other-blocks" / "config.json").write_text(json.dumps(dict(config, blocks=3)))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(PHOTO[:32, :32]).save(root / "good.png")
    return root


BAD_INPUTS = {
    "missing checkpoint": "no such run directory",
    "no checkpoint in run": "holds no checkpoint",
    "other blocks": "residual blocks",
    "missing input": "no such",
    "unreadable image": "cannot",
    "unknown flag": "unrecognized arguments",
}
SHARED_WITH_INFER = ("no checkpoint in run", "other blocks")  # evaluate.py loads the generator through infer.py


BAD_INPUT_COMMANDS = ([("infer.py", case, message) for case, message in BAD_INPUTS.items()] +
                      [("evaluate.py", case, message) for case, message in BAD_INPUTS.items() if case not in SHARED_WITH_INFER])


@pytest.fixture(scope="module")
def bad_input_results(tiny_run, bad_runs, tmp_path_factory):
    """{(script, case): (the case's folder, the result)} of BAD_INPUT_COMMANDS, run in one process."""
    commands, folders = [], []
    for script, case, _ in BAD_INPUT_COMMANDS:
        tmp_path = tmp_path_factory.mktemp("case")
        checkpoint = {"missing checkpoint": bad_runs / "nothing", "no checkpoint in run": bad_runs / "empty",
                      "other blocks": bad_runs / "other-blocks"}.get(case, tiny_run)
        image = {"missing input": bad_runs / "absent.png", "unreadable image": bad_runs / "broken.png"}.get(case, bad_runs / "good.png")
        if script == "infer.py":
            args = ["--checkpoint", checkpoint, image, "-o", tmp_path / "out"]
        else:
            folder = tmp_path / "set"
            folder.mkdir()
            if case == "unreadable image":
                shutil.copy(bad_runs / "broken.png", folder)
            else:
                shutil.copy(bad_runs / "good.png", folder)
            args = ["--checkpoint", checkpoint, "--data", image if case == "missing input" else folder]
        commands.append((script, *args, *(["--frobnicate"] if case == "unknown flag" else [])))
        folders.append(tmp_path)
    results = run_in_turn(commands)
    return {(script, case): (folder, result) for (script, case, _), folder, result in zip(BAD_INPUT_COMMANDS, folders, results)}


@pytest.mark.parametrize("script, case, message", BAD_INPUT_COMMANDS)
def test_bad_input_is_one_clear_line(bad_input_results, script, case, message):
    tmp_path, result = bad_input_results[script, case]
    assert_one_error_line(result, message)
    assert not os.path.exists(tmp_path / "out")


def test_evaluate_end_to_end_on_a_tiny_run(tiny_run, tmp_path):
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    Image.fromarray(PHOTO[:50, :42]).save(folder / "colour.png")
    Image.fromarray(skimage.data.camera()[:36, :40]).save(folder / "grey.png")
    Image.fromarray(PHOTO[:206, :300]).save(folder / "large.png")  # the only one with NIQE's two 96x96 blocks
    result = cli("evaluate.py", "--checkpoint", tiny_run, "--data", folder, "--save-images")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| Tiny | 3 |" in result.stdout
    assert "Tiny: 100%" in result.stderr and " 3/3 " in result.stderr  # the progress bar, with the image count
    report = json.loads((tiny_run / "eval-3.json").read_text())["sets"]["Tiny"]
    pairs = [metrics.bicubic_pair(data.load_image(str(p))) for p in sorted(folder.iterdir())]
    expected = np.mean([metrics.sr_metrics(metrics.imresize(lr, 4), hr) for hr, lr in pairs], axis=0)
    assert (report["bicubic"]["psnr"], report["bicubic"]["ssim"]) == pytest.approx(tuple(expected))
    large_hr, large_lr = pairs[2]  # colour, grey, large
    assert report["bicubic"]["niqe"] == pytest.approx(niqe.sr_niqe(metrics.imresize(large_lr, 4)))
    assert report["hr"]["niqe"] == pytest.approx(niqe.sr_niqe(large_hr)) and report["hr"]["niqe"] < report["bicubic"]["niqe"]
    assert all(np.isfinite(report["model"][k]) for k in ("psnr", "ssim", "vgg", "niqe")) and report["model"]["vgg"] > 0
    assert (tiny_run / "eval-3.md").read_text().count("| Tiny |") == 1
    strip = np.asarray(Image.open(tiny_run / "eval-3" / "Tiny" / "colour_strip.png"))
    assert strip.shape == (2 * 48, 4 * 40, 3)
    assert Image.open(tiny_run / "eval-3" / "Tiny" / "grey_sr.png").size == (40, 36)


def test_training_wrote_the_loss_plot_and_plot_redraws_it(tiny_run):
    plot = tiny_run / "plots" / "mse_loss.png"
    assert Image.open(plot).size[0] > 100
    plot.unlink()
    result = cli("train.py", "--plot", tiny_run)
    assert result.returncode == 0, result.stderr[-2000:]
    assert plot.exists()
