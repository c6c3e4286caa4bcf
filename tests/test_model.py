"""The SRGAN graph: shared variables, optimizer scopes, batch-norm updates, shapes, checkpoints."""
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

import metrics
import model as model_module
import tflib
from model import SRGAN, SRGANConfig
from vgg16 import VGG16

tf1 = tf.compat.v1
HR, BLOCKS = 32, 2


def build(content_loss="vgg", **kwargs):
    graph = tf.Graph()
    with graph.as_default():
        lr = tf1.placeholder(tf.float32, [1, HR // 4, HR // 4, 3], name="lr")
        hr = tf1.placeholder(tf.float32, [1, HR, HR, 3], name="hr")
        model = SRGAN(lr, hr, SRGANConfig(blocks=BLOCKS, content_loss=content_loss, **kwargs))
        init = tf1.global_variables_initializer()
        saver = tf1.train.Saver(model.saveable_variables())
        graph.finalize()
    return graph, model, init, saver


@pytest.fixture(scope="module")
def built():
    return build(fused_gan_step=True)


@pytest.fixture()
def session(built, vgg_weights):
    graph, model, init, _ = built
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        model.vgg.load(sess, vgg_weights)
        yield sess


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (1, HR // 4, HR // 4, 3)).astype(np.float32), rng.uniform(-1, 1, (1, HR, HR, 3)).astype(np.float32)


def feed(model, seed=0):
    lr, hr = batch(seed)
    return {model.lr: lr, model.hr: hr}


def variables(graph, prefix):
    return {v.name: v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES) if v.name.startswith(prefix)}


def values(sess, graph, prefix):
    """Network variables of a scope (weights and BN statistics; no optimizer slots)."""
    return sess.run({n: v for n, v in variables(graph, prefix).items() if "adam" not in n.lower()})


def changed(before, after):
    return {n for n in before if not np.array_equal(before[n], after[n])}


def test_discriminator_variables_exist_once_and_both_calls_use_them(built, session):
    graph, model, _, _ = built
    names = [v.name for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)]
    d_weights = [n for n in names if n.startswith("discriminator/") and "adam" not in n]
    # conv0 (kernel, bias) + 7 x (kernel, bias, gamma, beta, moving mean, moving variance) + 2 dense x 2
    assert len(d_weights) == 2 + 7 * 6 + 4
    assert not [n for n in names if n.startswith("discriminator_1")]
    # The same image through both calls gives the same logit only if they share every weight.
    x = batch(1)[1]
    dx, dg = session.run([model.Dx, model.Dg], {model.hr: x, model.Gz: x})
    np.testing.assert_allclose(dx, dg, rtol=1e-5)
    dx2, dg2 = session.run([model.Dx, model.Dg], {model.hr: x, model.Gz: batch(2)[1]})
    assert not np.allclose(dx2, dg2)


def test_vgg_weights_exist_once_frozen_and_both_towers_read_them(built, session):
    graph, model, _, _ = built
    vgg = variables(graph, "vgg16/")
    assert len(vgg) == 26
    trainable = {v.name for v in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES)}
    assert not trainable & set(vgg)
    assert not [v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES) if "vgg_" in v.name]
    x = batch(3)[1]
    assert session.run(model.vgg_loss, {model.hr: x, model.Gz: x}) == 0
    assert session.run(model.vgg_loss, {model.hr: x, model.Gz: batch(4)[1]}) > 0


@pytest.mark.parametrize("op_name, moves, still", [
    ("d_train_op", "discriminator/", ["generator/", "vgg16/"]),
    ("d_warmup_op", "discriminator/", ["generator/", "vgg16/"]),  # --d-warmup-iters: D's alone, but a step
    ("g_train_op", "generator/", ["discriminator/", "vgg16/"]),
    ("pretrain_op", "generator/", ["discriminator/", "vgg16/"]),
])
def test_each_optimizer_updates_only_its_own_scope(built, session, op_name, moves, still):
    graph, model, _, _ = built
    before = {p: values(session, graph, p) for p in [moves] + still}
    step = session.run(model.global_step)
    session.run(getattr(model, op_name), feed(model))
    after = {p: values(session, graph, p) for p in [moves] + still}
    for prefix in still:
        assert not changed(before[prefix], after[prefix]), f"{op_name} changed {prefix}"
    moved = changed(before[moves], after[moves])
    assert any(n.endswith("kernel:0") for n in moved)
    # UPDATE_OPS ran: this network's batch-norm moving averages moved with the step.
    assert any("moving_mean" in n for n in moved) and any("moving_variance" in n for n in moved)
    assert session.run(model.global_step) == step + (op_name != "d_train_op")


def test_inference_does_not_touch_batch_norm_statistics(built, session):
    graph, model, _, _ = built
    before = values(session, graph, "generator/")
    session.run(model.sr_output, {model.lr_input: batch(5)[0]})
    assert not changed(before, values(session, graph, "generator/"))


