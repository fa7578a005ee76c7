"""Read dlib's serialised face ResNet (``dlib_face_recognition_resnet_model_v1.dat``) with numpy.

dlib writes a network top-down: the loss layer, then each layer's version number while it
recurses into its sub-network, then, on the way back up, each layer's details (its own version
string, settings and parameter tensors) from the input layer to the output. Knowing the layer
sequence in advance (:data:`FACE_RESNET`, dlib's ``anet_type``) makes that stream easy to read:
every byte is checked against what that sequence expects, and the file must end exactly where
the sequence does. The rules come from dlib's ``serialize.h`` (integers, floats, strings),
``dnn/tensor.h`` (tensors), ``dnn/core.h`` (the layer wrappers), ``dnn/layers.h``,
``dnn/input.h`` and ``dnn/loss.h``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DlibFormatError


@dataclass(frozen=True)
class Spec:
    """One layer of the expected network, bottom (input side) first.

    ``kind``: ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``tag``,
    ``skip`` or ``fc``. ``size``, ``stride`` and ``filters`` describe convolutions and
    pooling (``size`` 0: pool over the whole map); ``tag`` is the id a tag, skip or add_prev
    layer refers to.
    """

    kind: str
    filters: int = 0
    size: int = 0
    stride: int = 1
    tag: int = 0


@dataclass
class Layer:
    """One layer as read from the file, with its parameters as float32 arrays."""

    spec: Spec
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """The layers of a dlib network (input side first) and its input layer's channel means."""

    means: tuple[float, float, float]  # red, green, blue
    input_size: int
    layers: list[Layer]


def _block(n: int, stride: int) -> list[Spec]:
    """dlib's ``block``: con(stride) affine relu con affine."""
    return [
        Spec("con", n, 3, stride),
        Spec("affine"),
        Spec("relu"),
        Spec("con", n, 3, 1),
        Spec("affine"),
    ]


def _ares(n: int) -> list[Spec]:
    """``relu<add_prev1<block<N,affine,1,tag1<...>>>>``"""
    return [Spec("tag", tag=1), *_block(n, 1), Spec("add_prev", tag=1), Spec("relu")]


def _ares_down(n: int) -> list[Spec]:
    """``relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<...>>>>>>>``"""
    return [
        Spec("tag", tag=1),
        *_block(n, 2),
        Spec("tag", tag=2),
        Spec("skip", tag=1),
        Spec("avg_pool", size=2, stride=2),
        Spec("add_prev", tag=2),
        Spec("relu"),
    ]


# dlib's anet_type (tools/python/src/face_recognition.cpp), input side first.
FACE_RESNET: tuple[Spec, ...] = (
    Spec("con", 32, 7, 2),
    Spec("affine"),
    Spec("relu"),
    Spec("max_pool", size=3, stride=2),
    *(_ares(32) * 3),
    *_ares_down(64),
    *(_ares(64) * 3),
    *_ares_down(128),
    *(_ares(128) * 2),
    *_ares_down(256),
    *(_ares(256) * 2),
    *_ares_down(256),
    Spec("avg_pool", size=0, stride=1),
    Spec("fc", 128),
)
FACE_INPUT_SIZE = 150
WRAPPERS = ("tag", "skip")  # layers with no details of their own in the stream


