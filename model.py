"""SRGAN (Ledig et al. 2017, arXiv:1609.04802) as one static TensorFlow-1 graph.

Read top to bottom: the layers, the networks (generator = SRResNet, discriminator), the pieces of
the optimizers (rate schedule, gradient order), then SRGANConfig and the SRGAN class, which
assembles them with the losses and summaries. Pure tf.compat.v1: variable_scope + get_variable
for weights, name_scope for a readable TensorBoard graph, explicit UPDATE_OPS for batch norm.
"""
import dataclasses
import itertools
import math

import numpy as np

from tflib import tf, tf1
from vgg16 import VGG16, stride

CONTENT_LOSSES = ("vgg", "mse", "mse+vgg")
# standard: the paper's; relativistic: the relativistic average GAN's (Jolicoeur-Martineau 2018; ESRGAN)
GAN_LOSSES = ("standard", "relativistic")
# DiffAugment's transforms of the discriminator's inputs (Zhao et al. 2020), any of them, in this order
D_AUGMENTS = ("color", "translation", "cutout")
# dense: the paper's head, one logit per image; patch: a logit per position of D's last feature map (PatchGAN)
D_HEADS = ("dense", "patch")
# fp32; bf16: TensorFlow's oneDNN bfloat16 rewrite on CPUs with AVX512_BF16 or AMX (tflib.session_config);
# mixed_float16: its float16 rewrite with dynamic loss scaling, for GPUs (the optimizers here).
# Variables and losses stay float32.
PRECISIONS = ("fp32", "bf16", "mixed_float16")
SCALE = 4  # the generator's two x2 sub-pixel steps
VGG_RESCALE = 1 / 12.75  # the paper rescales VGG features so the VGG loss is comparable to the MSE
ADV_WEIGHT = 1e-3  # the paper's weight of the adversarial loss in the perceptual loss
# The texture loss (EnhanceNet, Sajjadi et al. 2017): Gram matrices of these VGG16 layers' features over
# windows of TEXTURE_PATCH x TEXTURE_PATCH image pixels (fewer at the pooled layers), so that texture is
# matched where it is, not over the whole crop. Each layer's weight evens out the deeper layers' larger
# features: the three terms are about equal (7.6-7.9) at the T91 SRResNet's output on T91 crops.
TEXTURE_LAYERS = {"conv1_1": 1.0, "conv2_1": 1 / 6000, "conv3_1": 1 / 90000}
TEXTURE_PATCH = 16
DENSE_SHARD_BYTES = 16 << 20  # dense(): the largest row shard of a kernel
PHASES = ("pretrain", "gan", "done")
ON_BLOCKS_SCOPE = "on_blocks"  # conv2d_on_blocks's ops; bench.py counts their FLOPs by it
DENSE_KERNELS = "dense_kernels"  # the collection of dense() kernel shards, updated after all other gradients
EMA = "generator_ema"  # the generator weights' moving averages are the variables <weight name>/generator_ema


# ----------------------------------------------------------------------------- layers

def conv2d(x, filters, kernel, stride=1, name="conv", blocks=1):
    """kernel x kernel convolution with bias, SAME padding (the paper's k{kernel}n{filters}s{stride}),
    computed on blocks x blocks pixels when blocks > 1 (conv2d_on_blocks; stride 1)."""
    with tf1.variable_scope(name):
        w = tf1.get_variable("kernel", [kernel, kernel, x.shape[-1], filters])
        b = tf1.get_variable("bias", [filters], initializer=tf1.zeros_initializer())
        y = conv2d_on_blocks(x, w, blocks) if blocks > 1 else tf.nn.conv2d(x, w, stride, "SAME")
        return tf.nn.bias_add(y, b)


