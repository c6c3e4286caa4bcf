"""The command line: a short real run writes what it promises, --resume continues it, bad input is one line."""
import json
import os
import shutil
import sys
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

import infer
import tflib
import train as train_py
from conftest import ROOT, assert_one_error_line, run_in_turn, run_script
from model import EMA

tf1 = tf.compat.v1

TINY = ["--dataset", "sample", "--hr-size", "32", "--blocks", "2", "--save-every", "2", "--sample-every", "2",
        "--summary-every", "1", "--image-every", "2", "--val-every", "0"]  # validation: test_validation.py


def train(*args, cwd=ROOT):
    return run_script("train.py", *args, cwd=cwd)


def events(run_dir):
    """(has the graph, the scalar and image tags, the last step) of a run's TensorBoard files."""
    graph, tags, last = False, set(), 0
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
                graph |= bool(event.graph_def)
                tags |= {v.tag for v in event.summary.value}
                last = max(last, event.step)
    return graph, tags, last


def checkpoint_state(run_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run_dir))
    return int(reader.get_tensor("global_step")), int(reader.get_tensor("phase"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, vgg_weights):
    runs = tmp_path_factory.mktemp("runs")
    result = train(*TINY, "--pretrain-iters", "3", "--pretrain-only", "--name", "t", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr[-2000:]
    return runs / "t", result


def test_pretrain_only_writes_checkpoint_events_and_samples(pretrained):
    run_dir, result = pretrained
    assert checkpoint_state(run_dir) == (3, 1)
    graph, tags, last = events(run_dir)
    assert graph
    assert "summaries/mse_loss" in tags and "summaries/learning_rate" in tags
    assert any(t.startswith("summaries/lr_bicubic_sr_hr") for t in tags)
    assert last == 3
    grids = sorted(os.listdir(run_dir / "samples"))
    assert grids and grids[-1] == "pretrain_0000003.png"
    grid = iio.imread(run_dir / "samples" / grids[-1])
    assert grid.shape == (2 * 32, 4 * 32, 3) and grid.std() > 0  # HR row over SR row, 4 sample images
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hr_size"] == 32 and config["pretrain_only"] is True
    assert str(run_dir) in result.stdout


def test_a_copy_of_a_pretrained_run_resumes_with_the_gan_phase(pretrained):
    """As the README's Results do: the copy goes on to the GAN phase, the original stays pre-trained.
    (With the fused GAN update, which only a run that asks for it builds.)"""
    original, _ = pretrained
    run_dir = original.parent / "t-copy"
    shutil.copytree(original, run_dir)
    result = train("--name", "t-copy", "--runs-dir", str(run_dir.parent), "--resume", "--gan-iters", "2", "--gan-update", "fused")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed" in result.stdout
    assert checkpoint_state(run_dir) == (5, 2)
    assert checkpoint_state(original) == (3, 1)
    assert os.path.isfile(tf.train.latest_checkpoint(str(original)) + ".index")
    _, tags, last = events(run_dir)
    assert {"summaries/d_loss", "summaries/g_loss", "summaries/adv_loss", "summaries/content_loss",
            "summaries/D_x", "summaries/D_G_z", "summaries/mse_loss", "summaries/g_gradient_norm/content",
            "summaries/g_gradient_norm/adversarial"} <= tags
    assert not [t for t in tags if t.endswith("_1")], "a scalar written under two tags splits its curve"
    assert last == 5
    assert json.loads((run_dir / "config.json").read_text())["blocks"] == 2  # the saved config was kept
    # A finished run goes on when given more GAN iterations, and only then
    again = train("--name", "t-copy", "--runs-dir", str(run_dir.parent), "--resume", "--gan-iters", "3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "going on to step 6" in again.stdout and checkpoint_state(run_dir) == (6, 2)
    assert events(run_dir)[2] == 6


BAD_INPUTS = [
    (["--dataset", "places", "--data-dir", "/nonexistent/places"], "Places-205"),
    (["--dataset", "dogs", "--data-dir", "/nonexistent"], "Images/<synset-breed>"),
    (["--hr-size", "30"], "--hr-size"),
    (["--resume"], "--name"),
    (["--name", "nothing-here", "--resume"], "nothing to resume"),
    (["--vgg-weights", "/nonexistent/vgg16.npz"], "--fetch"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--hr-size", "big"], "--hr-size: invalid int value"),
    (["--max-bad-fraction", "2"], "--max-bad-fraction"),
    (["--pretrain-lr", "0"], "--pretrain-lr must be positive"),
    (["--d-lr", "0"], "--d-lr must be positive"),
    (["--real-label", "1.1"], "--real-label must be in (0, 1]"),
    (["--d-augment", "translation,blur"], "--d-augment takes some of color, translation, cutout, comma-separated, not blur"),
    (["--grid-weight", "-1"], "--grid-weight must not be negative"),
    (["--texture-weight", "-1"], "--texture-weight must not be negative"),
    (["--texture-weight", "0.05", "--vgg-layer", "conv2_1", "--vgg-before-relu"],
     "--vgg-before-relu with --vgg-layer conv2_1 would give the texture loss that layer before its ReLU too"),
    (["--pixel-weight", "0.01"], "--pixel-weight weights the MSE term, which --content-loss vgg leaves out"),
    (["--runs-dir", "/dev/null/runs"], "Not a directory"),
    (["--augment", "rot90,rot180"], "--augment takes some of rot90, scale, comma-separated, not rot180"),
    (["--augment", "scale", "--hr-prep", "resize"], "--augment scale downscales the photo before the crop"),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """{args: (the runs directory, the result)} of train.py on each of BAD_INPUTS, in one process."""
    runs = [tmp_path_factory.mktemp("bad") for _ in BAD_INPUTS]
    results = run_in_turn([("train.py", *TINY, "--runs-dir", folder, "--pretrain-iters", "1", *args)
                           for folder, (args, _) in zip(runs, BAD_INPUTS)])
    return {tuple(args): (folder, result) for (args, _), folder, result in zip(BAD_INPUTS, runs, results)}


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_is_one_clear_line(bad_input_results, args, message):
    runs_dir, result = bad_input_results[tuple(args)]
    assert_one_error_line(result, message)
    assert not os.listdir(runs_dir), "a failed start must leave no run directory behind"


def test_augment_reaches_the_training_pipeline(tmp_path, monkeypatch):
    given = []
    make_dataset = train_py.data.make_dataset
    monkeypatch.setattr(train_py.data, "make_dataset", lambda *a, **k: given.append(k["augment"]) or make_dataset(*a, **k))
    cfg, run_dir, _ = train_py.make_config([*TINY, "--content-loss", "mse", "--augment", "scale,rot90",
                                            "--runs-dir", str(tmp_path)])
    train_py.Trainer(cfg, run_dir).close()
    assert given == [("scale", "rot90")]


def test_a_checkpoint_of_another_architecture_is_one_clear_line(pretrained):
    run_dir, _ = pretrained
    before = sorted(os.listdir(run_dir))
    result = train("--name", "t", "--runs-dir", str(run_dir.parent), "--resume", "--blocks", "3")
    assert result.returncode == 1
    assert_one_error_line(result, "does not fit this graph (changed --blocks")
    assert sorted(os.listdir(run_dir)) == before


def test_an_existing_run_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("precious")
    result = train(*TINY, "--runs-dir", str(tmp_path), "--name", "mine", "--pretrain-iters", "1")
    assert result.returncode != 0 and "already exists" in result.stderr
    assert os.listdir(run_dir) == ["keep.txt"]


def test_default_run_name_names_the_dataset_and_preset_given(tmp_path):
    cfg, run_dir, _ = train_py.make_config(["--preset", "quick", "--dataset", "folder", "--runs-dir", str(tmp_path)])
    assert cfg["name"].startswith("folder-quick-") and cfg["preset"] == "quick"
    assert run_dir == os.path.join(str(tmp_path), cfg["name"])


def test_docs_figures_are_drawn_from_two_runs(pretrained, tmp_path):
    """docs/figures.py, which draws the README's Results figures, on the tiny run as both models."""
    run_dir, _ = pretrained
    result = run_script("docs/figures.py", "--srresnet", run_dir, "--srgan", run_dir, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    compares = sorted(tmp_path.glob("compare_*.png"))
    assert [p.name for p in compares] == ["compare_astronaut.png", "compare_chelsea.png", "compare_coffee.png", "compare_rocket.png"]
    image = iio.imread(compares[0])
    assert image.shape[1] == 4 * 3 * 128 + 3 * 8 and image.std() > 0  # bicubic | SRResNet | SRGAN | HR, 3x zoom
    assert (tmp_path / "loss_mse_loss.png").is_file()


def test_adam_slots_start_as_their_own_zeros_not_as_a_constant_kept_for_the_session():
    """With grappler's constant folding, the zero initial values of Adam's slots become constants that
    the initializer's executor keeps for the session's life, as large as the slots themselves. Seen in the
    graph the session runs (a 64 MB Const in place of the Fill), and where the CPU allocator counts its
    bytes (oneDNN's, on CPUs with AVX-512; the plain one reports 0) in the memory kept after the first step."""
    graph = tf.Graph()
    with graph.as_default():
        kernel = tf1.get_variable("kernel", [4096, 4096])  # 64 MB; smaller ones keep other buffers
        train_op = tf1.train.AdamOptimizer().minimize(tf.reduce_sum(tf.square(kernel)))
        init = tf1.global_variables_initializer()
        probe = tf1.placeholder(tf.float32, [8])
        probe_sum = tf.reduce_sum(probe * 2)
    with tf1.Session(graph=graph, config=tflib.session_config()) as sess:
        ran = tf1.RunMetadata()
        sess.run(init, options=tf1.RunOptions(output_partition_graphs=True), run_metadata=ran)
        sess.run(train_op)
        trace = tf1.RunMetadata()
        sess.run(probe_sum, {probe: np.ones(8)}, options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE), run_metadata=trace)
    constants = [[d.size for d in n.attr["value"].tensor.tensor_shape.dim] for g in ran.partition_graphs for n in g.node
                 if n.op == "Const"]
    assert [4096, 4096] not in constants
    in_use = max(m.allocator_bytes_in_use for d in trace.step_stats.dev_stats for n in d.node_stats for m in n.memory)
    assert in_use == 0 or 3 * 64 * 2 ** 20 <= in_use < 3.5 * 64 * 2 ** 20  # the kernel and its two slots


def test_g_ema_resumes_a_run_saved_without_averages_and_infer_uses_them(pretrained, tmp_path):
    """A checkpoint may lack the generator's moving averages and nothing else: they start from its weights,
    then average with the G steps; infer.py (so evaluate.py and the export) restores them in the weights' place."""
    run_dir = tmp_path / "ema"
    shutil.copytree(pretrained[0], run_dir)
    result = train("--name", "ema", "--runs-dir", str(tmp_path), "--resume", "--gan-iters", "1", "--g-ema", "0.9", "--blocks", "3")
    assert_one_error_line(result, "does not fit this graph")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir)))
    before = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    result = train("--name", "ema", "--runs-dir", str(tmp_path), "--resume", "--gan-iters", "1", "--g-ema", "0.9")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "holds no moving average" in result.stdout
    trained = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir)))
    averages = [n for n in trained.get_variable_to_shape_map() if n.endswith("/" + EMA)]
    assert len(averages) == 3 + 2 * 9 + 4 + 2 * 3 + 2  # conv_in + PReLU, 2 residual blocks, conv_mid + BN, 2 upsamplings, conv_out
    upscaler = infer.Upscaler(str(run_dir))
    with upscaler.graph.as_default():
        restored = upscaler.sess.run({v.op.name: v for v in tf1.global_variables()})
    upscaler.close()
    for average in averages:
        name = average[:-len(EMA) - 1]
        weight = trained.get_tensor(name)
        np.testing.assert_allclose(trained.get_tensor(average), 0.9 * before[name] + 0.1 * weight,
                                   rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(restored[name], trained.get_tensor(average))
    assert sum(not np.array_equal(restored[a[:-len(EMA) - 1]], trained.get_tensor(a[:-len(EMA) - 1])) for a in averages) > 10
    for name in set(restored) - {a[:-len(EMA) - 1] for a in averages}:  # batch-norm statistics: their own
        np.testing.assert_array_equal(restored[name], trained.get_tensor(name))
    own = infer.Upscaler(str(run_dir), average=False)  # docs/detail_spectrum.py --raw: the weights themselves
    with own.graph.as_default():
        restored = own.sess.run({v.op.name: v for v in tf1.global_variables()})
    own.close()
    for name in restored:
        np.testing.assert_array_equal(restored[name], trained.get_tensor(name))


def scalars(run_dir, tag):
    """{step: value} of a scalar summary in a run's TensorBoard files."""
    return {event.step: value.simple_value for name in os.listdir(run_dir) if name.startswith("events.out.tfevents")
            for event in tf1.train.summary_iterator(os.path.join(run_dir, name))
            for value in event.summary.value if value.tag == tag}


def test_d_warmup_iterations_update_d_alone_each_a_step(pretrained, tmp_path):
    run_dir = tmp_path / "warm"
    shutil.copytree(pretrained[0], run_dir)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir)))
    before = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}  # read before max_to_keep deletes it
    result = train("--name", "warm", "--runs-dir", str(tmp_path), "--resume", "--d-warmup-iters", "2", "--gan-iters", "2",
                   "--summary-every", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint_state(run_dir) == (5, 2)
    warmed = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir)))
    names = [n for n in warmed.get_variable_to_shape_map() if n.startswith(("generator/", "discriminator/")) and "adam" not in n.lower()]
    moved = {n for n in names if not np.array_equal(warmed.get_tensor(n), before[n])}
    assert any(n.startswith("discriminator/") for n in moved) and not any(n.startswith("generator/") for n in moved)
    assert sorted(scalars(run_dir, "summaries/d_loss")) == [4, 5] and not scalars(run_dir, "summaries/g_loss")