class _Reader:
    """dlib's primitive encodings over a byte string, with the position in every error."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def fail(self, problem: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: {problem} (at byte {self.pos:,})")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what}: it is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self, what: str, signed: bool = True) -> int:
        """One control byte (bit 7 the sign, low 4 bits the length), then little-endian bytes."""
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"{what}: not an integer (control byte {control:#04x})")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if signed and control & 0x80 else value

    def expect_int(self, what: str, allowed: tuple[int, ...]) -> int:
        value = self.integer(what)
        if value not in allowed:
            raise self.fail(f"{what}: expected {' or '.join(map(str, allowed))}, found {value}")
        return value

    def real(self, what: str) -> float:
        """A float: an int64 mantissa and an int16 exponent, mantissa * 2**exponent."""
        mantissa, exponent = self.integer(what), self.integer(what)
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return specials.get(exponent, float(np.ldexp(float(mantissa), exponent)))

    def boolean(self, what: str) -> bool:
        value = self.take(1, what)
        if value not in (b"0", b"1"):
            raise self.fail(f"{what}: expected '0' or '1', found {value!r}")
        return value == b"1"

    def text(self, what: str) -> str:
        size = self.integer(what, signed=False)
        if size > 256:
            raise self.fail(f"{what}: a {size:,}-byte name is not a dlib layer name")
        raw = self.take(size, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what}: not a dlib layer name ({raw[:20]!r})") from None

    def version(self, what: str, allowed: tuple[str, ...]) -> str:
        found = self.text(what)
        if found not in allowed:
            raise self.fail(f"{what}: expected {' or '.join(allowed)}, found {found!r}")
        return found

    def dims(self, what: str) -> tuple[int, int, int, int]:
        return tuple(self.integer(what) for _ in range(4))  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        """A resizable tensor: version 2, n/k/nr/nc, then raw little-endian float32 data."""
        self.expect_int(f"{what} version", (2,))
        shape = self.dims(what)
        if min(shape) < 0:
            raise self.fail(f"{what}: negative tensor size {shape}")
        count = int(np.prod(shape))
        raw = self.take(4 * count, f"{what} data ({count:,} floats)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """An alias tensor: version 1 and its n/k/nr/nc (its data lives in ``params``)."""
        self.expect_int(f"{what} version", (1,))
        return self.dims(what)


def _layer_details(reader: _Reader, spec: Spec, index: int) -> dict[str, np.ndarray]:
    """Read one layer's own record and return its parameters as arrays."""
    where = f"layer {index} ({spec.kind})"
    if spec.kind == "con":
        reader.version(where, ("con_4", "con_5", "con_6"))
        params = reader.tensor(f"{where} params").ravel()
        filters = reader.integer(f"{where} num_filters")
        rows, cols = reader.integer(where), reader.integer(where)
        strides = reader.integer(where), reader.integer(where)
        padding = reader.integer(where), reader.integer(where)
        expected_padding = spec.size // 2 if spec.stride == 1 else 0
        found = (filters, rows, cols, *strides, *padding)
        wanted = (
            spec.filters,
            spec.size,
            spec.size,
            spec.stride,
            spec.stride,
            *(expected_padding,) * 2,
        )
        if found != wanted:
            raise reader.fail(
                f"{where}: expected filters/size/stride/padding {wanted}, found {found}"
            )
        kernel_shape = reader.alias(f"{where} filters")
        bias_shape = reader.alias(f"{where} biases")
        for _ in range(4):
            reader.real(f"{where} multipliers")
        kernel_size = int(np.prod(kernel_shape))
        bias_size = int(np.prod(bias_shape))
        if kernel_shape[0] != filters or kernel_size + bias_size != params.size:
            raise reader.fail(f"{where}: filter shape {kernel_shape} does not fit its parameters")
        arrays = {"kernel": params[:kernel_size].reshape(kernel_shape)}
        arrays["bias"] = params[kernel_size:]
        return arrays
    if spec.kind == "affine":
        version = reader.version(where, ("affine_", "affine_2", "bn_con2"))
        if version == "bn_con2":
            return _batch_norm_as_affine(reader, where)
        params = reader.tensor(f"{where} params").ravel()
        gamma, beta = reader.alias(f"{where} gamma"), reader.alias(f"{where} beta")
        reader.integer(f"{where} mode")
        if version == "affine_2" and reader.boolean(f"{where} disabled"):
            raise reader.fail(f"{where}: a disabled affine layer is not part of this network")
        k = int(np.prod(gamma))
        if gamma != beta or params.size != 2 * k:
            raise reader.fail(f"{where}: gamma {gamma} and beta {beta} do not fit its parameters")
        return {"gamma": params[:k], "beta": params[k:]}
    if spec.kind == "relu":
        if reader.version(where, ("relu_", "relu_2")) == "relu_2" and reader.boolean(where):
            raise reader.fail(f"{where}: a disabled relu is not part of this network")
        return {}
    if spec.kind in ("max_pool", "avg_pool"):
        reader.version(where, (f"{spec.kind}_2",))
        found = tuple(reader.integer(where) for _ in range(6))
        wanted = (spec.size, spec.size, spec.stride, spec.stride, 0, 0)
        if found != wanted:
            raise reader.fail(f"{where}: expected size/stride/padding {wanted}, found {found}")
        return {}
    if spec.kind == "add_prev":
        reader.version(where, ("add_prev_",))
        return {}
    if spec.kind == "fc":
        version = reader.version(where, ("fc_2", "fc_3"))
        outputs, inputs = reader.integer(where, False), reader.integer(where, False)
        params = reader.tensor(f"{where} params").ravel()
        weights = reader.alias(f"{where} weights")
        reader.alias(f"{where} biases")
        if reader.integer(f"{where} bias mode") != 1:  # FC_NO_BIAS
            raise reader.fail(f"{where}: expected a layer without bias (fc_no_bias)")
        for _ in range(4):
            reader.real(f"{where} multipliers")
        if version == "fc_3":
            reader.boolean(f"{where} use_bias")
        if (
            outputs != spec.filters
            or params.size != inputs * outputs
            or weights[:2] != (inputs, outputs)
        ):
            raise reader.fail(f"{where}: expected {spec.filters} outputs, found {outputs}")
        return {"kernel": params.reshape(inputs, outputs)}
    raise AssertionError(spec.kind)


