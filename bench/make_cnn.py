#!/usr/bin/env python3
"""Build a ResNet-18-architecture ONNX model with seeded random weights.

Usage: python bench/make_cnn.py OUT_DIR   -> writes OUT_DIR/model.onnx

Topology follows torchvision resnet18 (about 11.7M parameters, 1.8 GFLOPs per
224x224 image), with batch norm folded into conv weight + bias as an inference
export would. Only onnx and numpy are needed, so the benchmark does not depend
on torch or on downloading pretrained weights. Input `input` [batch,3,224,224]
FP32, output `logits` [batch,1000] FP32.

Pooled features of a random ReLU net are dominated by a per-channel mean that
barely depends on the input, so every image would land in the same class. The
fc bias therefore subtracts that mean, measured on a seeded calibration batch
with onnx's reference evaluator -- what folding real BN statistics would do.
"""
import os
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

SEED = 18
# He-normal keeps the variance of each conv+ReLU roughly constant, but every
# residual Add sums two branches, so activations would double per block. Shrink
# the last conv of each residual branch so the logits stay O(1) and finite.
BRANCH_SCALE = 0.5
# Input-dependent part of the pooled features is small (~0.15 per channel on
# noise), so a larger fc gain gives logits of order 1 rather than a flat softmax.
FC_SCALE = 4.0


def weights(name, shape, fan_in, scale=1.0):
    """He-normal float32 tensor; seeded from the name so each layer is a pure function."""
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    return (rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)


def bias(name, n):
    rng = np.random.default_rng([SEED, zlib.crc32((name + ".b").encode())])
    return (rng.standard_normal(n) * 0.01).astype(np.float32)


def conv(name, x, cin, cout, k, stride, relu, scale=1.0):
    """Conv (BN folded into weight + bias), optionally followed by ReLU."""
    w = numpy_helper.from_array(weights(name, (cout, cin, k, k), cin * k * k, scale), name + ".w")
    b = numpy_helper.from_array(bias(name, cout), name + ".b")
    nodes = [helper.make_node("Conv", [x, w.name, b.name], [name], name=name, kernel_shape=[k, k],
                              strides=[stride, stride], pads=[k // 2] * 4)]
    if relu:
        nodes.append(helper.make_node("Relu", [name], [name + ".relu"], name=name + ".relu"))
    return nodes, [w, b], nodes[-1].output[0]


def basic_block(name, x, cin, cout, stride):
    """conv3x3-relu-conv3x3 + shortcut (1x1/stride conv when the shape changes), then ReLU."""
    n1, i1, y = conv(name + ".conv1", x, cin, cout, 3, stride, relu=True)
    n2, i2, y = conv(name + ".conv2", y, cout, cout, 3, 1, relu=False, scale=BRANCH_SCALE)
    nodes, inits, short = n1 + n2, i1 + i2, x
    if stride != 1 or cin != cout:
        nd, idn, short = conv(name + ".downsample", x, cin, cout, 1, stride, relu=False)
        nodes, inits = nodes + nd, inits + idn
    nodes += [helper.make_node("Add", [y, short], [name + ".add"], name=name + ".add"),
              helper.make_node("Relu", [name + ".add"], [name + ".out"], name=name + ".out")]
    return nodes, inits, name + ".out"


def resnet18(fc_bias):
    nodes, inits, x = conv("conv1", "input", 3, 64, 7, 2, relu=True)
    nodes.append(helper.make_node("MaxPool", [x], ["maxpool"], name="maxpool",
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "maxpool", 64
    for stage, cout in enumerate([64, 128, 256, 512], start=1):
        for blk in range(2):
            stride = 2 if stage > 1 and blk == 0 else 1
            nd, idn, x = basic_block(f"layer{stage}.{blk}", x, cin, cout, stride)
            nodes, inits, cin = nodes + nd, inits + idn, cout
    fc_w = numpy_helper.from_array(weights("fc", (1000, 512), 512, FC_SCALE), "fc.w")
    fc_b = numpy_helper.from_array(fc_bias, "fc.b")
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flat", axis=1),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "resnet18", inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        initializer=inits + [fc_w, fc_b])
    # ir_version 8 / opset 17: loadable by onnxruntime 1.32 and older runtimes alike.
    model = helper.make_model(graph, producer_name="vigil-bench", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def centered_fc_bias(model):
    """fc bias that cancels the mean pooled feature over a seeded noise batch."""
    x = np.random.default_rng(SEED).standard_normal((2, 3, 224, 224)).astype(np.float32)
    feats = ReferenceEvaluator(model).run(["flat"], {"input": x})[0]
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc.w"))
    # Round so BLAS-level float noise across machines cannot change the file bytes.
    return np.round(bias("fc", 1000) - w @ feats.mean(0), 3).astype(np.float32)


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} OUT_DIR")
    os.makedirs(argv[1], exist_ok=True)
    model = resnet18(centered_fc_bias(resnet18(np.zeros(1000, np.float32))))
    path = os.path.join(argv[1], "model.onnx")
    onnx.save(model, path)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"wrote {path}: {params:,} parameters, {os.path.getsize(path):,} bytes")


if __name__ == "__main__":
    main(sys.argv)