def test_the_texture_loss_compares_imagenet_features_without_the_vgg_loss(pretrained, tmp_path):
    """--content-loss mse leaves the VGG loss out; the texture loss still needs VGG16's weights loaded
    (on the zeros the variables start with, it would be 0 whatever G paints)."""
    run_dir = tmp_path / "texture"
    shutil.copytree(pretrained[0], run_dir)
    result = train("--name", "texture", "--runs-dir", str(tmp_path), "--resume", "--content-loss", "mse",
                   "--texture-weight", "0.5", "--gan-iters", "1", "--summary-every", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    (step, texture), = scalars(run_dir, "summaries/texture_loss").items()
    content, mse = (scalars(run_dir, f"summaries/{tag}")[step] for tag in ("content_loss", "mse_loss"))
    assert texture > 1e-3 and content == pytest.approx(mse + 0.5 * texture, rel=1e-4)


def test_push_spectrum_splits_power_into_its_bands():
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    import push_spectrum  # docs/, the script of docs/gan-phase.md's round 21
    y, x = np.mgrid[:64, :64]
    for name, wave in (("lr", np.cos(2 * np.pi * 3 / 64 * x)), ("octave", np.cos(2 * np.pi * 12 / 64 * y)),
                       ("finest", np.cos(2 * np.pi * 20 / 64 * (x + y))), ("corners", (-1.0) ** (x + y))):
        fractions = push_spectrum.band_fractions(np.repeat(wave[None, :, :, None], 3, axis=3))
        assert fractions[name] == pytest.approx(1, abs=1e-9), name
    noise = np.random.default_rng(0).normal(size=(2, 64, 64, 3))
    assert sum(push_spectrum.band_fractions(noise).values()) == pytest.approx(1)


def test_push_spectrum_measures_d_and_content_pushes_of_a_checkpoint(pretrained, tmp_path):
    """The adversarial push is adv_weight x adv_loss's gradient: twice the weight, twice its norm."""
    runs = []
    for weight in (1e-3, 2e-3):
        runs.append(tmp_path / str(weight))
        shutil.copytree(pretrained[0], runs[-1])
        config = json.loads((runs[-1] / "config.json").read_text())
        (runs[-1] / "config.json").write_text(json.dumps(dict(config, adv_weight=weight)))
    checkpoints = [os.path.join(run, "model.ckpt-3") for run in runs]
    result = run_script("docs/push_spectrum.py", *checkpoints)
    assert result.returncode == 0, result.stderr[-2000:]
    pushes = {}
    for line in result.stdout.splitlines():
        checkpoint, rest = line.split(": ", 1)
        name, norm = rest.split(";")[0].split(" push ")
        fractions = [float(part.split()[1]) for part in rest.split("; ")[1].split(", ")]
        assert sum(fractions) == pytest.approx(1, abs=0.003)
        pushes[checkpoint, name] = float(norm)
    assert len(pushes) == 4
    assert pushes[checkpoints[1], "adversarial"] == pytest.approx(2 * pushes[checkpoints[0], "adversarial"], rel=2e-3)
    assert pushes[checkpoints[1], "content"] == pytest.approx(pushes[checkpoints[0], "content"], rel=1e-3)
    missing = os.path.join(runs[0], "model.ckpt-9")
    assert_one_error_line(run_script("docs/push_spectrum.py", missing), f"no such run directory, checkpoint or SavedModel: {missing}")


def test_a_resumed_run_takes_up_the_data_where_it_stopped_d_warmup_included():
    """Trainer.draws: the files handed out by a step, from which a resumed input pipeline starts."""
    cfg = dict(pretrain_iters=3, d_warmup_iters=2, batch_size=4, gan_update="alternating")
    draws = [train_py.Trainer.draws(SimpleNamespace(cfg=cfg), step) for step in range(9)]
    assert draws == [0, 4, 8, 12, 16, 20, 28, 36, 44]  # 1 batch per pre-training and warm-up step, then 2
    cfg.update(d_warmup_iters=0, gan_update="fused")
    assert [train_py.Trainer.draws(SimpleNamespace(cfg=cfg), step) for step in (3, 5)] == [12, 20]