def conv2d_on_blocks(x, w, r):
    """tf.nn.conv2d(x, w, 1, "SAME") for an odd kernel w and x's height and width divisible by r, computed
    as a convolution of r x r blocks of pixels (space_to_depth) by a kernel rearranged from w. oneDNN pads
    a convolution's output channels to 16, so a 3-channel output wastes most of its work; on 2x2 blocks
    the same layer has 12 output channels (and a few zero taps)."""
    with tf1.name_scope(ON_BLOCKS_SCOPE):
        k, cin, cout = w.shape[0], w.shape[2], w.shape[3]
        reach = (k // 2 + r - 1) // r  # blocks the kernel reaches on each side
        taps = 2 * reach + 1
        # offset[a, p, i]: the kernel row that joins input row p of block a (relative) to output row i of block 0
        offset = r * np.arange(-reach, reach + 1)[:, None, None] + np.arange(r)[:, None] - np.arange(r) + k // 2
        inside = (offset >= 0) & (offset < k)
        rows, cols = offset[:, None, :, None, :, None], offset[None, :, None, :, None, :]
        tap = np.where(inside[:, None, :, None, :, None] & inside[None, :, None, :, None, :], rows * k + cols, k * k)
        flat = tf.concat([tf.reshape(w, [k * k, cin * cout]), tf.zeros([1, cin * cout])], 0)  # tap k*k: zeros
        blocked = tf.reshape(tf.gather(flat, tap), [taps, taps, r, r, r, r, cin, cout])  # a b p q i j cin cout
        kernel = tf.reshape(tf.transpose(blocked, [0, 1, 2, 3, 6, 4, 5, 7]), [taps, taps, r * r * cin, r * r * cout])
        return tf.nn.depth_to_space(tf.nn.conv2d(tf.nn.space_to_depth(x, r), kernel, 1, "SAME"), r)


def dense(x, units, name="dense"):
    """Fully connected layer. Its kernel is stored in row shards of at most DENSE_SHARD_BYTES (one
    checkpoint entry all the same), so that D's large first kernel can take its gradient and Adam
    update shard by shard: the whole kernel's gradient never exists."""
    with tf1.variable_scope(name):
        kernel = tf1.get_variable("kernel", [x.shape[-1], units],
                                  partitioner=tf1.variable_axis_size_partitioner(DENSE_SHARD_BYTES))
        b = tf1.get_variable("bias", [units], initializer=tf1.zeros_initializer())
        shards = list(kernel)
        if not tf1.get_variable_scope().reuse:  # once per kernel, not per call
            for w in shards:
                tf1.add_to_collection(DENSE_KERNELS, w)
        products = [tf.matmul(x_rows, w) for x_rows, w in zip(tf.split(x, [w.shape[0] for w in shards], axis=1), shards)]
        return tf.nn.bias_add(tf.add_n(products), b)


def batch_norm(x, training, name="bn", momentum=0.99, epsilon=1e-3):
    """Fused batch norm: batch statistics when training (moving averages updated through
    UPDATE_OPS, which the optimizers of this network depend on), moving averages otherwise.
    training may be a boolean tensor: where it is false, the moving averages are used and stay as they are."""
    with tf1.variable_scope(name):
        channels = x.shape[-1]
        gamma = tf1.get_variable("gamma", [channels], initializer=tf1.ones_initializer())
        beta = tf1.get_variable("beta", [channels], initializer=tf1.zeros_initializer())
        moving_mean = tf1.get_variable("moving_mean", [channels], initializer=tf1.zeros_initializer(), trainable=False)
        moving_var = tf1.get_variable("moving_variance", [channels], initializer=tf1.ones_initializer(), trainable=False)

        def frozen():
            y, _, _ = tf1.nn.fused_batch_norm(x, gamma, beta, moving_mean, moving_var, epsilon, is_training=False)
            return y, tf.identity(moving_mean), tf.identity(moving_var)

        if training is False:
            return frozen()[0]
        if training is True:
            y, mean, var = tf1.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon, is_training=True)
        else:
            y, mean, var = tf.cond(training, lambda: tf1.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon,
                                                                             is_training=True), frozen)
        for moving, batch in ((moving_mean, mean), (moving_var, var)):
            # A network called twice in one step (D on real, then on generated images) updates its
            # averages in call order, not in whatever order the threads reach them.
            earlier = "batch_norm_updates/" + moving.op.name
            with tf.control_dependencies(tf1.get_collection(earlier)):
                update = moving.assign_sub((moving - batch) * (1 - momentum))
            tf1.add_to_collection(earlier, update)
            tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update)
        return y


def prelu(x, name="prelu"):
    """Parametric ReLU with one learned slope per channel (He et al. 2015, init 0.25)."""
    with tf1.variable_scope(name):
        alpha = tf1.get_variable("alpha", [x.shape[-1]], initializer=tf1.constant_initializer(0.25))
        return prelu_op(x, alpha)


