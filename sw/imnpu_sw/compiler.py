"""A small compiler: a list of quantized layers -> descriptors and system-memory images.

:func:`compile_network` places every activation tensor in the cluster's
activation memory (ping/pong: even layers' outputs in one region, odd layers'
in the other), plans each layer (:mod:`.mapping`), and lays out one system
memory image holding the descriptor list, the weights and the parameters.
:func:`reference` runs the same network on the numpy reference.
"""

from dataclasses import dataclass, field

import numpy as np

from imnpu_ref import OperandType, conv2d, maxpool, OutputStage
from imnpu_ref.numbers import Encoding

from .mapping import (SYSTEM_WORD, ClusterGeometry, MappingError, conv_output, param_image,
                      plan_conv, weight_image)
from .tensor import pixel_words, storage_lane

__all__ = ["Conv", "Dense", "MaxPool", "Program", "compile_network", "reference",
           "encode_descriptor", "end_descriptor", "output_words", "decode_output"]


@dataclass
class _Weighted:
    """What conv and dense layers share: weights and the per-channel output stage."""
    weights: np.ndarray
    w_type: OperandType
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    out_type: object          # an OperandType or "int32"


@dataclass
class Conv(_Weighted):
    """conv2d: ``weights`` (Cout, kh, kw, Cin)."""
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    relu: bool = False


@dataclass
class Dense(_Weighted):
    """Fully connected over the whole input (HWC flattened): ``weights`` (Cout, K)."""
    relu: bool = False


@dataclass
class MaxPool:
    kernel: tuple
    stride: tuple = None


@dataclass
class Program:
    """What the host loads: one system-memory image and the tensor placement."""
    memory: dict                      # word address -> 32-bit word
    desc_addr: int
    input_base: int
    output_base: int
    output_shape: tuple
    output_type: object
    layers: list = field(default_factory=list)   # (kind, descriptor fields, mapping)


def output_words(program, act_word=SYSTEM_WORD):
    """Activation words of ``program``'s output tensor (at ``program.output_base``)."""
    return _tensor_words(program.output_shape, program.output_type, act_word)


def decode_output(program, words, act_word=SYSTEM_WORD):
    """Values of ``program``'s output tensor from its activation words."""
    from .tensor import unpack_tensor
    H, W, C = program.output_shape
    if program.output_type == "int32":
        values = [w - (1 << 32) if w >> 31 else w for w in words[:H * W * C]]
        return np.array(values, dtype=np.int64).reshape(H, W, C)
    return unpack_tensor(words, (H, W, C), program.output_type, act_word)


def _type_fields(t):
    from imnpu_hw.cluster.output_stage import OutputKind
    if t == "int32":
        return {"bits": 0, "encoding": OutputKind.RAW32.value}
    code = {Encoding.UNSIGNED: 0, Encoding.SIGNED: 1, Encoding.BIPOLAR: 2}[t.encoding]
    return {"bits": t.bits, "encoding": code}


def encode_descriptor(fields):
    """32-bit words of a descriptor given as a dict of :data:`Descriptor` fields."""
    from imnpu_hw.cluster.descriptor import DESCRIPTOR_WORDS, Descriptor
    bits = Descriptor.const(fields).as_bits()
    return [(bits >> (SYSTEM_WORD * i)) & 0xFFFFFFFF for i in range(DESCRIPTOR_WORDS)]


def end_descriptor():
    from imnpu_hw.cluster.descriptor import LayerKind
    return encode_descriptor({"kind": LayerKind.END})


def _lane_code(lane):
    from imnpu_hw.macro import LaneWidth
    return {1: LaneWidth.L1, 2: LaneWidth.L2, 4: LaneWidth.L4}[lane]