def _batch_norm_as_affine(reader: _Reader, where: str) -> dict[str, np.ndarray]:
    """A batch-norm record turned into the fixed scale and shift dlib's ``affine_`` uses."""
    params = reader.tensor(f"{where} params").ravel()
    gamma = reader.alias(f"{where} gamma")
    reader.alias(f"{where} beta")
    for name in ("means", "invstds"):
        reader.tensor(f"{where} {name}")
    means = reader.tensor(f"{where} running means").ravel()
    variances = reader.tensor(f"{where} running variances").ravel()
    reader.integer(f"{where} updates", False)
    reader.integer(f"{where} window", False)
    for _ in range(4):
        reader.real(f"{where} multipliers")
    eps = reader.real(f"{where} eps")
    k = int(np.prod(gamma))
    scale = params[:k] / np.sqrt(variances + eps)
    return {
        "gamma": scale.astype(np.float32),
        "beta": (params[k:] - scale * means).astype(np.float32),
    }


def _trailing_state(reader: _Reader, where: str, bottom: bool, version: int) -> None:
    """Training-time state dlib saves after each layer (flags and gradient buffers)."""
    for _ in range(3):
        reader.boolean(f"{where} state")
    reader.tensor(f"{where} x_grad")
    reader.tensor(f"{where} cached output")
    if bottom or version == 2:
        reader.tensor(f"{where} gradient")
    if bottom and version == 3:
        reader.integer(f"{where} sample expansion factor")


def read_network(
    path: str | Path,
    specs: tuple[Spec, ...] = FACE_RESNET,
    input_size: int = FACE_INPUT_SIZE,
) -> DlibNetwork:
    """The layers of dlib's metric-learning network stored at ``path``, checked against ``specs``.

    Raises :class:`DlibFormatError` naming the file and what was expected where it differs,
    is truncated, or has bytes left after the last layer.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DlibFormatError(
            f"{path}: cannot read dlib's face network ({exc.strerror or exc})"
        ) from exc
    reader = _Reader(data, str(path))
    reader.expect_int("loss layer version", (1,))
    loss = reader.version("loss layer", ("loss_metric_", "loss_metric_2"))
    if loss == "loss_metric_2":
        reader.real("loss margin")
        reader.real("loss distance threshold")
    versions: dict[int, int] = {}
    for index in range(len(specs) - 1, 0, -1):  # the wrappers, top down
        kind = specs[index].kind
        allowed = (1,) if kind in WRAPPERS else (1, 2)
        versions[index] = reader.expect_int(f"layer {index} ({kind}) wrapper version", allowed)
    versions[0] = reader.expect_int("layer 0 wrapper version", (2, 3))
    reader.version("input layer", ("input_rgb_image_sized",))
    means = tuple(reader.real("input layer channel mean") for _ in range(3))
    sizes = reader.integer("input size", False), reader.integer("input size", False)
    if sizes != (input_size, input_size):
        raise reader.fail(f"input layer: expected {input_size}x{input_size}, found {sizes}")
    layers = []
    for index, spec in enumerate(specs):
        if spec.kind in WRAPPERS:
            layers.append(Layer(spec))
            continue
        layers.append(Layer(spec, _layer_details(reader, spec, index)))
        _trailing_state(reader, f"layer {index} ({spec.kind})", index == 0, versions[index])
    if reader.pos != len(data):
        raise reader.fail(
            f"{len(data) - reader.pos:,} bytes left after the last layer: not the expected network"
        )
    for value in means:
        if not np.isfinite(value):
            raise reader.fail("input layer: a channel mean is not a number")
    return DlibNetwork(means=means, input_size=input_size, layers=layers)  # type: ignore[arg-type]