@tf.custom_gradient
def prelu_op(x, alpha):
    """x + (alpha - 1) min(x, 0), with a hand-written gradient: five elementwise passes backward where
    autodiff of max(x, 0) + alpha min(x, 0) makes nine."""
    negative = tf.minimum(x, 0.0)

    def grad(dy):
        return tf.where(x < 0.0, dy * alpha, dy), tf.reduce_sum(dy * negative, axis=list(range(len(x.shape) - 1)))
    return x + (alpha - 1.0) * negative, grad


@tf.custom_gradient
def lrelu(x):
    """LeakyReLU(0.2). Its gradient reads the output, which has the input's sign: then the conv before
    it has a single reader, which TF 2.21's remapper needs to fuse the two (it fails on the whole graph
    otherwise), and the max(x, 0.2 x) formulation's four-op gradient becomes one LeakyReluGrad."""
    y = tf.nn.leaky_relu(x, 0.2)
    return y, lambda dy: tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=0.2)


def sigmoid_cross_entropy(label, logits):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label), logits=logits))


# ----------------------------------------------------------------------------- the networks

def generator(x, blocks, training, reuse=False, getter=None):
    """SRResNet: k9n64s1 PReLU; B residual blocks (k3n64s1 BN PReLU k3n64s1 BN, + skip);
    k3n64s1 BN + long skip; 2 x (k3n256s1, sub-pixel x2, PReLU); k9n3s1; tanh. A function of its
    own, so that inference and export can build it alone (training=False: BN on its moving averages;
    a boolean tensor: batch statistics where it is true). getter: a custom getter for its variables (the moving averages of its weights)."""
    with tf1.variable_scope("generator", reuse=reuse, custom_getter=getter):
        x = prelu(conv2d(x, 64, 9, name="conv_in"), name="prelu_in")
        skip = x
        for i in range(blocks):
            with tf1.variable_scope(f"res{i}"):
                r = prelu(batch_norm(conv2d(x, 64, 3, name="conv1"), training, "bn1"))
                x = x + batch_norm(conv2d(r, 64, 3, name="conv2"), training, "bn2")
        x = skip + batch_norm(conv2d(x, 64, 3, name="conv_mid"), training, "bn_mid")
        for i in range(2):
            with tf1.variable_scope(f"upsample{i}"):
                x = prelu(tf.nn.depth_to_space(conv2d(x, 256, 3), 2))
        return tf.tanh(conv2d(x, 3, 9, name="conv_out", blocks=2))  # height and width even after the sub-pixel steps


def discriminator(x, reuse=False):
    """The convolutional part: k3n64s1 LReLU; 7 x (conv, BN, LReLU) with (n, s) below.
    Batch norm always uses batch statistics here: the discriminator only ever runs while training."""
    with tf1.variable_scope("discriminator", reuse=reuse):
        x = lrelu(conv2d(x, 64, 3, name="conv0"))
        for i, (filters, stride) in enumerate([(64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)], 1):
            x = lrelu(batch_norm(conv2d(x, filters, 3, stride, name=f"conv{i}"), True, f"bn{i}"))
        return x


def discriminator_head(features, head="dense", reuse=False):
    """The rest of the discriminator. dense: flattened; dense 1024 LReLU; dense 1: a logit per image.
    patch: the same two layers as 1x1 convolutions at each position of the feature map (a 61x61 window of
    the input, every 16 pixels): a logit per position, so texture is judged where it is. Returns the
    logits, [N, 1] or [N, h, w, 1]. Its ops go in the caller's name scope."""
    with tf1.variable_scope("discriminator", reuse=reuse, auxiliary_name_scope=False):
        if head == "patch":
            return conv2d(lrelu(conv2d(features, 1024, 1, name="patch0")), 1, 1, name="patch1")
        flat = tf.reshape(features, [-1, features.shape[1] * features.shape[2] * features.shape[3]])
        return dense(lrelu(dense(flat, 1024, "dense0")), 1, "dense1")