def _tensor_words(shape, t, act_word):
    H, W, C = shape
    bits = 32 if t == "int32" else storage_lane(t)
    return H * W * -(-C * bits // act_word)


def compile_network(geometry, input_shape, input_type, layers, base=0x100):
    """Compile ``layers`` for a cluster of ``geometry``; raises :class:`MappingError`."""
    from imnpu_hw.cluster.descriptor import LayerKind

    shapes, types = [tuple(input_shape)], [input_type]
    for layer in layers:
        H, W, C = shapes[-1]
        if isinstance(layer, Conv):
            cout, kh, kw, _ = np.shape(layer.weights)
            shapes.append((conv_output(H, kh, layer.stride[0], layer.padding[0]),
                           conv_output(W, kw, layer.stride[1], layer.padding[1]), cout))
            types.append(layer.out_type)
        elif isinstance(layer, Dense):
            shapes.append((1, 1, np.shape(layer.weights)[0]))
            types.append(layer.out_type)
        else:
            stride = layer.stride or layer.kernel
            shapes.append(((H - layer.kernel[0]) // stride[0] + 1,
                           (W - layer.kernel[1]) // stride[1] + 1, C))
            types.append(types[-1])
    sizes = [_tensor_words(s, t, geometry.act_word) for s, t in zip(shapes, types)]
    split = max(sizes[0::2])
    if split + max(sizes[1::2] or [0]) > geometry.act_words:
        raise MappingError(f"activations need {split + max(sizes[1::2] or [0])} words; "
                           f"the activation memory has {geometry.act_words}")
    bases = [0 if i % 2 == 0 else split for i in range(len(shapes))]

    memory = {}
    descs = []
    cursor = base + 16 * (len(layers) + 1)
    infos = []
    for i, layer in enumerate(layers):
        in_shape, in_type = shapes[i], types[i]
        fields = {
            "x_type": _type_fields(in_type), "in_h": in_shape[0], "in_w": in_shape[1],
            "cin": in_shape[2], "in_base": bases[i], "out_base": bases[i + 1],
            "in_pixel_words": pixel_words(in_shape[2], in_type, geometry.act_word),
        }
        if isinstance(layer, MaxPool):
            stride = layer.stride or layer.kernel
            fields.update(kind=LayerKind.MAXPOOL, kh=layer.kernel[0], kw=layer.kernel[1],
                          stride_h=stride[0], stride_w=stride[1], out_h=shapes[i + 1][0],
                          out_w=shapes[i + 1][1], o_type=_type_fields(in_type),
                          out_pixel_words=fields["in_pixel_words"])
            descs.append(fields)
            infos.append(("maxpool", fields, None))
            continue
        if isinstance(layer, Dense):
            cout = np.shape(layer.weights)[0]
            weights = np.asarray(layer.weights).reshape(cout, *in_shape)
            kernel, stride, padding, kind = in_shape[:2], (1, 1), (0, 0), LayerKind.DENSE
        else:
            weights = np.asarray(layer.weights)
            cout = weights.shape[0]
            kernel, stride, padding, kind = weights.shape[1:3], layer.stride, layer.padding, LayerKind.CONV
        m = plan_conv(geometry, in_shape, cout, kernel, stride, padding, layer.w_type,
                      in_type, layer.out_type)
        w_words = weight_image(geometry, m, weights, layer.w_type, in_type)
        p_words = param_image(geometry, m, layer.bias, layer.mult, layer.shift, cout)
        w_addr, cursor = cursor, cursor + len(w_words)
        p_addr, cursor = cursor, cursor + len(p_words)
        memory.update(enumerate(w_words, w_addr))
        memory.update(enumerate(p_words, p_addr))
        fields.update(
            kind=kind, relu=int(layer.relu), w_type=_type_fields(layer.w_type),
            o_type=_type_fields(layer.out_type), lane=_lane_code(m.lane), cout=cout,
            kh=kernel[0], kw=kernel[1], stride_h=stride[0], stride_w=stride[1],
            pad_h=padding[0], pad_w=padding[1], out_h=m.out_h, out_w=m.out_w,
            out_pixel_words=m.out_pixel_words, ppc=m.ppc, spp=m.spp, nch=m.nch, cpt=m.cpt,
            passes=m.passes, weights=w_addr, params=p_addr)
        descs.append(fields)
        infos.append(("dense" if isinstance(layer, Dense) else "conv", fields, m))
    for i, fields in enumerate(descs):
        memory.update(enumerate(encode_descriptor(fields), base + 16 * i))
    memory.update(enumerate(end_descriptor(), base + 16 * len(descs)))
    return Program(memory, base, bases[0], bases[-1], shapes[-1], types[-1], infos)


def reference(input_values, layers):
    """The network on the numpy reference: ``(output values, saturated)``."""
    x = np.asarray(input_values, dtype=np.int64)
    saturated = False
    for layer in layers:
        if isinstance(layer, MaxPool):
            x = maxpool(x, layer.kernel, layer.stride)
            continue
        if isinstance(layer, Dense):
            cout = np.shape(layer.weights)[0]
            w = np.asarray(layer.weights).reshape(cout, *x.shape)
            acc, sat1 = conv2d(x, w)
        else:
            acc, sat1 = conv2d(x, layer.weights, stride=layer.stride, padding=layer.padding)
        stage = OutputStage(layer.bias, layer.mult, layer.shift, relu=layer.relu,
                            out=layer.out_type)
        x, sat2 = stage.apply(acc)
        saturated |= sat1 | sat2
    return x, saturated