def test_three_separate_adam_instances(built):
    graph, _, _, _ = built
    powers = sorted(v.name for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES) if "beta1_power" in v.name)
    assert len(powers) == 3, powers


@pytest.mark.parametrize("h, w", [(7, 5), (16, 16), (1, 9)])
def test_generator_is_fully_convolutional_x4_in_range(built, session, h, w):
    model = built[1]
    x = np.random.default_rng(h).uniform(-1, 1, (1, h, w, 3)).astype(np.float32) * 5
    y = session.run(model.sr_output, {model.lr_input: x})
    assert y.shape == (1, 4 * h, 4 * w, 3)
    assert y.min() >= -1 and y.max() <= 1 and y.std() > 0


def test_losses_combine_as_in_the_paper(built, session):
    model = built[1]
    g, content, adv, vgg_loss = session.run([model.g_loss, model.content_loss, model.adv_loss, model.vgg_loss], feed(model, 6))
    assert content == pytest.approx(vgg_loss)
    assert g == pytest.approx(content + 1e-3 * adv, rel=1e-5)


@pytest.mark.parametrize("pixel_weight, adv_weight, grid_weight, texture_weight",
                         [(1.0, 1e-3, 0.0, 0.0), (0.01, 5e-3, 1e3, 0.0), (0.5, 1e-3, 1e3, 0.1)])
def test_mse_plus_vgg_content_loss_with_the_terms_weights(vgg_weights, pixel_weight, adv_weight, grid_weight,
                                                           texture_weight):
    graph, model, init, _ = build("mse+vgg", pixel_weight=pixel_weight, adv_weight=adv_weight, grid_weight=grid_weight,
                                  texture_weight=texture_weight)
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        model.vgg.load(sess, vgg_weights)
        g, c, m, v, adv = sess.run([model.g_loss, model.content_loss, model.mse_loss, model.vgg_loss, model.adv_loss], feed(model))
        grid = sess.run(model.grid_loss, feed(model)) if grid_weight else 0.0
        texture = sess.run(model.texture_loss, feed(model)) if texture_weight else 0.0
    assert grid_weight == 0 or grid > 1e-6
    assert texture_weight == 0 or texture > 1e-3
    assert c == pytest.approx(pixel_weight * m + v + grid_weight * grid + texture_weight * texture, rel=1e-5)
    assert g == pytest.approx(c + adv_weight * adv, rel=1e-5)