def d_augment(images, policy, seed):
    """DiffAugment (Zhao et al. 2020): random, differentiable transforms of the discriminator's input, drawn
    anew for x and G(z) and each image, so that a D trained on a few images cannot memorize them, while G
    still learns through them. color: brightness +-0.5, saturation x 0-2, contrast x 0.5-1.5; translation:
    a shift of up to an eighth of the side, zero-padded; cutout: a square of half the side set to 0.
    seed: [2] integers for the stateless draws (the step: a resumed run draws the same)."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    draws = itertools.count(1)  # each draw its own seed

    def uniform(minval, maxval, per_image=True, dtype=tf.float32):
        size = [batch, 1, 1, 1] if per_image else [batch]
        return tf.random.stateless_uniform(size, seed * 16 + next(draws), minval, maxval, dtype)

    x = images
    if "color" in policy:
        x = x + uniform(-0.5, 0.5)
        mean = tf.reduce_mean(x, axis=3, keepdims=True)
        x = (x - mean) * uniform(0.0, 2.0) + mean
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * uniform(0.5, 1.5) + mean
    if "translation" in policy:
        pad_h, pad_w = height // 8, width // 8
        x = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        rows = uniform(0, 2 * pad_h + 1, False, tf.int32)[:, None] + tf.range(height)
        columns = uniform(0, 2 * pad_w + 1, False, tf.int32)[:, None] + tf.range(width)
        x = tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)
    if "cutout" in policy:
        def outside(centre, side):  # [batch, side]: true outside a half-side band around centre
            return tf.abs(tf.range(side)[None] - centre[:, None]) >= side // 4
        keep = tf.logical_or(outside(uniform(0, height, False, tf.int32), height)[:, :, None],
                             outside(uniform(0, width, False, tf.int32), width)[:, None, :])
        x = x * tf.cast(keep, x.dtype)[..., None]
    return x


def grid_means(images, scale=SCALE):
    """Each image's detail (less its scale x scale box mean) averaged at each of the scale^2 positions of
    the scale-pixel grid, per channel: [batch, scale^2 * channels]. A fixed pattern repeating every
    `scale` pixels, the sub-pixel steps' checkerboard, is exactly what these averages hold
    (metrics.grid_energy measures the same on the luma of 8-bit images)."""
    detail = images - tf.nn.avg_pool2d(images, scale, 1, "SAME")
    return tf.reduce_mean(tf.nn.space_to_depth(detail, scale), axis=[1, 2])


def patch_grams(features, patch):
    """Gram matrices of the features in each patch x patch window (the edge's remainder left out), over
    the window's pixel count: [batch, rows, columns, channels, channels]."""
    channels = features.shape[-1]
    rows, columns = tf.shape(features)[1] // patch, tf.shape(features)[2] // patch
    windows = tf.nn.space_to_depth(features[:, :rows * patch, :columns * patch], patch)
    windows = tf.reshape(windows, [-1, rows, columns, patch * patch, channels])
    return tf.einsum("bijnc,bijnd->bijcd", windows, windows) / (patch * patch)


def texture_loss(phi_sr, phi_hr):
    """The texture loss of G(z)'s and x's {layer: features} (VGG16.features of TEXTURE_LAYERS): per layer, the
    mean squared difference of the rescaled features' patch_grams, weighted and summed."""
    terms = []
    with tf1.name_scope("texture"):
        for layer, weight in TEXTURE_LAYERS.items():
            patch = TEXTURE_PATCH // stride(layer)
            terms.append(weight * tf.reduce_mean(tf.square(patch_grams(phi_sr[layer] * VGG_RESCALE, patch) -
                                                           patch_grams(phi_hr[layer] * VGG_RESCALE, patch))))
        return tf.add_n(terms)


def gan_losses(logits_dx, logits_dg, logits_adv, gan_loss="standard", real_label=1.0):
    """(D's loss, G's adversarial loss) from D's logits for x and G(z), and G's own logits for G(z).
    standard: CE(real_label, D(x)) + CE(0, D(G(z))) and CE(1, D(G(z))). relativistic: each logit less
    the mean logit of the other kind, CE(real_label, real) + CE(0, fake) for D and CE(0, real) + CE(1, fake)
    for G, to which the real logits are a constant. real_label < 1: one-sided label smoothing."""
    if gan_loss == "standard":
        real, fake = logits_dx, logits_dg
        adversarial = sigmoid_cross_entropy(1.0, logits_adv)
    else:
        real, fake = logits_dx - tf.reduce_mean(logits_dg), logits_dg - tf.reduce_mean(logits_dx)
        constant = tf.stop_gradient(logits_dx)
        adversarial = (sigmoid_cross_entropy(0.0, constant - tf.reduce_mean(logits_adv)) +
                       sigmoid_cross_entropy(1.0, logits_adv - tf.reduce_mean(constant)))
    return sigmoid_cross_entropy(real_label, real) + sigmoid_cross_entropy(0.0, fake), adversarial


# ----------------------------------------------------------------------------- the optimizers

def learning_rate(config, global_step, phase):
    """The rate: config.learning_rate in the GAN phase, / 10 from config.lr_decay_step on (the paper);
    in the pre-training config.pretrain_lr (default the same), raised linearly over warmup_iters steps
    and, with cosine_iters, lowered along a half cosine to 0 at that step."""
    step = tf.cast(global_step, tf.float32)
    gan_rate = tf.constant(config.learning_rate)
    if config.lr_decay_step:
        gan_rate = tf.where(step < config.lr_decay_step, config.learning_rate, config.learning_rate * 0.1)
    pretrain_rate = tf.constant(config.pretrain_lr or config.learning_rate)
    if config.warmup_iters:
        pretrain_rate *= tf.minimum(1.0, (step + 1) / config.warmup_iters)
    if config.cosine_iters:
        pretrain_rate *= 0.5 * (1 + tf.cos(math.pi * tf.minimum(1.0, step / config.cosine_iters)))
    return tf.where(tf.equal(phase, 0), pretrain_rate, gan_rate, name="learning_rate")


def adam(config, rate, name):
    """One Adam; for mixed_float16 wrapped in dynamic loss scaling (TF's float16 graph rewrite)."""
    optimizer = tf1.train.AdamOptimizer(rate, config.beta1, name=name)
    if config.precision == "mixed_float16":
        return tf1.mixed_precision.enable_mixed_precision_graph_rewrite(optimizer)
    return optimizer


def trainable(scope):
    """The trainable variables of the network built in variable scope `scope`."""
    return tf1.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, scope + "/")