def test_g_gradient_norms_are_those_of_g_losss_two_parts_as_weighted(vgg_weights):
    """The norms TensorBoard shows beside the images: the content part's and the adversarial part's gradient
    over G's weights, the latter times adv_weight, so their ratio is the adversarial term's say in G's step."""
    norms = {}
    for adv_weight in (0.0, 1e-3, 2e-3):
        graph = tf.Graph()
        with graph.as_default():
            tf1.set_random_seed(0)  # the same weights in each graph
            lr, hr = (tf1.placeholder(tf.float32, [1, s, s, 3]) for s in (HR // 4, HR))
            model = SRGAN(lr, hr, SRGANConfig(blocks=BLOCKS, content_loss="mse+vgg", adv_weight=adv_weight))
            init = tf1.global_variables_initializer()
        with tf1.Session(graph=graph) as sess:
            sess.run(init)
            model.vgg.load(sess, vgg_weights)
            norms[adv_weight] = sess.run(model.g_gradients, {lr: batch(5)[0], hr: batch(5)[1]})
    assert norms[0.0]["content"] > 0
    for adv_weight in (1e-3, 2e-3):  # the content part's alone: G's loss with its adversarial part would differ
        assert norms[adv_weight]["content"] == pytest.approx(norms[0.0]["content"], rel=1e-5)
    assert norms[0.0]["adversarial"] == 0 < norms[1e-3]["adversarial"]
    assert norms[2e-3]["adversarial"] == pytest.approx(2 * norms[1e-3]["adversarial"], rel=1e-4)


def test_patch_grams_are_each_windows_gram_matrix():
    features = np.random.default_rng(0).normal(size=(2, 10, 13, 3)).astype(np.float32)
    with tf1.Session(graph=tf.Graph()) as sess:
        grams = sess.run(model_module.patch_grams(tf.constant(features), 4))
    assert grams.shape == (2, 2, 3, 3, 3)  # the rows and columns past the last whole window left out
    for i in range(2):
        for j in range(3):
            window = features[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(2, 16, 3)
            np.testing.assert_allclose(grams[:, i, j], np.einsum("bnc,bnd->bcd", window, window) / 16, rtol=1e-5)


def test_texture_loss_compares_texture_where_it_is(vgg_weights):
    """Zero for the photo itself, above zero for it blurred, and for its halves swapped, whose texture over
    the whole crop is the photo's: the windows keep the texture in its place."""
    photo = skimage.data.astronaut()[200:264, 180:244].astype(np.float32) / 127.5 - 1
    blurred = metrics.imresize(metrics.imresize(((photo + 1) * 127.5).astype(np.uint8), 0.25), 4) / 127.5 - 1
    swapped = np.concatenate([photo[:, 32:], photo[:, :32]], axis=1)
    with tf.Graph().as_default():
        vgg = VGG16()
        hr, sr = (tf1.placeholder(tf.float32, [None, 64, 64, 3]) for _ in range(2))
        phi_hr, phi_sr = (vgg.features(x, list(model_module.TEXTURE_LAYERS)) for x in (hr, sr))
        texture = model_module.texture_loss(phi_sr, phi_hr)
        with tf1.Session() as sess:
            vgg.load(sess, vgg_weights)
            loss = {name: sess.run(texture, {hr: photo[None], sr: image[None].astype(np.float32)})
                    for name, image in (("same", photo), ("blurred", blurred), ("swapped", swapped))}
    assert loss["same"] == 0
    assert loss["blurred"] > 1 and loss["swapped"] > 10, loss  # one window over the whole crop: swapped 0.5


def d_augmented(images, policy, step=5):
    """d_augment's output at this step and the gradient of its sum of squares: 2 x each input pixel it keeps."""
    with tf1.Session(graph=tf.Graph()) as sess:
        x = tf.constant(images)
        y = model_module.d_augment(x, policy, tf.constant([step, 0], tf.int64))
        return sess.run([y, tf.gradients(tf.reduce_sum(tf.square(y)), x)[0]])


def assert_gradient_reaches_the_kept_pixels(out, gradient):
    np.testing.assert_allclose(np.sort(gradient.ravel()), np.sort(2 * out.ravel()), rtol=1e-6)


def test_d_augment_translation_shifts_each_image_up_to_an_eighth_of_its_side_zero_padded():
    images = np.random.default_rng(0).uniform(0.1, 1, (6, 32, 40, 3)).astype(np.float32)
    out, gradient = d_augmented(images, ("translation",))
    shifts = []
    for image, shifted in zip(images, out):
        padded = np.pad(image, ((4, 4), (5, 5), (0, 0)))
        found = [(dy, dx) for dy in range(9) for dx in range(11) if np.array_equal(padded[dy:dy + 32, dx:dx + 40], shifted)]
        assert len(found) == 1
        shifts += found
    assert len(set(shifts)) > 1  # drawn for each image
    assert_gradient_reaches_the_kept_pixels(out, gradient)


def test_d_augment_cutout_zeroes_one_square_of_up_to_half_the_side():
    images = np.random.default_rng(1).uniform(0.1, 1, (6, 32, 32, 3)).astype(np.float32)
    out, gradient = d_augmented(images, ("cutout",))
    corners = set()
    for image, cut in zip(images, out):
        rows, columns = np.nonzero((cut == 0).all(axis=2))
        assert 8 <= np.ptp(rows) + 1 <= 16 and 8 <= np.ptp(columns) + 1 <= 16  # half the side, or less at an edge
        assert (cut == 0).sum() == 3 * (np.ptp(rows) + 1) * (np.ptp(columns) + 1)  # a solid rectangle
        np.testing.assert_array_equal(cut[cut != 0], image[cut != 0])
        corners.add((rows.min(), columns.min()))
    assert len(corners) > 1
    assert_gradient_reaches_the_kept_pixels(out, gradient)


def test_d_augment_color_shifts_brightness_and_scales_contrast_of_each_image():
    """On grey images saturation changes nothing: the output is mean + b + c x (input - mean), b in [-0.5, 0.5],
    c in [0.5, 1.5], drawn for each image."""
    grey = np.repeat(np.random.default_rng(2).uniform(-1, 1, (6, 16, 16, 1)), 3, axis=3).astype(np.float32)
    out, _ = d_augmented(grey, ("color",))
    np.testing.assert_allclose(out, out[..., :1].repeat(3, axis=3), atol=1e-6)  # still grey
    centred_in, centred_out = grey - grey.mean(axis=(1, 2, 3), keepdims=True), out - out.mean(axis=(1, 2, 3), keepdims=True)
    contrast = (centred_out * centred_in).sum(axis=(1, 2, 3)) / (centred_in ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(centred_out, contrast[:, None, None, None] * centred_in, atol=1e-5)
    brightness = out.mean(axis=(1, 2, 3)) - grey.mean(axis=(1, 2, 3))
    assert np.all((0.5 <= contrast) & (contrast <= 1.5)) and np.all(np.abs(brightness) <= 0.5)
    assert np.ptp(contrast) > 0.1 and np.ptp(brightness) > 0.1


def test_d_augment_draws_from_the_step_alone():
    images = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    first, again, other = (d_augmented(images, model_module.D_AUGMENTS, step)[0] for step in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 0.1


def test_the_discriminator_sees_x_and_g_z_augmented_with_d_augment():
    """D(x) and D(G(z)) of one batch change with the step only when d_augment is on."""
    scores = {}
    for policy in ((), ("translation", "cutout")):
        graph, model, init, _ = build("mse", d_augment=policy)
        with tf1.Session(graph=graph) as sess:
            sess.run(init)
            scores[policy] = []
            for step in (0, 1):
                tflib.set_variables(sess, {model.global_step: np.int64(step)})
                scores[policy].append(np.concatenate(sess.run([model.Dx, model.Dg], feed(model))))
    np.testing.assert_array_equal(*scores[()])
    assert np.abs(np.subtract(*scores[("translation", "cutout")])).max() > 1e-4


def test_the_patch_head_gives_a_verdict_per_position_from_its_own_features():
    rng = np.random.default_rng(4)
    features = rng.normal(0, 1, (2, 3, 3, 512)).astype(np.float32)
    changed = features.copy()
    changed[1, 0, 2] += 1
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        x = tf1.placeholder(tf.float32, features.shape)
        logits = model_module.discriminator_head(x, "patch")
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            before, after = (sess.run(logits, {x: f}) for f in (features, changed))
    assert before.shape == (2, 3, 3, 1)
    moved = np.abs(after - before)[..., 0] > 1e-6
    assert moved[1, 0, 2] and moved.sum() == 1


def test_the_patch_heads_losses_average_its_verdicts_and_its_d_step_trains_it(vgg_weights):
    """With d_head="patch" D(x) is a map, HR / 16 on a side (four stride-2 convolutions), the losses the mean of
    its positions' cross-entropies, and the D step trains the 1x1 convolutions in place of the dense layers."""
    graph, model, init, _ = build("mse", d_head="patch")
    head = {n: v for n, v in variables(graph, "discriminator/patch").items() if "adam" not in n.lower()}
    assert sorted(head) == [f"discriminator/patch{i}/{w}:0" for i in (0, 1) for w in ("bias", "kernel")]
    assert not variables(graph, "discriminator/dense")
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        dx, dg, d_loss, adv_loss = sess.run([model.Dx, model.Dg, model.d_loss, model.adv_loss], feed(model))
        before = sess.run(head)
        sess.run(model.d_train_op, feed(model))
        after = sess.run(head)
    assert dx.shape == dg.shape == (1, HR // 16, HR // 16, 1)
    assert np.ptp(dx) > 1e-4  # one verdict per position, not one broadcast
    np.testing.assert_allclose(d_loss, -np.log(dx).mean() - np.log(1 - dg).mean(), rtol=1e-4)
    np.testing.assert_allclose(adv_loss, -np.log(dg).mean(), rtol=1e-4)
    assert all(np.abs(after[n] - before[n]).max() > 0 for n in head)


def test_grid_means_hold_a_pattern_repeating_every_four_pixels_at_its_positions():
    rng = np.random.default_rng(0)
    ramp = np.linspace(-0.5, 0.5, 64)
    smooth = np.broadcast_to((ramp[:, None] * ramp[None, :])[None, :, :, None], (2, 64, 64, 3)).astype(np.float32)
    tile = rng.uniform(-0.05, 0.05, (4, 4, 3)).astype(np.float32)
    with tf1.Session(graph=tf.Graph()) as sess:
        plain, gridded = sess.run([model_module.grid_means(tf.constant(smooth)),
                                   model_module.grid_means(tf.constant(smooth + np.tile(tile, (16, 16, 1))))])
    assert plain.shape == (2, 48)
    expected = (tile - tile.mean(axis=(0, 1))).reshape(48)  # space_to_depth's order: row, column, channel
    np.testing.assert_allclose(gridded - plain, np.broadcast_to(expected, (2, 48)), atol=0.1 * np.abs(tile).max())
    assert np.abs(plain - plain.mean(axis=1, keepdims=True)).max() < 0.1 * np.abs(tile).max()  # a smooth image has none


def rates(model, graph, init, steps, phase=0):
    """The learning rate before each of `steps` steps, in `phase`."""
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        for _ in range(phase):
            sess.run(model.next_phase)
        seen = []
        for _ in range(steps):
            seen.append(sess.run(model.learning_rate))
            sess.run(model.pretrain_op, feed(model))
    return seen


def test_learning_rate_decays_tenfold_at_the_decay_step_of_the_gan_phase():
    graph, model, init, _ = build("mse", learning_rate=1e-4, lr_decay_step=2)
    np.testing.assert_allclose(rates(model, graph, init, 3, phase=1), [1e-4, 1e-4, 1e-5], rtol=1e-6)
    np.testing.assert_allclose(rates(model, graph, init, 3, phase=0), [1e-4] * 3, rtol=1e-6)


def test_pretraining_rate_warms_up_then_follows_a_half_cosine_to_zero():
    graph, model, init, _ = build("mse", learning_rate=1e-4, pretrain_lr=1e-3, warmup_iters=2, cosine_iters=4)
    cosine = [0.5 * (1 + np.cos(np.pi * s / 4)) for s in range(6)]
    expected = [1e-3 * min(1, (s + 1) / 2) * cosine[min(s, 4)] for s in range(6)]
    np.testing.assert_allclose(rates(model, graph, init, 6), expected, rtol=1e-5, atol=1e-12)
    assert expected[0] == pytest.approx(5e-4) and expected[4] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(rates(model, graph, init, 2, phase=1), [1e-4] * 2, rtol=1e-6)


def test_checkpoint_round_trip_restores_step_phase_and_every_variable(tmp_path):
    graph, model, init, saver = build("mse")
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        for op in (model.pretrain_op, model.d_train_op, model.g_train_op):
            sess.run(op, feed(model))
        sess.run(model.next_phase)
        path = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=model.global_step)
        saved = sess.run({v.name: v for v in model.saveable_variables()})
    assert len(saved) > 100
    graph, model, init, saver = build("mse")
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        saver.restore(sess, path)
        restored = sess.run({v.name: v for v in model.saveable_variables()})
        assert sess.run(model.global_step) == 2 and sess.run(model.phase) == 1
    assert restored.keys() == saved.keys()
    for name in saved:
        np.testing.assert_array_equal(restored[name], saved[name], err_msg=name)


def test_fused_gan_step_is_built_only_when_asked_for(built):
    """An alternating run does without the fused step's second copy of every gradient and its memory."""
    graph, model, _, _ = build()
    assert model.gan_train_op is None
    assert not [op.name for op in graph.get_operations() if op.name.startswith("optimizers/gan_step")]
    fused_graph, fused_model, _, _ = built
    assert fused_model.gan_train_op.name.startswith("optimizers/gan_step/")
    assert len(fused_graph.get_operations()) > 1.1 * len(graph.get_operations())


def test_fused_gan_step_makes_both_alternating_updates_from_one_forward_pass(built, session, tmp_path):
    """gan_train_op = d_train_op and g_train_op from the same state and batch, in one run."""
    graph, model, _, saver = built
    start = saver.save(session, str(tmp_path / "start"))
    trained = {p: {n: v for n, v in variables(graph, p).items() if "adam" not in n.lower()}
               for p in ("discriminator/", "generator/")}

    def after(*ops):
        saver.restore(session, start)
        for op in ops:
            session.run(op, feed(model, 7))
        return {p: session.run(vs) for p, vs in trained.items()}

    fused = after(model.gan_train_op)
    alone = {"discriminator/": after(model.d_train_op)["discriminator/"], "generator/": after(model.g_train_op)["generator/"]}
    before = after()
    vgg = values(session, graph, "vgg16/")
    session.run(model.gan_train_op, feed(model, 7))
    assert not changed(vgg, values(session, graph, "vgg16/"))
    for prefix in trained:
        assert changed(before[prefix], fused[prefix])
        for name in fused[prefix]:
            # Adam's first step is lr * sign(gradient): allow the signs of near-zero gradients to differ.
            close = np.isclose(fused[prefix][name], alone[prefix][name], rtol=0, atol=1e-6)
            assert close.mean() > 0.99, name


SHARD_BYTES = 1 << 20  # D's first dense kernel at HR 32 (2048 x 1024, 8 MB) in 8 shards, as the full-size one is at 256


def test_discriminator_head_on_stacked_features_is_the_head_on_each_call(vgg_weights, monkeypatch):
    """D's loss applies the dense head once to the real and generated images' features, stacked: its
    value, D(x), D(G(z)) and its gradients for the 8 + 1 dense kernel shards are those of one head per call."""
    monkeypatch.setattr(model_module, "DENSE_SHARD_BYTES", SHARD_BYTES)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        lr, hr = (tf1.placeholder(tf.float32, [1, s, s, 3]) for s in (HR // 4, HR))
        model = SRGAN(lr, hr, SRGANConfig(blocks=BLOCKS))
        logits_dx, logits_dg = (model_module.discriminator_head(model_module.discriminator(x, reuse=True), reuse=True) for x in (hr, model.Gz))
        d_loss = model_module.sigmoid_cross_entropy(1.0, logits_dx) + model_module.sigmoid_cross_entropy(0.0, logits_dg)
        kernels = tf1.get_collection(model_module.DENSE_KERNELS)
        stacked, per_call = tf.gradients(model.d_loss, kernels), tf.gradients(d_loss, kernels)
        init = tf1.global_variables_initializer()
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        model.vgg.load(sess, vgg_weights)
        ours, theirs = sess.run(((model.d_loss, model.Dx, model.Dg, stacked), (d_loss, tf.sigmoid(logits_dx), tf.sigmoid(logits_dg), per_call)),
                                {lr: batch(3)[0], hr: batch(3)[1]})
    assert len(kernels) == 8 + 1
    for name, a, b in zip(("d_loss", "D(x)", "D(G(z))"), ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)
    assert abs(ours[1] - ours[2]).max() > 1e-4  # real and generated images apart, so a swap would show
    for kernel, a, b in zip(kernels, ours[3], theirs[3]):
        assert np.abs(a).max() > 0, kernel.name
        # Each entry sums a real and a generated image's term, which may cancel: tolerance on the array's scale.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=kernel.name)


def test_discriminator_step_takes_the_dense_kernel_gradient_shard_by_shard_after_all_other_gradients(vgg_weights, monkeypatch):
    """The D step never holds a gradient of D's whole first dense kernel: it runs one
    gradient matmul per shard, over both images at once; and each shard's update waits for every other
    gradient of D, so that the backward pass no longer reads the kernel and Adam need not copy it first."""
    monkeypatch.setattr(model_module, "DENSE_SHARD_BYTES", SHARD_BYTES)
    graph, model, init, _ = build()
    shards = [v for v in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES) if "dense0/kernel/part_" in v.op.name]
    assert len(shards) == 8 and all(w.shape.as_list() == [256, 1024] for w in shards)
    trace = tf1.RunMetadata()
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        model.vgg.load(sess, vgg_weights)
        sess.run(model.d_train_op, feed(model), options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE), run_metadata=trace)
    shapes = {n.node_name: [[d.size for d in o.tensor_description.shape.dim] for o in n.output]
              for d in trace.step_stats.dev_stats for n in d.node_stats}
    assert not [name for name, outputs in shapes.items() if [2048, 1024] in outputs]
    shard_gradients = [name for name, outputs in shapes.items()
                       if name.startswith("optimizers/d_step/") and not name.endswith("ReadVariableOp") and [256, 1024] in outputs]
    assert len(shard_gradients) == 8, shard_gradients

    updates = {op.inputs[0].op.name: op for op in graph.get_operations()
               if op.type == "ResourceApplyAdam" and op.name.startswith("optimizers/d_step/")}
    assert len(updates) == len(graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, "discriminator/"))
    late = [updates.pop(w.op.name) for w in shards] + [updates.pop("discriminator/dense1/kernel/part_0")]
    for update in late:
        before, stack = set(), [update]
        while stack:
            op = stack.pop()
            if op not in before:
                before.add(op)
                stack.extend([t.op for t in op.inputs] + list(op.control_inputs))
        assert all(other.inputs[-1].op in before for other in updates.values()), update.name


def test_checkpoint_holds_each_dense_kernel_whole_whatever_its_shards(tmp_path, monkeypatch):
    """A checkpoint written with D's first dense kernel in 8 shards has it as one 2048 x 1024 entry (and
    its Adam slots likewise), and restores into a graph that keeps the kernel in one piece."""
    monkeypatch.setattr(model_module, "DENSE_SHARD_BYTES", SHARD_BYTES)
    graph, model, init, saver = build("mse")
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        sess.run(model.d_train_op, feed(model))
        sharded = saver.save(sess, str(tmp_path / "sharded"))
    entries = dict(tf.train.list_variables(sharded))
    assert entries["discriminator/dense0/kernel"] == [2048, 1024]
    assert entries["discriminator/dense0/kernel/d_adam"] == [2048, 1024]
    assert not [name for name in entries if "part_" in name]
    monkeypatch.undo()
    graph, model, init, saver = build("mse")
    assert len([v for v in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES) if "dense0/kernel" in v.op.name]) == 1
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        saver.restore(sess, sharded)
        whole = saver.save(sess, str(tmp_path / "whole"))
    assert dict(tf.train.list_variables(whole)) == entries
    for name in entries:
        np.testing.assert_array_equal(tf.train.load_variable(whole, name), tf.train.load_variable(sharded, name), err_msg=name)


def test_lrelu_and_its_gradient_read_from_the_output():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(np.linspace(-3, 3, 61, dtype=np.float32)[np.abs(np.linspace(-3, 3, 61)) > 1e-6])
        dy = tf.constant(np.random.default_rng(0).normal(size=60).astype(np.float32))
        y = model_module.lrelu(x)
        dx, = tf.gradients(y, x, dy)
        with tf1.Session() as sess:
            x, dy, y, dx = sess.run((x, dy, y, dx))
    slope = np.where(x > 0, 1.0, 0.2)
    np.testing.assert_allclose(y, slope * x, rtol=1e-6)
    np.testing.assert_allclose(dx, slope * dy, rtol=1e-6)


def test_prelu_and_its_hand_written_gradient_are_the_textbook_ones():
    """PReLU(x) = max(x, 0) + alpha min(x, 0) per channel; d/dx = 1 or alpha; d/dalpha = the sum of dy min(x, 0)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    alpha = np.array([0.25, -0.5, 1.5, 0.0], np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf.constant(x), tf.constant(alpha)
        y = model_module.prelu_op(*inputs)
        with tf1.Session() as sess:
            y, (dx, dalpha) = sess.run((y, tf.gradients(y, inputs, dy)))
    np.testing.assert_allclose(y, np.maximum(x, 0) + alpha * np.minimum(x, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, np.where(x > 0, 1.0, alpha) * dy, rtol=1e-6)
    np.testing.assert_allclose(dalpha, (dy * np.minimum(x, 0)).sum(axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("kernel, blocks, height, width", [(9, 2, 12, 10), (3, 2, 8, 8), (9, 4, 16, 12), (5, 3, 9, 6), (1, 2, 4, 6)])
def test_convolution_on_blocks_equals_the_direct_convolution_and_its_gradients(kernel, blocks, height, width):
    rng = np.random.default_rng(kernel + blocks)
    x_value = rng.normal(size=(2, height, width, 8)).astype(np.float32)
    w_value = rng.normal(size=(kernel, kernel, 8, 3)).astype(np.float32)
    dy_value = rng.normal(size=(2, height, width, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x, w, dy = tf.constant(x_value), tf.constant(w_value), tf.constant(dy_value)
        direct = tf.nn.conv2d(x, w, 1, "SAME")
        on_blocks = model_module.conv2d_on_blocks(x, w, blocks)
        grads = [tf.gradients(y, [x, w], dy) for y in (direct, on_blocks)]
    with tf1.Session(graph=graph) as sess:
        (want, got), (want_grads, got_grads) = sess.run([(direct, on_blocks), grads])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def first_step(built, op, scope, phase=1):
    """The largest change of any weight of `scope` in a fresh session's first run of `op` in `phase`:
    Adam's first step moves a weight by its rate times gradient / (|gradient| + epsilon), so about the rate."""
    graph, model, init, _ = built
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        for _ in range(phase):
            sess.run(model.next_phase)
        before = values(sess, graph, scope)
        sess.run(op, feed(model))
        after = values(sess, graph, scope)
    return max(np.abs(after[n] - before[n]).max() for n in before if "moving_" not in n)


@pytest.mark.parametrize("d_lr", [None, 4e-4])
def test_the_discriminator_steps_at_d_lr_and_the_generator_at_lr(d_lr):
    built = build("mse", learning_rate=1e-4, d_lr=d_lr)
    model = built[1]
    assert first_step(built, model.d_train_op, "discriminator/") == pytest.approx(d_lr or 1e-4, rel=1e-3)
    assert first_step(built, model.g_train_op, "generator/") == pytest.approx(1e-4, rel=1e-3)


LOGITS_DX, LOGITS_DG = np.array([[2.0], [-1.0], [0.5]]), np.array([[-3.0], [0.2], [1.0]])
LOGITS_ADV = LOGITS_DG + 0.25  # G's own call of the head, apart from D's: other values, to tell them apart


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def cross_entropy(label, logits):
    return np.mean(-label * np.log(sigmoid(logits)) - (1 - label) * np.log(1 - sigmoid(logits)))


def run_gan_losses(**kwargs):
    """model.gan_losses of LOGITS_*: d_loss, adv_loss, and the gradients of each by the three logits (0 where none)."""
    with tf.Graph().as_default(), tf1.Session() as sess:
        logits = [tf.constant(a, tf.float32) for a in (LOGITS_DX, LOGITS_DG, LOGITS_ADV)]
        losses = model_module.gan_losses(*logits, **kwargs)
        grads = [[tf.zeros_like(z) if g is None else g for g, z in zip(tf.gradients(loss, logits), logits)] for loss in losses]
        return sess.run((*losses, grads))


@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_standard_gan_losses_train_d_toward_real_label(real_label):
    d, adv, (d_grads, adv_grads) = run_gan_losses(real_label=real_label)
    assert d == pytest.approx(cross_entropy(real_label, LOGITS_DX) + cross_entropy(0, LOGITS_DG), rel=1e-5)
    assert adv == pytest.approx(cross_entropy(1, LOGITS_ADV), rel=1e-5)
    # The gradient of a mean cross-entropy by a logit is (sigmoid(logit) - target) / n: zero at the target.
    np.testing.assert_allclose(d_grads[0], (sigmoid(LOGITS_DX) - real_label) / 3, rtol=1e-5)
    np.testing.assert_allclose(d_grads[1], sigmoid(LOGITS_DG) / 3, rtol=1e-5)
    assert not adv_grads[0].any() and not adv_grads[1].any()


def gan_losses_of(dx, dg, **settings):
    """gan_losses for the logits of these D(x) and D(G(z)), G's the same as D's."""
    with tf.Graph().as_default(), tf1.Session() as sess:
        logits = [tf.constant(np.log(p / (1 - p))) for p in (dx, dg, dg)]
        return sess.run(model_module.gan_losses(*logits, **settings))


@pytest.mark.parametrize("settings", [{"real_label": 0.9}, {"gan_loss": "relativistic"}])
def test_the_graphs_gan_losses_are_gan_losses_of_its_logits_with_its_settings(settings):
    graph, model, init, _ = build("mse", **settings)
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        # D(x)'s logit moved to 2 (from wherever the random weights put it; near 0 label smoothing hardly
        # changes the loss); D(G(z))'s moves by as much, so the two stay apart
        bias = next(v for v in graph.get_collection("variables") if v.op.name.endswith("dense1/bias"))
        dx = sess.run(model.Dx, feed(model))
        tflib.set_variables(sess, {bias: sess.run(bias) + 2.0 - np.log(dx / (1 - dx)).reshape(bias.shape)})
        losses, dx, dg = sess.run([(model.d_loss, model.adv_loss), model.Dx, model.Dg], feed(model))
        assert np.log(dx / (1 - dx)) == pytest.approx(2.0, abs=1e-3)
    np.testing.assert_allclose(losses, gan_losses_of(dx, dg, **settings), rtol=1e-4)
    assert losses[0] != pytest.approx(gan_losses_of(dx, dg)[0], rel=1e-2)  # the settings make a difference here


@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_relativistic_average_gan_losses_are_esrgans_with_the_real_logits_constant_for_g(real_label):
    d, adv, (d_grads, adv_grads) = run_gan_losses(gan_loss="relativistic", real_label=real_label)
    real, fake = LOGITS_DX - LOGITS_DG.mean(), LOGITS_DG - LOGITS_DX.mean()
    assert d == pytest.approx(cross_entropy(real_label, real) + cross_entropy(0, fake), rel=1e-5)
    assert adv == pytest.approx(cross_entropy(0, LOGITS_DX - LOGITS_ADV.mean()) + cross_entropy(1, LOGITS_ADV - LOGITS_DX.mean()), rel=1e-5)
    assert d_grads[0].any() and d_grads[1].any() and not d_grads[2].any()
    assert adv_grads[2].any() and not adv_grads[0].any() and not adv_grads[1].any()


def test_vgg_loss_compares_the_content_layers_features_before_its_relu_when_asked(vgg_weights):
    graph, model, init, _ = build("vgg", vgg_before_relu=True)
    hr, sr = batch(8)[1], batch(9)[1]
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        model.vgg.load(sess, vgg_weights)
        loss = sess.run(model.vgg_loss, {model.hr: hr, model.Gz: sr})
    with tf.Graph().as_default(), tf1.Session() as sess:
        vgg = model_module.VGG16()
        images = tf1.placeholder(tf.float32, [None, None, None, 3])
        features = vgg(images, before_relu=True), vgg(images)
        vgg.load(sess, vgg_weights)
        before, after = sess.run(features, {images: np.concatenate([hr, sr])})
    distance = {name: np.mean(np.square(f[1] - f[0])) * model_module.VGG_RESCALE ** 2 for name, f in
                (("before", before), ("after", after))}
    assert loss == pytest.approx(distance["before"], rel=1e-4)
    assert loss != pytest.approx(distance["after"], rel=1e-2)


def generator_weights(sess, model):
    """{name: (weight, its moving average)} of the generator's trainable weights."""
    weights = model.ema_shadows[0].graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, "generator/")
    return sess.run({w.op.name: (w, model.ema.average(w)) for w in weights})


def test_the_generators_moving_average_starts_from_the_pretrained_weights_then_decays():
    graph, model, init, _ = build("mse", g_ema=0.75, fused_gan_step=True)
    assert len(model.ema_shadows) == len(graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, "generator/"))
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        sess.run(model.pretrain_op, feed(model, 1))
        start = generator_weights(sess, model)
        for weight, average in start.values():
            np.testing.assert_array_equal(average, weight)  # a copy in the pre-training
        sess.run(model.next_phase)
        sess.run(model.d_train_op, feed(model, 2))
        assert generator_weights(sess, model).keys() == start.keys()
        expected = {n: w for n, (w, _) in start.items()}
        for step, op in enumerate([model.g_train_op, model.gan_train_op, model.g_train_op]):
            sess.run(op, feed(model, 3 + step))
            now = generator_weights(sess, model)
            expected = {n: 0.75 * expected[n] + 0.25 * now[n][0] for n in now}
            for name, (weight, average) in now.items():
                np.testing.assert_allclose(average, expected[name], rtol=1e-5, atol=1e-7, err_msg=name)
            assert changed(expected, {n: w for n, (w, _) in now.items()})
        sr = sess.run(model.sr_output, {model.lr_input: batch(9)[0]})
        sess.run(model.ema_reset)
        for weight, average in generator_weights(sess, model).values():
            np.testing.assert_array_equal(average, weight)
        assert not np.allclose(sr, sess.run(model.sr_output, {model.lr_input: batch(9)[0]}), atol=1e-4)


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_g_bn_trains_the_gan_phase_on_the_moving_averages_as_inference_runs(freeze):
    graph, model, init, _ = build("mse", freeze_g_bn=freeze, fused_gan_step=True)
    statistics = [v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                  if v.name.startswith("generator/") and "moving_" in v.name]
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        moving = sess.run(statistics)
        sess.run(model.pretrain_op, feed(model, 1))
        assert changed(dict(enumerate(moving)), dict(enumerate(sess.run(statistics))))  # pre-training updates them
        sess.run(model.next_phase)
        lr = feed(model, 2)[model.lr]
        moving = sess.run(statistics)
        for op in (model.g_train_op, model.gan_train_op):
            sess.run(op, feed(model, 3))
        assert bool(changed(dict(enumerate(moving)), dict(enumerate(sess.run(statistics))))) != freeze
        training_mode, inference = sess.run([model.Gz, model.sr_output], {model.lr: lr, model.lr_input: lr})
        assert np.allclose(training_mode, inference, atol=1e-6) == freeze