def gradients(optimizer, loss, scope):
    """(gradient, variable) pairs of the trainable variables of `scope`, the dense kernels' last: they
    come when the backward pass reads those kernels no more, so Adam updates each shard in place
    where before it would first copy it."""
    variables = trainable(scope)
    late = [v for v in variables if v in tf1.get_collection(DENSE_KERNELS)]
    # GATE_NONE: the default gating makes all gradients of an op wait for each other, which forces
    # the filter gradients of layers nobody trains (the frozen VGG16, D in G's step).
    gate = tf1.train.Optimizer.GATE_NONE
    grads = optimizer.compute_gradients(loss, [v for v in variables if v not in late], gate_gradients=gate)
    if not late:
        return grads
    with tf.control_dependencies([g for g, _ in grads]):
        return grads + optimizer.compute_gradients(loss, late, gate_gradients=gate)


def batch_norm_updates(*scopes):
    """The UPDATE_OPS of these scopes' batch norms; "discriminator" also matches its second call's "discriminator_1"."""
    return [op for scope in scopes for op in tf1.get_collection(tf1.GraphKeys.UPDATE_OPS, scope)]


# ----------------------------------------------------------------------------- the model

@dataclasses.dataclass(frozen=True)
class SRGANConfig:
    """Everything that shapes the training graph (train.model_config builds it from the flags)."""
    blocks: int = 16                  # residual blocks in the generator
    content_loss: str = "vgg"         # one of CONTENT_LOSSES
    vgg_layer: str = "conv5_3"        # the VGG16 layer whose features the VGG loss compares
    vgg_before_relu: bool = False     # compare that layer's features before its ReLU (ESRGAN), not after
    learning_rate: float = 1e-3       # the GAN phase's rate (TensorFlow's Adam default, the report's)
    beta1: float = 0.97               # Adam's beta1, all Adams
    lr_decay_step: int | None = None  # from this step on, the GAN rate / 10
    pretrain_lr: float | None = None  # the pre-training's rate (None: learning_rate)
    warmup_iters: int = 0             # pre-training rate raised linearly over this many steps
    cosine_iters: int | None = None   # pre-training rate down to 0 along a half cosine by this step
    precision: str = "fp32"           # one of PRECISIONS
    fused_gan_step: bool = False      # also build gan_train_op: D and G updated from one forward pass
    d_lr: float | None = None         # D's rate in the GAN phase, on G's schedule (None: learning_rate)
    real_label: float = 1.0           # the target of D(x) in D's loss (< 1: one-sided label smoothing)
    gan_loss: str = "standard"        # one of GAN_LOSSES
    adv_weight: float = ADV_WEIGHT    # the adversarial loss's weight in G's loss (the VGG loss's is 1)
    pixel_weight: float = 1.0         # the MSE's weight in the content loss, when content_loss has it
    g_ema: float = 0.0                # decay of a moving average of G's weights, for inference (0: none)
    freeze_g_bn: bool = False         # GAN phase: G's batch norm on its moving averages, not updated
    grid_weight: float = 0.0          # weight of the grid loss (G(z)'s grid_means against x's) in G's loss
    texture_weight: float = 0.0       # weight of the texture loss (patch_grams of TEXTURE_LAYERS) in G's loss
    d_augment: tuple = ()             # DiffAugment's transforms of D's inputs, some of D_AUGMENTS
    d_head: str = "dense"             # one of D_HEADS

    def __post_init__(self):
        if self.content_loss not in CONTENT_LOSSES:
            raise ValueError(f"content_loss must be one of {CONTENT_LOSSES}, not {self.content_loss!r}")
        if self.gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, not {self.gan_loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.d_head not in D_HEADS:
            raise ValueError(f"d_head must be one of {D_HEADS}, not {self.d_head!r}")
        if set(self.d_augment) - set(D_AUGMENTS):
            raise ValueError(f"d_augment must be some of {D_AUGMENTS}, not {self.d_augment!r}")


class SRGAN:
    """The whole training graph: generator, discriminator called twice with shared variables,
    two VGG16 towers on one frozen set of ImageNet weights, the losses, three Adam optimizers
    (MSE pre-training, generator, discriminator), a global step and a phase that live in the
    checkpoint, summaries, and a fully convolutional inference path (`lr_input` -> `sr_output`), on the
    moving average of the generator's weights when g_ema is set."""

    def __init__(self, lr, hr, config=SRGANConfig()):
        self.config = config
        self.global_step = tf1.train.get_or_create_global_step()
        self.phase = tf1.get_variable("phase", [], tf.int32, tf1.zeros_initializer(), trainable=False)
        with tf1.name_scope("phase/"):  # drawn in the phase variable's box
            self.next_phase = self.phase.assign_add(1, name="next_phase")

        self.lr, self.hr = lr, hr
        # freeze_g_bn: the GAN phase trains the generator as inference runs it, on its pre-trained moving averages
        g_training = True
        if config.freeze_g_bn:
            with tf1.name_scope("phase/"):
                g_training = tf.equal(self.phase, 0, name="pretraining")
        self.Gz = generator(lr, config.blocks, training=g_training)
        self.g_variables = tf1.global_variables("generator/")  # its weights and batch-norm statistics, no slot yet
        d_inputs = hr, self.Gz
        if config.d_augment:
            with tf1.name_scope("d_augment"):
                d_inputs = [d_augment(images, config.d_augment, tf.stack([self.global_step, tf.constant(salt, tf.int64)]))
                            for salt, images in enumerate(d_inputs)]
        features_x, features_g = discriminator(d_inputs[0]), discriminator(d_inputs[1], reuse=True)
        # D's loss applies the dense head once to both calls' features, stacked: its large kernel is
        # read once each way instead of once per call, and the kernel's gradient is one matmul.
        # TensorBoard draws it in the first call's box, and G's head in the second call's (TensorFlow
        # names it discriminator_1).
        with tf1.name_scope("discriminator/"):
            logits_dx, logits_dg = tf.split(discriminator_head(tf.concat([features_x, features_g], 0), config.d_head), 2)
            self.Dx, self.Dg = tf.sigmoid(logits_dx, name="D_x"), tf.sigmoid(logits_dg, name="D_G_z")
        with tf1.name_scope("discriminator_1/"):
            logits_adv = discriminator_head(features_g, config.d_head, reuse=True)  # G's loss needs G(z)'s alone
        self.vgg = VGG16() if "vgg" in config.content_loss or config.texture_weight else None
        self.build_losses(logits_dx, logits_dg, logits_adv)
        self.build_optimizers()
        self.build_summaries()

        with tf1.name_scope("inference"):
            self.lr_input = tf1.placeholder(tf.float32, [None, None, None, 3], name="lr_input")
            getter = self.average_getter if self.ema else None
            self.sr_output = tf.identity(generator(self.lr_input, config.blocks, training=False, reuse=True, getter=getter),
                                         name="sr_output")

    def build_losses(self, logits_dx, logits_dg, logits_adv):
        """d_loss and adv_loss (gan_losses), G's from `logits_adv`, the same logits as `logits_dg` computed
        apart; g_loss = pixel_weight * MSE + VGG loss (the terms content_loss names) + grid_weight * grid
        loss + texture_weight * texture loss + adv_weight * adv_loss. The two VGG16 towers, one for x and
        one for G(z), each give every layer a loss compares, and are drawn beside the losses, as the two
        discriminator calls are."""
        content_vgg = "vgg" in self.config.content_loss
        if self.vgg is not None:
            layer = self.config.vgg_layer
            layers = ([layer] if content_vgg else []) + (list(TEXTURE_LAYERS) if self.config.texture_weight else [])
            before_relu = [layer] if self.config.vgg_before_relu else []
            phi_hr = self.vgg.features(self.hr, layers, name="vgg_hr", before_relu=before_relu)
            phi_sr = self.vgg.features(self.Gz, layers, name="vgg_sr", before_relu=before_relu)
        with tf1.name_scope("losses"):
            d_loss, adv_loss = gan_losses(logits_dx, logits_dg, logits_adv, self.config.gan_loss,
                                            self.config.real_label)
            self.d_loss, self.adv_loss = tf.identity(d_loss, name="d_loss"), tf.identity(adv_loss, name="adv_loss")
            self.mse_loss = tf.reduce_mean(tf.square(self.Gz - self.hr), name="mse_loss")
            terms = []
            if "mse" in self.config.content_loss:
                terms.append(self.config.pixel_weight * self.mse_loss)
            if content_vgg:
                self.vgg_loss = tf.reduce_mean(tf.square(phi_sr[layer] * VGG_RESCALE - phi_hr[layer] * VGG_RESCALE),
                                               name="vgg_loss")
                terms.append(self.vgg_loss)
            if self.config.grid_weight:
                self.grid_loss = tf.reduce_mean(tf.square(grid_means(self.Gz) - grid_means(self.hr)), name="grid_loss")
                terms.append(self.config.grid_weight * self.grid_loss)
            if self.config.texture_weight:
                self.texture_loss = tf.identity(texture_loss(phi_sr, phi_hr), name="texture_loss")
                terms.append(self.config.texture_weight * self.texture_loss)
            self.content_loss = tf.add_n(terms, name="content_loss")
            self.g_loss = tf.add(self.content_loss, self.config.adv_weight * self.adv_loss, name="g_loss")

    def build_optimizers(self):
        """One Adam per job, each minimizing over its own scope's variables after that scope's
        batch-norm updates. Sharing one Adam would step its beta-power accumulators twice.
        gan_train_op, a second copy of both networks' gradients, is built only for fused_gan_step:
        an alternating run does without its memory and its clutter in TensorBoard's graph."""
        with tf1.name_scope("optimizers"):
            self.learning_rate = learning_rate(self.config, self.global_step, self.phase)
            self.d_learning_rate = self.learning_rate  # two time-scale update rule (TTUR) with d_lr
            if self.config.d_lr:
                self.d_learning_rate = tf.multiply(self.learning_rate, self.config.d_lr / self.config.learning_rate,
                                                   name="d_learning_rate")
            pretrain_adam, d_adam, g_adam = (adam(self.config, rate, name) for rate, name in (
                (self.learning_rate, "pretrain_adam"), (self.d_learning_rate, "d_adam"), (self.learning_rate, "g_adam")))
            with tf1.name_scope("pretrain"), tf.control_dependencies(batch_norm_updates("generator")):
                self.pretrain_op = pretrain_adam.apply_gradients(
                    gradients(pretrain_adam, self.mse_loss, "generator"), self.global_step)
            with tf1.name_scope("d_step"), tf.control_dependencies(batch_norm_updates("discriminator")):
                self.d_train_op = d_adam.apply_gradients(gradients(d_adam, self.d_loss, "discriminator"))
            with tf.control_dependencies([self.d_train_op]):  # D's warm-up: a step of its own, G frozen
                self.d_warmup_op = self.global_step.assign_add(1, name="d_warmup_step")
            with tf1.name_scope("g_step"), tf.control_dependencies(batch_norm_updates("generator")):
                self.g_train_op = g_adam.apply_gradients(gradients(g_adam, self.g_loss, "generator"), self.global_step)
            self.gan_train_op = None
            if self.config.fused_gan_step:
                # k = 1 in one run: both updates from one forward pass of one batch. Every gradient is
                # computed before either network changes, so G's step sees D before D's step.
                with tf1.name_scope("gan_step"):
                    d_grads = gradients(d_adam, self.d_loss, "discriminator")
                    g_grads = gradients(g_adam, self.g_loss, "generator")
                    updates = batch_norm_updates("generator", "discriminator")
                    with tf.control_dependencies(updates + [g for g, _ in d_grads + g_grads]):
                        self.gan_train_op = tf.group(d_adam.apply_gradients(d_grads),
                                                     g_adam.apply_gradients(g_grads, self.global_step))
            self.ema, self.ema_shadows = None, []
            if self.config.g_ema:
                self.build_generator_ema()

    def build_generator_ema(self):
        """A moving average of the generator's trainable weights (BasicSR's net_g_ema), for inference: a
        copy of the weights after each pre-training step, so that it starts from the pre-trained generator,
        then averaged with decay g_ema after each G step. `ema_reset` copies the weights."""
        weights = trainable("generator")
        self.ema = tf1.train.ExponentialMovingAverage(self.config.g_ema, name=EMA)
        with tf.control_dependencies([self.g_train_op]):
            self.g_train_op = self.ema.apply(weights)
        if self.gan_train_op is not None:
            with tf.control_dependencies([self.gan_train_op]):
                self.gan_train_op = self.ema.apply(weights)
        self.ema_shadows = [self.ema.average(w) for w in weights]
        with tf.control_dependencies([self.pretrain_op]):
            self.pretrain_op = tf.group(*[a.assign(w) for a, w in zip(self.ema_shadows, weights)], name=EMA + "_copy")
        self.ema_reset = tf.group(*[a.assign(w) for a, w in zip(self.ema_shadows, weights)], name=EMA + "_reset")

    def average_getter(self, getter, *args, **kwargs):
        """A custom getter giving a weight's moving average in its place (a batch norm statistic's is itself)."""
        variable = getter(*args, **kwargs)
        average = self.ema.average(variable)
        return variable if average is None else average

    def build_summaries(self):
        """Scalars of each training step and an LR | bicubic | SR | HR image strip."""
        with tf1.name_scope("summaries"):
            scalar = tf1.summary.scalar
            lr_summary = scalar("learning_rate", self.learning_rate)
            mse_summary = scalar("mse_loss", self.mse_loss)  # one tag for both phases
            self.pretrain_summary = tf1.summary.merge([mse_summary, lr_summary])
            self.mean_Dx = tf.reduce_mean(self.Dx, name="mean_D_x")
            self.mean_Dg = tf.reduce_mean(self.Dg, name="mean_D_G_z")
            self.d_summary = tf1.summary.merge([
                scalar("d_loss", self.d_loss), scalar("D_x", self.mean_Dx), scalar("D_G_z", self.mean_Dg)])
            g_scalars = [scalar("g_loss", self.g_loss), scalar("adv_loss", self.adv_loss),
                         scalar("content_loss", self.content_loss), mse_summary, lr_summary]
            if self.config.grid_weight:
                g_scalars.append(scalar("grid_loss", self.grid_loss))
            if self.config.texture_weight:
                g_scalars.append(scalar("texture_loss", self.texture_loss))
            self.g_summary = tf1.summary.merge(g_scalars)
            size = tf.shape(self.hr)[1:3]
            nearest = tf.image.resize(self.lr, size, method="nearest")
            bicubic = tf.clip_by_value(tf.image.resize(self.lr, size, method="bicubic"), -1.0, 1.0)
            strip = tf.concat([nearest, bicubic, self.Gz, self.hr], axis=2)
            self.image_summary = tf1.summary.image("lr_bicubic_sr_hr", (strip + 1.0) / 2.0, max_outputs=2)
            # How much of G's step the adversarial term is: the global norms over G's weights of the gradients
            # of G's loss's two parts, as they are weighted in it. Two more backward passes: with the images only.
            weights = trainable("generator")
            self.g_gradients = {name: tf.linalg.global_norm(tf.gradients(term, weights), name=name) for name, term in
                                (("content", self.content_loss), ("adversarial", self.config.adv_weight * self.adv_loss))}
            self.gan_image_summary = tf1.summary.merge(
                [self.image_summary] + [scalar(f"g_gradient_norm/{name}", norm) for name, norm in self.g_gradients.items()])

    def saveable_variables(self):
        """Everything except the frozen VGG16 weights, which are reloaded from their file."""
        return [v for v in tf1.global_variables() if not v.name.startswith("vgg16/")]
