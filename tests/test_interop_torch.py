"""kconv.interop.torch.params_from_torch: PyTorch conv weights → kconv params.

PyTorch is the oracle here: each case builds a torch module with random weights, converts
its state dict and compares kconv's output with torch's, wherever the two libraries'
padding conventions coincide (the docstring of ``params_from_torch`` says where; the
brute-force tests below check that statement). Then every error path.
"""

import contextlib
import dataclasses
import itertools
import math
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kconv
from kconv.interop.torch import layer_from_torch, layers_from_torch, params_from_torch
from tests import reference as ref
from tests.util import x64 as _x64

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
F = torch.nn.functional

TOL = dict(rtol=1e-5, atol=1e-5)
# torch warns that padding="same" with an even kernel copies the input; it is what we test.
# torch.nn.utils.weight_norm is deprecated, and its state dicts are what old checkpoints hold.
pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
              pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")]
TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_CONV_T = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
                3: torch.nn.ConvTranspose3d}
KCONV_CONV = {1: kconv.Conv1D, 2: kconv.Conv2D, 3: kconv.Conv3D}
KCONV_CONV_T = {1: kconv.Conv1DTranspose, 2: kconv.Conv2DTranspose, 3: kconv.Conv3DTranspose}
KCONV_DW = {1: kconv.DepthwiseConv1D, 2: kconv.DepthwiseConv2D}


def _seeded(module_cls, *args, seed=0, **kwargs):
    """A torch module with deterministic random weights (and a non-zero bias)."""
    torch.manual_seed(seed)
    m = module_cls(*args, **kwargs)
    if m.bias is not None:
        with torch.no_grad():
            m.bias.uniform_(-1.0, 1.0)
    return m.eval()


def _input(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _kconv_out(layer, params, x_ncx):
    """Runs ``layer`` on a torch-layout input, returns a torch-layout output."""
    if layer.data_format == "channels_first":
        return np.asarray(jax.jit(layer)(params, x_ncx))
    y = jax.jit(layer)(params, np.moveaxis(x_ncx, 1, -1))
    return np.moveaxis(np.asarray(y), -1, 1)


def _tup(v, rank):
    return (v,) * rank if isinstance(v, int) else tuple(v)


# --- forward convolution: Conv1d/2d/3d -> Conv1D/2D/3D ----------------------------------

class ConvCase(NamedTuple):
    rank: int
    cin: int
    cout: int
    k: object
    s: object = 1
    d: object = 1
    groups: int = 1
    bias: bool = True
    fmt: str = "channels_last"
    padding: str = "valid"      # kconv
    torch_padding: object = 0   # the torch padding computing the same function
    n: object = 7               # spatial size(s)


CONV_CASES = [
    ConvCase(1, 3, 4, 3),
    ConvCase(1, 4, 6, 3, s=2, groups=2, bias=False, fmt="channels_first", n=10),
    ConvCase(1, 3, 4, 5, d=2, padding="same", torch_padding=4, fmt="channels_first", n=11),
    ConvCase(1, 2, 4, 4, padding="same", torch_padding="same", n=8),  # even k: pad at end
    ConvCase(1, 3, 4, 3, s=2, padding="same", torch_padding=1, n=9),  # odd n: total pad 2
    ConvCase(1, 4, 4, 3, groups=4, padding="same", torch_padding=1, n=6),
    ConvCase(2, 3, 4, 3, padding="same", torch_padding=1, n=(6, 7)),
    ConvCase(2, 3, 4, 3, padding="same", torch_padding=1, fmt="channels_first", n=(6, 5)),
    ConvCase(2, 4, 6, (3, 2), s=(2, 1), groups=2, bias=False, fmt="channels_first",
             n=(7, 6)),
    ConvCase(2, 4, 8, 3, d=(2, 1), groups=4, padding="same", torch_padding=(2, 1),
             n=(7, 6)),
    ConvCase(2, 2, 3, (2, 3), padding="same", torch_padding="same", fmt="channels_first",
             n=(5, 6)),
    ConvCase(2, 2, 3, 3, s=2, d=2, n=(9, 10)),  # strides and dilation together
    ConvCase(2, 6, 6, 3, s=2, groups=3, padding="same", torch_padding=1, n=(7, 9)),
    ConvCase(3, 2, 3, 3, padding="same", torch_padding=1, n=(4, 5, 4)),
    ConvCase(3, 4, 2, (2, 3, 1), s=(1, 2, 1), groups=2, bias=False, fmt="channels_first",
             n=(4, 5, 3)),
    ConvCase(3, 2, 4, 3, d=(1, 2, 1), fmt="channels_first", n=(4, 6, 3)),
    ConvCase(3, 3, 2, 3, s=2, padding="same", torch_padding=1, n=(5, 3, 7)),
]


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case._asdict().items()
                    if v != case._field_defaults.get(k, object()))


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv_matches_torch(case):
    r = case.rank
    m = _seeded(TORCH_CONV[r], case.cin, case.cout, case.k, stride=case.s,
                padding=case.torch_padding, dilation=case.d, groups=case.groups,
                bias=case.bias)
    layer = KCONV_CONV[r](case.cout, case.k, strides=case.s, padding=case.padding,
                          data_format=case.fmt, dilation_rate=case.d, groups=case.groups,
                          use_bias=case.bias)
    params = params_from_torch(layer, m.state_dict(), in_channels=case.cin,
                               groups=case.groups)
    assert {k: v.shape for k, v in params.items()} == \
        {k: w.shape for k, w in layer.weights_for_channels(case.cin).items()}
    assert all(v.dtype == jnp.float32 for v in params.values())
    x = _input((2, case.cin) + _tup(case.n, r))
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(m, x), **TOL)


# --- transposed convolution: ConvTranspose1d/2d/3d -> Conv1D/2D/3DTranspose ----------------

class TransposeCase(NamedTuple):
    rank: int
    cin: int
    cout: int
    k: object
    s: object = 1
    d: object = 1
    bias: bool = True
    fmt: str = "channels_last"
    padding: str = "valid"        # kconv
    output_padding: object = None  # kconv
    torch_padding: object = 0
    torch_output_padding: object = 0
    n: object = 5
    groups: int = 1               # torch (kconv gets the block-diagonal kernel)


TRANSPOSE_CASES = [
    TransposeCase(1, 3, 4, 3, s=2),
    TransposeCase(1, 2, 3, 2, s=3, torch_output_padding=1, fmt="channels_first"),  # op=None
    TransposeCase(1, 2, 3, 3, s=2, output_padding=1, torch_output_padding=1, bias=False),
    TransposeCase(1, 3, 2, 3, s=1, padding="same", torch_padding=1),
    TransposeCase(1, 2, 3, 3, s=2, d=2, n=4, fmt="channels_first"),
    TransposeCase(1, 2, 2, 3, s=1, d=2, padding="same", torch_padding=2),
    TransposeCase(1, 2, 3, 2, s=3, padding="same", torch_output_padding=1),  # k_eff < s
    TransposeCase(2, 3, 4, 4, s=2, padding="same", torch_padding=1),  # the DCGAN layer
    TransposeCase(2, 3, 4, 4, s=2, padding="same", torch_padding=1, fmt="channels_first",
                  bias=False, n=(3, 4)),
    TransposeCase(2, 2, 3, 3, s=2, padding="same", output_padding=0, torch_padding=1,
                  n=(4, 3)),
    TransposeCase(2, 2, 3, (4, 3), s=(2, 1), padding="same", torch_padding=(1, 1),
                  fmt="channels_first", n=(3, 5)),
    TransposeCase(2, 3, 2, (2, 3), s=(2, 3), output_padding=(1, 2), torch_output_padding=(1, 2),
                  n=(3, 2)),
    TransposeCase(3, 2, 3, 3, s=(1, 2, 2), n=(3, 2, 3), fmt="channels_first"),
    TransposeCase(3, 2, 2, 3, padding="same", torch_padding=1, n=(3, 4, 2)),
    TransposeCase(3, 2, 3, 4, s=2, padding="same", torch_padding=1, bias=False, n=(2, 3, 2)),
    # groups: kconv's transposed layers have none; the kernel is block-diagonal.
    TransposeCase(1, 4, 6, 3, s=2, groups=2),
    TransposeCase(2, 6, 3, 4, s=2, padding="same", torch_padding=1, groups=3,
                  fmt="channels_first", n=(3, 4)),
    TransposeCase(2, 4, 8, 3, padding="same", torch_padding=1, groups=4, bias=False),
    TransposeCase(3, 4, 4, 2, s=2, groups=2, n=(2, 3, 2)),
]


def _transpose_pair(case, **layer_kwargs):
    """The torch module of a TransposeCase and the kconv layer of the same arguments."""
    r = case.rank
    m = _seeded(TORCH_CONV_T[r], case.cin, case.cout, case.k, stride=case.s,
                padding=case.torch_padding, output_padding=case.torch_output_padding,
                dilation=case.d, groups=case.groups, bias=case.bias)
    layer = KCONV_CONV_T[r](case.cout, case.k, strides=case.s, padding=case.padding,
                            output_padding=case.output_padding, data_format=case.fmt,
                            dilation_rate=case.d, use_bias=case.bias, **layer_kwargs)
    return m, layer


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_case_id)
def test_conv_transpose_matches_torch(case):
    r = case.rank
    m, layer = _transpose_pair(case)
    params = params_from_torch(layer, m.state_dict(),
                               groups=case.groups if case.groups > 1 else None)
    assert params["kernel"].shape == _tup(case.k, r) + (case.cout, case.cin)
    x = _input((2, case.cin) + _tup(case.n, r))
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(m, x), **TOL)


GROUPED_TRANSPOSE_CASES = [case for case in TRANSPOSE_CASES if case.groups > 1] + [
    # depthwise-transposed (groups == in_channels): one and two filters per group, the
    # second strided and dilated
    TransposeCase(2, 4, 4, 4, s=2, padding="same", torch_padding=1, groups=4, n=(3, 4)),
    TransposeCase(1, 6, 12, 3, s=3, d=2, groups=6, fmt="channels_first", n=4),
]


@pytest.mark.parametrize("case", GROUPED_TRANSPOSE_CASES, ids=_case_id)
def test_grouped_conv_transpose_matches_torch(case):
    """A grouped ConvTranspose loads into a grouped layer as is: kernel (*k, out // g, in)."""
    m, layer = _transpose_pair(case, groups=case.groups)
    params = params_from_torch(layer, m.state_dict(), groups=case.groups,
                               in_channels=case.cin)
    kernel = m.weight.detach().numpy()
    np.testing.assert_array_equal(params["kernel"], np.moveaxis(
        kernel, (0, 1), (-1, -2)))  # (in, out // g, *k) -> (*k, out // g, in)
    assert params_from_torch(layer, m.state_dict())["kernel"].shape == params["kernel"].shape
    x = _input((2, case.cin) + _tup(case.n, case.rank))
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(m, x), **TOL)


def test_grouped_transpose_groups_must_match_the_layer():
    m = _seeded(torch.nn.ConvTranspose1d, 4, 8, 3, groups=4, bias=False)
    layer = kconv.Conv1DTranspose(8, 3, use_bias=False, groups=2)
    with pytest.raises(ValueError, match=r"Conv1DTranspose\(filters=8, kernel_size=\(3,\), "
                                         r"groups=2\): the torch module has groups=4 but the "
                                         r"layer has groups=2"):
        params_from_torch(layer, m.state_dict(), groups=4)
    with pytest.raises(ValueError, match=r"out_channels // groups = 2, which with groups=2 "
                                         r"gives 4 output channels.*expected \(in, 4, 3\)"):
        params_from_torch(layer, m.state_dict())


def test_grouped_transpose_kernel_is_block_diagonal():
    m = _seeded(torch.nn.ConvTranspose1d, 6, 4, 3, groups=2, bias=False)
    kernel = np.asarray(params_from_torch(kconv.Conv1DTranspose(4, 3, use_bias=False),
                                          m.state_dict(), groups=2)["kernel"])
    w = m.weight.detach().numpy()  # (in=6, out // groups=2, k=3)
    assert kernel.shape == (3, 4, 6)
    np.testing.assert_array_equal(kernel[:, :2, :3], w[:3].transpose(2, 1, 0))
    np.testing.assert_array_equal(kernel[:, 2:, 3:], w[3:].transpose(2, 1, 0))
    assert not kernel[:, :2, 3:].any() and not kernel[:, 2:, :3].any()


def test_transpose_kernel_is_not_flipped():
    """Both libraries' transposed conv is the VJP of the forward conv with the same
    kernel, so the conversion must not reverse the taps: the flipped kernel is wrong."""
    m = _seeded(torch.nn.ConvTranspose1d, 2, 3, 3, stride=2, bias=False)
    layer = kconv.Conv1DTranspose(3, 3, strides=2, use_bias=False,
                                  data_format="channels_first")
    params = params_from_torch(layer, m.state_dict())
    x = _input((1, 2, 5))
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(m, x), **TOL)
    flipped = {"kernel": params["kernel"][::-1]}
    assert not np.allclose(_kconv_out(layer, flipped, x), _torch_out(m, x), atol=1e-3)


def test_transpose_is_vjp_of_converted_forward_conv():
    """The same torch weight, read as a forward Conv1d (out=in, swapped) and as a
    ConvTranspose1d, gives kconv layers that are each other's transpose."""
    m = _seeded(torch.nn.ConvTranspose1d, 3, 2, 4, stride=2, bias=False)
    w = m.weight.detach().numpy()  # (3, 2, 4): also an nn.Conv1d(2, 3, 4) weight
    fwd = kconv.Conv1D(3, 4, strides=2, use_bias=False)
    bwd = kconv.Conv1DTranspose(2, 4, strides=2, use_bias=False)
    pf = params_from_torch(fwd, {"weight": w})
    pb = params_from_torch(bwd, {"weight": w})
    x = jnp.asarray(_input((1, 10, 2)))
    y, vjp = jax.vjp(lambda v: fwd(pf, v), x)
    ct = jnp.asarray(_input(y.shape, seed=3))
    np.testing.assert_allclose(vjp(ct)[0], bwd(pb, ct), **TOL)


# --- depthwise: Conv1d/2d(groups=in_channels) -> DepthwiseConv1D/2D --------------------------

@pytest.mark.parametrize("rank,channels,dm,k,s,d,bias,fmt,padding,torch_padding,n", [
    (1, 3, 1, 3, 1, 1, True, "channels_last", "valid", 0, 8),
    (1, 3, 2, 3, 1, 2, True, "channels_first", "same", 2, 9),
    (1, 2, 3, 4, 2, 1, False, "channels_last", "valid", 0, 9),
    (2, 3, 1, 3, 1, 1, True, "channels_first", "same", 1, (6, 5)),
    (2, 3, 2, (3, 2), (2, 1), 1, True, "channels_last", "valid", 0, (7, 6)),
    (2, 4, 2, 3, 1, (1, 2), False, "channels_first", "same", (1, 2), (5, 6)),
])
def test_depthwise_matches_torch(rank, channels, dm, k, s, d, bias, fmt, padding,
                                 torch_padding, n):
    m = _seeded(TORCH_CONV[rank], channels, channels * dm, k, stride=s,
                padding=torch_padding, dilation=d, groups=channels, bias=bias)
    layer = KCONV_DW[rank](k, strides=s, padding=padding, depth_multiplier=dm,
                           data_format=fmt, dilation_rate=d, use_bias=bias)
    params = params_from_torch(layer, m.state_dict(), groups=channels, in_channels=channels)
    assert params["kernel"].shape == _tup(k, rank) + (channels, dm)
    # kconv output channel c * dm + m is input channel c with kernel[..., c, m].
    w = m.weight.detach().numpy()  # (C * dm, 1, *k)
    np.testing.assert_array_equal(np.asarray(params["kernel"]).reshape(-1, channels, dm),
                                  w.reshape(channels, dm, -1).transpose(2, 0, 1))
    x = _input((2, channels) + _tup(n, rank))
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(m, x), **TOL)


# --- the padding statements of the docstring, checked by brute force (1-D, float64) ----------
# Keras's side is the float64 NumPy reference of Keras semantics (tests/reference.py, which
# kconv is checked against elsewhere); compiling a kconv conv per grid point would take
# minutes. The cross-section above runs kconv itself on the cases found here.

def _t64(a):
    return torch.from_numpy(np.asarray(a, np.float64))


def test_forward_same_padding_rule():
    """``same`` == torch ``padding=P // 2`` iff the total pad ``P`` is even, else no
    integer padding; at stride 1 it is always torch's ``padding="same"``."""
    rng = np.random.default_rng(0)
    for k, s, d, n in itertools.product(range(1, 6), (1, 2, 3), (1, 2), (5, 6, 7, 8)):
        w = rng.standard_normal((2, 2, k))  # torch (out, in, k)
        x = rng.standard_normal((1, 2, n))
        y = ref.conv(x, w.transpose(2, 1, 0), s, "same", "channels_first", d)
        k_eff = d * (k - 1) + 1
        found = []
        for p in range(k_eff):
            if n + 2 * p < k_eff:
                continue
            yt = F.conv1d(_t64(x), _t64(w), stride=s, padding=p, dilation=d).numpy()
            if yt.shape == y.shape and np.allclose(yt, y, rtol=1e-10, atol=1e-10):
                found.append(p)
        total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
        assert found == ([total // 2] if total % 2 == 0 else []), (k, s, d, n, found)
        if s == 1:  # torch's padding="same" also puts the odd pad at the end
            yt = F.conv1d(_t64(x), _t64(w), padding="same", dilation=d).numpy()
            np.testing.assert_allclose(yt, y, rtol=1e-10, atol=1e-10)


def _documented_transpose_equivalent(k, s, d, padding, op):
    """The torch (padding, output_padding) the docstring names for a kconv transposed
    conv, or None where it says there is none."""
    k_eff = d * (k - 1) + 1
    if padding == "valid":
        return 0, (max(k_eff, s) - k_eff if op is None else op)
    if op == 0:
        return k_eff // 2, 0
    assert op is None
    if k_eff >= s and (k_eff - s) % 2 == 0:
        return (k_eff - s) // 2, 0
    if k_eff <= s:
        return 0, s - k_eff
    return None


def test_transpose_padding_rule():
    """Every torch (padding, output_padding) that reproduces a Keras transposed conv, found
    by search, is exactly the one the docstring names (or none where it says none)."""
    rng = np.random.default_rng(0)
    n = 4
    for k, s, d in itertools.product(range(1, 6), (1, 2, 3), (1, 2)):
        w = rng.standard_normal((2, 2, k))  # torch (in, out, k)
        x = rng.standard_normal((1, 2, n))
        k_eff = d * (k - 1) + 1
        modes = [("valid", None), ("same", None), ("same", 0)] + [("valid", o) for o in range(s)]
        for padding, op in modes:
            y = ref.conv_transpose(x, w.transpose(2, 1, 0), s, padding, op, "channels_first", d)
            found = []
            for p, op_t in itertools.product(range(k_eff), range(max(s, d))):
                if (n - 1) * s - 2 * p + k_eff + op_t <= 0:
                    continue
                yt = F.conv_transpose1d(_t64(x), _t64(w), stride=s, padding=p,
                                        output_padding=op_t, dilation=d).numpy()
                if yt.shape == y.shape and np.allclose(yt, y, rtol=1e-10, atol=1e-10):
                    found.append((p, op_t))
            expected = _documented_transpose_equivalent(k, s, d, padding, op)
            assert found == ([] if expected is None else [expected]), \
                (k, s, d, padding, op, found)


def test_transpose_same_k3_s2_is_shifted_from_torch_p1_op1():
    """The usual torch recipe for a 2x upsampling (k=3, s=2, padding=1, output_padding=1)
    has Keras ``same``'s length but is shifted by one position (see the docstring)."""
    m = _seeded(torch.nn.ConvTranspose1d, 2, 3, 3, stride=2, padding=1, output_padding=1)
    layer = kconv.Conv1DTranspose(3, 3, strides=2, padding="same",
                                  data_format="channels_first")
    params = params_from_torch(layer, m.state_dict())
    x = _input((1, 2, 5))
    y, yt = _kconv_out(layer, params, x), _torch_out(m, x)
    assert y.shape == yt.shape == (1, 3, 10)
    assert not np.allclose(y, yt, atol=1e-3)
    np.testing.assert_allclose(y[..., 1:], yt[..., :-1], **TOL)


def test_any_torch_transpose_padding_is_valid_then_crop():
    for p, op_t, s in [(1, 1, 2), (2, 0, 3), (1, 0, 1), (3, 2, 3)]:
        m = _seeded(torch.nn.ConvTranspose2d, 2, 3, 4, stride=s, padding=p,
                    output_padding=op_t)
        layer = kconv.Conv2DTranspose(3, 4, strides=s, output_padding=op_t,
                                      data_format="channels_first")
        params = params_from_torch(layer, m.state_dict())
        x = _input((1, 2, 4, 3))
        y = _kconv_out(layer, params, x)[..., p:-p or None, p:-p or None]
        np.testing.assert_allclose(y, _torch_out(m, x), **TOL)


def test_strided_symmetric_padding_via_ops_conv():
    """Strided torch convs whose symmetric padding Keras ``same`` cannot express run
    exactly through kconv.ops.conv with explicit (p, p) pads plus the bias."""
    m = _seeded(torch.nn.Conv2d, 3, 4, 3, stride=2, padding=1)
    layer = kconv.Conv2D(4, 3, strides=2, padding="same")
    params = params_from_torch(layer, m.state_dict())
    x = _input((2, 3, 8, 8))  # even n: Keras pads (0, 1), torch (1, 1)
    assert not np.allclose(_kconv_out(layer, params, x), _torch_out(m, x), atol=1e-3)
    y = kconv.ops.conv(x, params["kernel"], strides=2, padding=((1, 1), (1, 1)),
                       data_format="channels_first") + params["bias"].reshape(-1, 1, 1)
    np.testing.assert_allclose(np.asarray(y), _torch_out(m, x), **TOL)


def test_causal_is_left_pad_then_valid():
    m = _seeded(torch.nn.Conv1d, 2, 3, 3, dilation=2)
    layer = kconv.Conv1D(3, 3, padding="causal", dilation_rate=2, data_format="channels_first")
    params = params_from_torch(layer, m.state_dict())
    x = _input((2, 2, 9))
    with torch.no_grad():
        yt = m(F.pad(torch.from_numpy(x), (4, 0))).numpy()
    np.testing.assert_allclose(_kconv_out(layer, params, x), yt, **TOL)


# --- inputs: prefixes, tensors, arrays, dtypes ----------------------------------------------

def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 1, bias=False))


@pytest.mark.parametrize("prefix", ["0.", "0"])
def test_prefix_selects_one_layer_of_a_model(prefix):
    model = _model()
    params = params_from_torch(kconv.Conv2D(8, 3), model.state_dict(), prefix=prefix)
    np.testing.assert_array_equal(params["kernel"],
                                  model[0].weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["bias"], model[0].bias.detach().numpy())
    second = params_from_torch(kconv.Conv2D(4, 1, use_bias=False), model.state_dict(),
                               prefix="2.")
    assert set(second) == {"kernel"} and second["kernel"].shape == (1, 1, 8, 4)


def test_tensors_with_grad_and_numpy_arrays_give_the_same_params():
    m = _seeded(torch.nn.Conv1d, 2, 3, 3)
    layer = kconv.Conv1D(3, 3)
    from_state = params_from_torch(layer, m.state_dict())
    from_parameters = params_from_torch(layer, dict(m.named_parameters()))  # requires_grad
    from_numpy = params_from_torch(layer, {k: v.numpy() for k, v in m.state_dict().items()})
    for params in (from_parameters, from_numpy):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(params[name], from_state[name])


def test_param_dtype_and_bfloat16_tensors():
    m = _seeded(torch.nn.Conv1d, 2, 3, 3).to(torch.bfloat16)
    layer = kconv.Conv1D(3, 3, param_dtype=jnp.bfloat16)
    params = params_from_torch(layer, m.state_dict())
    assert params["kernel"].dtype == params["bias"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(params["kernel"], np.float32),
                                  m.weight.detach().float().numpy().transpose(2, 1, 0))
    f16 = params_from_torch(kconv.Conv1D(3, 3), {k: v.half() for k, v in
                                                 m.state_dict().items()})
    assert f16["kernel"].dtype == jnp.float32


# --- reparametrized weights: weight norm and spectral norm ----------------------------------

def _weight_normed(module, api, dim, seed):
    """``module`` under torch's weight norm (the ``old`` or ``parametrizations`` API), with
    magnitudes ``g`` that are not ``||v||`` (at creation they are: the weight is ``v``)."""
    from torch.nn.utils import parametrizations, weight_norm
    module = (weight_norm if api == "old" else parametrizations.weight_norm)(module, dim=dim)
    g = (module.weight_g if api == "old" else module.parametrizations.weight.original0)
    with torch.no_grad():
        g.copy_(torch.from_numpy(np.random.default_rng(seed).uniform(
            0.5, 2.0, tuple(g.shape)).astype(np.float32)))
    return module


def _spectral_normed(module, api, x):
    """``module`` under torch's spectral norm, its power-iteration vectors moved on by a few
    training-mode calls (as after training); then in eval mode."""
    from torch.nn.utils import parametrizations, spectral_norm
    module = (spectral_norm if api == "old" else parametrizations.spectral_norm)(module)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.from_numpy(x))
    return module.eval()


REPARAMETRIZED_CASES = [
    # (torch module, kconv layer, input shape (torch layout))
    (lambda: torch.nn.Conv1d(4, 6, 3), kconv.Conv1D(6, 3), (2, 4, 9)),
    (lambda: torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False),
     kconv.Conv2D(5, 3, strides=2, padding=1, use_bias=False), (2, 3, 8, 7)),
    (lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2), kconv.Conv1DTranspose(6, 3, 2),
     (2, 4, 5)),
    (lambda: torch.nn.ConvTranspose2d(4, 4, 3, padding=1),       # in == out: spectral
     kconv.Conv2DTranspose(4, 3, padding="same"), (2, 4, 6, 5)),  # norm's dim by default
    (lambda: torch.nn.Conv2d(3, 6, 3, groups=3, padding=1),
     kconv.DepthwiseConv2D(3, padding="same", depth_multiplier=2), (2, 3, 6, 6)),
]


@pytest.mark.parametrize("api", ["old", "parametrizations"])
@pytest.mark.parametrize("case", range(len(REPARAMETRIZED_CASES)))
def test_weight_norm_matches_torch(case, api):
    make, layer, shape = REPARAMETRIZED_CASES[case]
    x = _input(shape)
    for seed, dim in enumerate([0, None, 1, -2]):  # torch's default, the whole tensor, ...
        torch.manual_seed(seed)
        module = _weight_normed(make(), api, dim, seed).eval()
        assert not any(key.endswith("weight") for key in module.state_dict())
        params = params_from_torch(layer, module.state_dict())
        np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(module, x), **TOL)


@pytest.mark.parametrize("api", ["old", "parametrizations"])
@pytest.mark.parametrize("case", range(len(REPARAMETRIZED_CASES)))
def test_spectral_norm_matches_torch(case, api):
    make, layer, shape = REPARAMETRIZED_CASES[case]
    x = _input(shape)
    torch.manual_seed(case)
    module = _spectral_normed(make(), api, x)
    plain = make()  # the stored weight, not divided by sigma: a different function
    params = params_from_torch(layer, module.state_dict())
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(module, x), **TOL)
    with torch.no_grad():
        plain.weight.copy_(module.state_dict()[
            "weight_orig" if api == "old" else "parametrizations.weight.original"])
    assert not np.allclose(_torch_out(plain, x), _torch_out(module, x), **TOL)


def test_reparametrized_layers_of_a_model():
    """A HiFi-GAN-style stack: a whole model's state dict, one layer by its prefix."""
    from torch.nn.utils import parametrizations
    torch.manual_seed(0)
    model = torch.nn.Sequential(parametrizations.weight_norm(torch.nn.Conv1d(4, 8, 7,
                                                                             padding=3)),
                                torch.nn.LeakyReLU(0.1),
                                parametrizations.weight_norm(torch.nn.ConvTranspose1d(
                                    8, 4, 4, stride=2, padding=1))).eval()
    with pytest.raises(ValueError, match=r"pass prefix=, one of \['0.', '2.'\]"):
        params_from_torch(kconv.Conv1D(8, 7), model.state_dict())
    first, second = kconv.Conv1D(8, 7, padding=3), kconv.Conv1DTranspose(4, 4, 2, padding=1)
    p1 = params_from_torch(first, model.state_dict(), prefix="0")
    p2 = params_from_torch(second, model.state_dict(), prefix="2")
    x = _input((2, 4, 16))
    h = _kconv_out(first, p1, x)
    y = _kconv_out(second, p2, np.where(h > 0, h, 0.1 * h))
    np.testing.assert_allclose(y, _torch_out(model, x), **TOL)


# --- layer_from_torch: the layer of a live module --------------------------------------

def _module_cases(n=36):
    """Random torch convolution modules over every argument (valid combinations only)."""
    rng = np.random.default_rng(11)
    cases = []
    while len(cases) < n:
        i = len(cases)
        rank, transposed = 1 + i % 3, bool(i // 3 % 2)
        groups = int(rng.choice([1, 2, 4 if not transposed else 2]))
        cin = groups * int(rng.integers(1, 3))
        cout = groups * int(rng.integers(1, 3))
        k = tuple(int(v) for v in rng.integers(1, 4, rank))
        s = tuple(int(v) for v in rng.integers(1, 3, rank))
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        kwargs = dict(stride=s, dilation=d, groups=groups, bias=bool(rng.integers(2)))
        if transposed:
            kwargs["padding"] = tuple(int(rng.integers(0, 2)) for _ in range(rank))
            kwargs["output_padding"] = tuple(int(rng.integers(0, max(a, b)))
                                             for a, b in zip(s, d))
            module = (TORCH_CONV_T[rank], cin, cout, k)
        else:
            mode = str(rng.choice(["zeros", "reflect", "replicate", "circular"]))
            padding = [tuple(int(v) for v in rng.integers(0, 3, rank)), "valid", 1]
            if all(v == 1 for v in s):
                padding.append("same")
            kwargs.update(padding=padding[int(rng.integers(len(padding)))], padding_mode=mode)
            module = (TORCH_CONV[rank], cin, cout, k)
        cases.append((module, kwargs))
    return cases


MODULE_CASES = _module_cases()


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("case", MODULE_CASES,
                         ids=[f"{c[0][0].__name__}-{i}" for i, c in enumerate(MODULE_CASES)])
def test_layer_from_torch_computes_the_module(case, fmt):
    (cls, cin, cout, k), kwargs = case
    module = _seeded(cls, cin, cout, k, **kwargs)
    layer = layer_from_torch(module, data_format=fmt)
    params = params_from_torch(layer, module.state_dict())
    x = _input((2, cin) + (7, 6, 5)[:len(k)])
    np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(module, x), **TOL)


@pytest.mark.parametrize("cls,k,kwargs", [
    (torch.nn.Conv2d, 3, dict(stride=(2,))),
    (torch.nn.Conv2d, 3, dict(padding=(1,))),
    (torch.nn.Conv3d, 2, dict(dilation=(2,))),
    (torch.nn.ConvTranspose2d, 3, dict(stride=2, output_padding=(1,))),
])
def test_one_element_settings_are_every_axis_as_torch_runs_them(cls, k, kwargs):
    # torch's constructor keeps a one-element tuple as given (_pair((2,)) == (2,)) and its
    # convolutions apply it to every axis; layer_from_torch refused it as "not 2 ints".
    module = _seeded(cls, 2, 3, k, **kwargs)
    layer = layer_from_torch(module)
    x = _input((2, 2) + (7, 6, 5)[:layer.rank])
    np.testing.assert_allclose(_kconv_out(layer, params_from_torch(layer, module), x),
                               _torch_out(module, x), **TOL)


def test_layer_from_torch_reads_keras_strings_and_reparametrized_modules():
    from torch.nn.utils import parametrizations, weight_norm
    assert layer_from_torch(torch.nn.Conv2d(3, 8, 3)).padding == "valid"
    # Keras's "same" where it is torch's amounts for every input length (stride 1, half of
    # an even d * (k - 1) on each side): the config Keras reads
    assert layer_from_torch(torch.nn.Conv2d(3, 8, (3, 5), padding=(1, 4),
                                            dilation=(1, 2))).padding == "same"
    assert layer_from_torch(torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
                            ).get_config()["padding"] == "same"
    for module in (torch.nn.Conv2d(3, 8, 3, padding=1, stride=(1, 2)),  # strided: n decides
                   torch.nn.Conv1d(3, 8, 4, padding=2),                  # odd total
                   torch.nn.Conv2d(3, 8, 3, padding=(1, 0))):
        assert not isinstance(layer_from_torch(module).padding, str)
    assert layer_from_torch(torch.nn.Conv1d(3, 8, 4, padding="same")).padding == "same"
    for module in (weight_norm(torch.nn.Conv1d(3, 8, 3)),
                   parametrizations.spectral_norm(torch.nn.ConvTranspose1d(3, 8, 3, 2)).eval()):
        layer = layer_from_torch(module, data_format="channels_first")
        x = _input((2, 3, 7))
        np.testing.assert_allclose(
            _kconv_out(layer, params_from_torch(layer, module.state_dict()), x),
            _torch_out(module, x), **TOL)


@pytest.mark.filterwarnings("ignore:Complex modules:UserWarning")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_layer_from_torch_computes_in_the_modules_dtype(dtype):
    # A module made .half() / .to(torch.bfloat16) holds its weights in that dtype and takes
    # inputs of it only: the layer computes and keeps its params in it too, and its config
    # is Keras's dtype policy of that name.
    tdtype = getattr(torch, dtype)
    for module in (_seeded(torch.nn.Conv2d, 3, 4, (3, 3), padding=1).to(tdtype),
                   _seeded(torch.nn.ConvTranspose1d, 3, 4, (3,), stride=2).to(tdtype)):
        layer = layer_from_torch(module, data_format="channels_first")
        assert layer.dtype == layer.param_dtype == jnp.dtype(dtype)
        assert layer.get_config()["dtype"] == dtype
        with _x64() if dtype == "float64" else contextlib.nullcontext():
            params = params_from_torch(layer, module)
            assert {p.dtype for p in params.values()} == {jnp.dtype(dtype)}
            x = torch.from_numpy(_input((2, 3) + (6, 5)[:layer.rank])).to(tdtype)
            got = layer(params, jnp.asarray(x.double().numpy()).astype(dtype))
            assert got.dtype == jnp.dtype(dtype)
            want = module(x).detach().double().numpy()
            tol = 1e-12 if dtype == "float64" else 2e-2
            np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)
    # float32 is kconv's default and stays unwritten
    assert "dtype" not in layer_from_torch(torch.nn.Conv1d(3, 4, 3)).get_config()
    with pytest.raises(ValueError, match=r"nn.Conv1d\(.*complex64.*floating dtype"):
        layer_from_torch(torch.nn.Conv1d(3, 4, 3).to(torch.complex64))


def test_layer_from_torch_takes_a_compiled_module():
    # torch.compile(module) returns an OptimizedModule that runs the module's own forward,
    # its state dict the module's under "_orig_mod.": the layer and params are the module's.
    for module in (_seeded(torch.nn.Conv2d, 3, 4, (3, 3), stride=2, padding=1),
                   _seeded(torch.nn.ConvTranspose1d, 3, 4, (3,), stride=2),
                   torch.nn.ZeroPad2d((1, 2, 0, 1))):
        compiled = torch.compile(module)
        assert type(compiled).__name__ == "OptimizedModule"
        layer = layer_from_torch(compiled, data_format="channels_first")
        assert layer == layer_from_torch(module, data_format="channels_first")
        params = params_from_torch(layer, compiled)
        x = _input((2, 3) + (6, 5)[:layer.rank])
        np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(module, x), **TOL)


def test_layers_from_torch_names_a_compiled_model_as_its_module():
    # layers_from_torch(torch.compile(model)) named every layer "_orig_mod.<name>", names
    # params_from_torch then refused with the compiled model (which it reads as its module).
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1)))
    compiled = torch.compile(model)
    ported = layers_from_torch(compiled)
    assert list(ported) == list(layers_from_torch(model)) == ["0", "2.0"]
    layer, params = ported["2.0"]
    for got, want in zip(params.values(), params_from_torch(layer, compiled, prefix="2.0")
                         .values()):
        np.testing.assert_array_equal(got, want)


def test_params_from_torch_are_copies():
    # On the CPU jnp.asarray may alias a NumPy buffer, and .numpy() is the tensor's own
    # memory: torch's in-place updates (an optimizer step) changed the params kconv returned.
    model = torch.nn.Sequential(_seeded(torch.nn.Conv2d, 1, 4, 1), torch.nn.ReLU())
    layer, params = layers_from_torch(model)["0"]
    direct = params_from_torch(layer, model[0].state_dict())
    before = {name: np.array(v) for name, v in params.items()}
    with torch.no_grad():
        model[0].weight.mul_(0.0)
        model[0].bias.add_(100.0)
    for got in (params, direct):
        for name, value in got.items():
            np.testing.assert_array_equal(value, before[name])


def test_layer_from_torch_refuses_what_it_cannot_read():
    class Causal(torch.nn.Conv1d):  # a forward of its own: not nn.Conv1d's function
        pass
    with pytest.raises(TypeError, match=r"got Causal; a subclass of nn.Conv1d may compute "
                                        r"something else.*params_from_torch"):
        layer_from_torch(Causal(3, 8, 3))
    with pytest.raises(TypeError, match=r"expected an nn.Conv1d/2d/3d, nn.ConvTranspose1d/2d/3d, "
                                        r"nn.ZeroPad1d/2d/3d, nn.ConstantPad1d/2d/3d, "
                                        r"nn.Upsample or nn.UpsamplingNearest2d instance, "
                                        r"got Linear$"):
        layer_from_torch(torch.nn.Linear(3, 8))
    lazy = torch.nn.LazyConv2d(8, 3)
    with pytest.raises(TypeError, match=r"LazyConv2d has no weights yet \(in_channels=0\): "
                                        r"call the module once, then it is an nn.Conv2d"):
        layer_from_torch(lazy)
    lazy(torch.ones(1, 3, 5, 5))
    assert layer_from_torch(lazy).kernel_size == (3, 3)


def test_params_from_torch_takes_the_module_itself():
    module = _seeded(torch.nn.Conv1d, 2, 4, 3, padding=1)
    layer = layer_from_torch(module)
    for got, want in zip(params_from_torch(layer, module).values(),
                         params_from_torch(layer, module.state_dict()).values()):
        np.testing.assert_array_equal(got, want)
    model = torch.nn.Sequential(torch.nn.ZeroPad1d(1), module)
    assert params_from_torch(layer, model, prefix="1")["kernel"].shape == (3, 2, 4)
    assert params_from_torch(layer_from_torch(model[0]), model, prefix="0") == {}


# torch's weightless modules between convolutions, and what kconv builds for each
WEIGHTLESS_CASES = [
    (torch.nn.ZeroPad1d((2, 1)), {}, kconv.ZeroPadding1D((2, 1))),
    (torch.nn.ZeroPad1d(-1), {}, kconv.Cropping1D(1)),
    (torch.nn.ConstantPad1d((0, 3), 0.0), {}, kconv.ZeroPadding1D((0, 3))),
    (torch.nn.ZeroPad2d((1, 2, 3, 0)), {}, kconv.ZeroPadding2D(((3, 0), (1, 2)))),
    (torch.nn.ZeroPad2d((-1, 0, -2, -1)), {}, kconv.Cropping2D(((2, 1), (1, 0)))),
    (torch.nn.ConstantPad2d((1, 2), -0.0), {}, kconv.ZeroPadding2D(((0, 0), (1, 2)))),
    (torch.nn.ZeroPad3d((1, 0, 0, 2, 3, 1)), {}, kconv.ZeroPadding3D(((3, 1), (0, 2), (1, 0)))),
    (torch.nn.ConstantPad3d(-1, 0.0), {}, kconv.Cropping3D(1)),
    (torch.nn.Upsample(scale_factor=3), {"rank": 1}, kconv.UpSampling1D(3)),
    (torch.nn.Upsample(scale_factor=2.0, mode="nearest-exact"), {"rank": 2},
     kconv.UpSampling2D(2)),
    (torch.nn.Upsample(scale_factor=(2, 3), mode="area"), {}, kconv.UpSampling2D((2, 3))),
    (torch.nn.Upsample(scale_factor=(2, 3), mode="bilinear"), {},
     kconv.UpSampling2D((2, 3), interpolation="bilinear")),
    (torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), {"rank": 2},
     kconv.UpSampling2D(2, interpolation="bilinear")),
    (torch.nn.UpsamplingNearest2d(scale_factor=2), {}, kconv.UpSampling2D(2)),
    (torch.nn.Upsample(scale_factor=(1, 2, 3)), {}, kconv.UpSampling3D((1, 2, 3))),
    # A one-element tuple is one factor per spatial axis: torch runs it on 1-D inputs only.
    (torch.nn.Upsample(scale_factor=(2,)), {}, kconv.UpSampling1D(2)),
]


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("module,kwargs,want", WEIGHTLESS_CASES,
                         ids=[f"{type(c[0]).__name__}-{i}" for i, c in
                              enumerate(WEIGHTLESS_CASES)])
def test_layer_from_torch_weightless_modules(module, kwargs, want, fmt):
    """Torch's zero padding and upsampling modules: the kconv layer computes the module
    (torch is the oracle) and is the one a user would write by hand."""
    has_format = "data_format" in {f.name for f in dataclasses.fields(want)}
    if fmt == "channels_first" and not has_format:
        with pytest.raises(ValueError, match=rf"{type(want).__name__}, as Keras's, takes "
                                             r"channels-last inputs only"):
            layer_from_torch(module, data_format=fmt, **kwargs)
        return
    layer = layer_from_torch(module, data_format=fmt, **kwargs)
    assert layer == dataclasses.replace(want, **({"data_format": fmt} if has_format else {}))
    assert params_from_torch(layer, module) == {}
    x = _input((2, 3) + (7, 6, 5)[:layer.rank])
    np.testing.assert_allclose(_kconv_out(layer, {}, x), _torch_out(module, x), **TOL)


@pytest.mark.parametrize("module,kwargs,match", [
    (torch.nn.ReflectionPad2d((1, 2, 3, 4)), {},
     r"nn.ReflectionPad2d\(\(1, 2, 3, 4\)\): kconv has no layer that pads in 'reflect' mode.*"
     r"build that convolution with padding=\(\(3, 4\), \(1, 2\)\), padding_mode='reflect'"),
    (torch.nn.ReplicationPad1d(2), {}, r"padding=\(\(2, 2\),\), padding_mode='replicate'"),
    (torch.nn.CircularPad3d(1), {}, r"padding_mode='circular'"),
    (torch.nn.ConstantPad2d(1, 0.5), {},
     r"nn.ConstantPad2d\(padding=\(1, 1, 1, 1\), value=0.5\) pads with 0.5; kconv's "
     r"ZeroPadding2D, as Keras's, pads with zeros only"),
    (torch.nn.ZeroPad2d((1, -1, 0, 0)), {},
     r"pads some sides and crops others.*ZeroPadding2D and Cropping2D.*\(\(0, 0\), \(1, -1\)\)"),
    (torch.nn.ConstantPad1d((1, 1, 1, 1), 0.0), {},
     r"has 4 padding amounts; the 1 spatial axes take at most 2"),
    (torch.nn.Upsample(size=(8, 8)), {}, r"resizes to a fixed size.*scale_factor="),
    (torch.nn.Upsample(scale_factor=1.5), {"rank": 2}, r"positive integer factors"),
    (torch.nn.Upsample(scale_factor=(2, 0.5)), {}, r"positive integer factors"),
    (torch.nn.UpsamplingBilinear2d(scale_factor=2), {},
     r"align_corners=True samples the corners.*half-pixel centres"),
    (torch.nn.Upsample(scale_factor=2, mode="bicubic"), {"rank": 2},
     r"torch's cubic kernel \(a = -0.75\) is not Keras's"),
    (torch.nn.Upsample(scale_factor=2, mode="linear"), {}, r"UpSampling1D, as Keras's, repeats"),
    (torch.nn.Upsample(scale_factor=2, mode="trilinear"), {},
     r"UpSampling3D, as Keras's, repeats"),
    (torch.nn.Upsample(scale_factor=2), {},
     r"its rank is not in the module: pass rank=1, 2 or 3"),
    (torch.nn.Upsample(scale_factor=2), {"rank": 4}, r"rank=4: kconv's UpSampling layers have 1 "
                                                     r"to 3 spatial axes"),
    (torch.nn.Upsample(scale_factor=(2, 2), mode="trilinear"), {},
     r"mode='trilinear' is 3-D but scale_factor=\(2, 2\) is 2-D"),
    (torch.nn.UpsamplingNearest2d(scale_factor=2), {"rank": 3},
     r"rank=3, but nn.UpsamplingNearest2d\(.*\) works on 2 spatial axes"),
    (torch.nn.Conv1d(2, 4, 3), {"rank": 2}, r"rank=2, but nn.Conv1d\(.*\) works on 1 spatial"),
    (torch.nn.Upsample(scale_factor=(2,)), {"rank": 2},
     r"rank=2, but nn.Upsample\(scale_factor=\(2.0,\).*\) works on 1 spatial"),
    (torch.nn.ZeroPad2d(1), {"rank": 0}, r"rank must be a positive integer, got 0"),
])
def test_layer_from_torch_refuses_weightless_settings(module, kwargs, match):
    with pytest.raises(ValueError, match=r"layer_from_torch: .*" + match):
        layer_from_torch(module, **kwargs)
    subclass = type("MyPad", (torch.nn.ZeroPad2d,), {})(1)
    with pytest.raises(TypeError, match=r"got MyPad; a subclass of nn.ZeroPad2d may compute"):
        layer_from_torch(subclass)


def test_a_ported_torch_model_computes_the_model():
    """layers_from_torch on a torch encoder-decoder: every module but the activations has
    its kconv layer, under its name, and the stack computes the model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.ZeroPad2d((1, 0, 1, 0)), torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(), torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
        torch.nn.Upsample(scale_factor=2), torch.nn.ZeroPad2d(-2)).eval()
    ported = kconv.interop.layers_from_torch(model, rank=2)
    assert list(ported) == ["0", "1", "3", "4", "6", "7", "8"]
    assert ported.skipped == {"2": "ReLU", "5": "ReLU"}

    @jax.jit
    def forward(x):
        for name in map(str, range(len(model))):
            x = ported[name][0](ported[name][1], x) if name in ported else jax.nn.relu(x)
        return x

    x = _input((2, 3, 9, 11))
    np.testing.assert_allclose(np.moveaxis(np.asarray(forward(np.moveaxis(x, 1, -1))), -1, 1),
                               _torch_out(model, x), **TOL)


def test_a_parametrization_of_its_own_is_read_from_the_module():
    # torch.nn.utils.parametrize with a parametrization torch's state dict cannot describe
    # (orthogonal, a user's): the live module computes its weight and bias on access, and
    # that is what its forward reads; a state dict alone is refused, saying so. A module
    # whose weights params_from_torch cannot read is skipped by layers_from_torch with the
    # reason, the rest of the model ported.
    from torch.nn.utils import parametrizations, parametrize

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2.0 * w

    doubled = _seeded(torch.nn.Conv2d, 3, 4, (3, 3), padding=1)
    parametrize.register_parametrization(doubled, "weight", Doubled())
    biased = _seeded(torch.nn.ConvTranspose1d, 3, 4, (3,), stride=2)
    parametrize.register_parametrization(biased, "bias", Doubled())
    ortho = parametrizations.orthogonal(_seeded(torch.nn.Conv2d, 4, 4, (1, 1)))
    for module in (doubled, biased, ortho):
        layer = layer_from_torch(module, data_format="channels_first")
        x = _input((2, module.in_channels) + (6, 5)[:layer.rank])
        np.testing.assert_allclose(_kconv_out(layer, params_from_torch(layer, module), x),
                                   _torch_out(module, x), **TOL)
        with pytest.raises(ValueError, match=r"parametrization of the module's own.*pass the "
                                             r"module"):
            params_from_torch(layer, module.state_dict())
    buffered = torch.nn.Conv2d(4, 4, 1)
    buffered.register_buffer("mask", torch.ones(1))
    ported = kconv.interop.layers_from_torch(torch.nn.Sequential(doubled, buffered),
                                             data_format="channels_first")
    assert list(ported) == ["0"]
    assert ported.skipped["1"].startswith("Conv2d: Conv2D(filters=4, kernel_size=(1, 1)): "
                                          "unknown state_dict keys ['mask']")



def test_a_module_gives_the_weights_its_forward_computes():
    # A live module is read as its forward reads it. Spectral norm along another axis than
    # torch's default (which its state dict does not record: both axes fit a square
    # weight) was divided along the default one; a parametrization chained after weight
    # norm (same state dict keys as weight norm alone) was dropped; pruning (the original
    # times a mask, by a hook) was refused. The read leaves a training-mode module's power
    # iteration where it was.
    from torch.nn.utils import parametrizations, parametrize, prune, spectral_norm

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2.0 * w

    x = _input((2, 4, 7, 6))
    spectral = [parametrizations.spectral_norm(_seeded(torch.nn.Conv2d, 4, 4, 3), dim=1),
                spectral_norm(_seeded(torch.nn.Conv2d, 4, 4, 3), dim=1),
                parametrizations.spectral_norm(_seeded(torch.nn.ConvTranspose2d, 4, 4, 3),
                                               dim=0)]
    for module in spectral:
        module.train()
        with torch.no_grad():
            module(torch.from_numpy(x))  # the power iteration moved on from its start
    chained = parametrizations.weight_norm(_seeded(torch.nn.Conv2d, 4, 3, 3, padding=1))
    parametrize.register_parametrization(chained, "weight", Doubled())
    pruned = _seeded(torch.nn.Conv2d, 4, 3, 3)
    prune.l1_unstructured(pruned, "weight", amount=0.5)
    prune.random_unstructured(pruned, "bias", amount=0.5)
    prune.l1_unstructured(pruned, "weight", amount=0.3)  # a PruningContainer
    for module in (*spectral, chained, pruned):
        training = module.training
        u = {k: v.clone() for k, v in module.state_dict().items() if k.endswith("u")}
        layer = layer_from_torch(module, data_format="channels_first")
        params = params_from_torch(layer, module)
        assert module.training == training and all(
            torch.equal(module.state_dict()[k], v) for k, v in u.items())
        np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(module.eval(), x),
                                   **TOL)
    from_state = params_from_torch(layer, pruned.state_dict())  # the mask applied: zeros
    assert float(np.mean(np.asarray(from_state["kernel"]) == 0)) > 0.6
    np.testing.assert_allclose(_kconv_out(layer, from_state, x), _torch_out(pruned, x), **TOL)


def test_layer_from_torch_reads_settings_as_the_forward_does():
    # A plain int set on a built module (torch's forward takes it) was a bare TypeError; a
    # padding changed after construction with padding_mode="reflect" was read from
    # .padding, which torch's forward does not read for that mode; forward hooks were
    # silently not run: now named in a warning.
    module = _seeded(torch.nn.Conv2d, 3, 4, 3, padding=1)
    module.stride, module.dilation, module.padding = 2, 2, 2
    reflect = _seeded(torch.nn.Conv2d, 3, 4, 3, padding=1, padding_mode="reflect")
    reflect.padding = (2, 2)  # torch pads by the amounts it computed when made: 1
    x = _input((2, 3, 9, 8))
    for m in (module, reflect):
        layer = layer_from_torch(m, data_format="channels_first")
        np.testing.assert_allclose(_kconv_out(layer, params_from_torch(layer, m), x),
                                   _torch_out(m, x), **TOL)
    assert layer.padding == "same"
    module.stride = (1, 2, 3)
    with pytest.raises(ValueError, match=r"stride=\(1, 2, 3\) is not an int or 2 ints"):
        layer_from_torch(module)

    def doubled(mod, inputs, output):
        return 2 * output

    reflect.register_forward_hook(doubled)
    with pytest.warns(UserWarning, match=r"nn.Conv2d\(3, 4, .*\) has forward hooks \(test_lay"
                                         r"er_from_torch_reads_settings_as_the_forward_does."
                                         r"<locals>.doubled\) that the kconv layer does not run"):
        layer_from_torch(reflect)
    with pytest.warns(UserWarning, match="has forward hooks"):
        ported = kconv.interop.layers_from_torch(torch.nn.Sequential(reflect))
    assert list(ported) == ["0"]

def test_layers_from_torch_walks_nested_models_and_lists_what_it_leaves():
    class MyConv(torch.nn.Conv2d):  # its own forward may differ: never guessed
        pass

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ModuleList([
                torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"),
                torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(4, 4, 1))])
            self.norm = torch.nn.BatchNorm2d(4)
            self.pad = torch.nn.ReflectionPad2d((1, 2, 0, 0))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Block(), torch.nn.Upsample(
        scale_factor=2), torch.nn.LazyConv2d(3, 3), MyConv(4, 4, 1), torch.nn.Upsample(
        scale_factor=(2, 2, 1), mode="trilinear"), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    ported = kconv.interop.layers_from_torch(model, data_format="channels_first")
    assert isinstance(ported, kconv.interop.TorchLayers)
    assert list(ported) == ["0", "1.convs.0", "1.convs.1"]
    state = model.state_dict()
    for name, (layer, params) in ported.items():
        assert layer.data_format == "channels_first"
        module = model.get_submodule(name)
        x = _input((2, module.in_channels, 6, 5))
        np.testing.assert_allclose(_kconv_out(layer, params, x), _torch_out(module, x), **TOL)
        want = params_from_torch(layer, state, prefix=name)  # the keys under its name
        assert jax.tree.all(jax.tree.map(np.array_equal, params, want))
    assert list(ported.skipped) == ["1.norm", "1.pad", "2", "3", "4", "5", "6", "7"]
    assert ported.skipped["1.norm"] == "BatchNorm2d"
    assert ported.skipped["7"] == "Linear"
    assert ported.skipped["1.pad"].startswith("ReflectionPad2d: nn.ReflectionPad2d((1, 2, 0, 0))")
    assert "padding=((0, 0), (1, 2)), padding_mode='reflect'" in ported.skipped["1.pad"]
    assert "pass rank=1, 2 or 3" in ported.skipped["2"]
    assert ported.skipped["3"].startswith("LazyConv2d: LazyConv2d has no weights yet")
    assert ported.skipped["4"].startswith("MyConv: a subclass of nn.Conv2d may compute")
    assert "UpSampling3D, as Keras's, repeats only" in ported.skipped["5"]
    # rank= reaches the modules that lack one only
    assert type(kconv.interop.layers_from_torch(model, rank=2)["2"][0]) is kconv.UpSampling2D
    for bad, match in [(torch.nn.Conv2d(3, 4, 3), r"Conv2d has no submodules; for one module "
                                                  r"use layer_from_torch"),
                       (model.state_dict(), r"expected a torch nn.Module, got OrderedDict")]:
        with pytest.raises(TypeError, match=r"layers_from_torch: " + match):
            kconv.interop.layers_from_torch(bad)


def test_module_does_not_import_torch():
    code = ("import sys, kconv.interop.torch, numpy as np, kconv; "
            "kconv.interop.torch.params_from_torch(kconv.Conv1D(2, 3, use_bias=False), "
            "{'weight': np.ones((2, 1, 3))}); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- errors ---------------------------------------------------------------------------

W2 = np.zeros((8, 3, 3, 3), np.float32)  # nn.Conv2d(3, 8, 3)
B8 = np.zeros(8, np.float32)


@pytest.mark.parametrize("layer,state,kwargs,error,match", [
    # the weight key
    (kconv.Conv2D(8, 3), {"bias": B8}, {},
     ValueError, r"params_from_torch: Conv2D\(filters=8.*missing key 'weight'.*'bias'"),
    (kconv.Conv2D(8, 3), {"conv.weight": W2, "conv.bias": B8}, {"prefix": "enc"},
     ValueError, r"missing key 'enc.weight'.*'conv.bias', 'conv.weight'"),
    # unknown keys: a whole model without prefix, stray keys under the prefix
    (kconv.Conv2D(8, 3), _model().state_dict(), {},
     ValueError, r"unknown state_dict keys \['0.bias', '0.weight', '2.weight'\].*"
                 r"prefix=.*\['0.', '2.'\]"),
    (kconv.Conv2D(8, 3), {"c.weight": W2, "c.bias": B8, "c.running_mean": B8},
     {"prefix": "c."},
     ValueError, r"unknown state_dict keys \['c.running_mean'\] \(a torch conv has only "
                 r"'weight' \(or its weight-norm or spectral-norm factors, or pruning's original and "
                 r"mask\) and 'bias' under "
                 r"prefix 'c.'\)$"),
    # reparametrized weights: a form's keys mixed or incomplete, factors that do not fit
    (kconv.Conv2D(8, 3), {"c.weight": W2, "c.bias": B8, "c.weight_g": B8}, {"prefix": "c."},
     ValueError, r"the weight keys \['c.weight', 'c.weight_g'\] are none of the forms a "
                 r"torch module keeps its weight in \(the weight: 'weight'; "
                 r"nn.utils.weight_norm: 'weight_g' \+ 'weight_v'; .*spectral_norm"),
    (kconv.Conv2D(8, 3), {"weight_v": W2, "bias": B8}, {},
     ValueError, r"the weight keys \['weight_v'\] are none of the forms"),
    (kconv.Conv2D(8, 3), {"weight_v": W2, "weight_g": np.ones((8, 3, 1, 1)), "bias": B8}, {},
     ValueError, r"weight norm's 'weight_g' has shape \(8, 3, 1, 1\), which is not a "
                 r"magnitude per slice of 'weight_v' \(shape \(8, 3, 3, 3\)\): expected \(\) "
                 r"or 8 in one axis"),
    (kconv.Conv2D(8, 3), {"weight_orig": W2, "weight_u": np.ones(3), "weight_v": np.ones(24),
                          "bias": B8}, {},
     ValueError, r"spectral norm's 'weight_u' \(shape \(3,\)\) and 'weight_v' \(shape "
                 r"\(24,\)\) do not fit 'weight_orig' \(shape \(8, 3, 3, 3\)\) along one axis: "
                 r"expected \(8,\) and \(27,\) for torch's default dim=0"),
    (kconv.Conv2D(8, 3), {"parametrizations.weight.original1": W2, "bias": B8}, {},
     ValueError, r"the weight keys \['parametrizations.weight.original1'\] are none"),
    (kconv.Conv2D(4, 3, use_bias=False), _model().state_dict(), {"prefix": "2"},
     ValueError, r"Conv2D\(filters=4, kernel_size=\(3, 3\)\): '2.weight' has shape "
                 r"\(4, 8, 1, 1\), kernel size \(1, 1\), but the layer has kernel_size \(3, 3\)"),
    # bias presence
    (kconv.Conv2D(8, 3, use_bias=False), {"weight": W2, "bias": B8}, {},
     ValueError, r"has 'bias' but the layer has use_bias=False"),
    (kconv.Conv2D(8, 3), {"weight": W2}, {},
     ValueError, r"missing key 'bias' but the layer has use_bias=True"),
    (kconv.Conv2D(8, 3), {"weight": W2, "bias": np.zeros(4)}, {},
     ValueError, r"'bias' has shape \(4,\), expected \(8,\)"),
    # rank, kernel size, filters
    (kconv.Conv2D(8, 3), {"weight": np.zeros((8, 3, 3)), "bias": B8}, {},
     ValueError, r"'weight' has shape \(8, 3, 3\) \(rank 3\); a torch nn.Conv2d weight has "
                 r"rank 4: expected \(8, in, 3, 3\)"),
    (kconv.Conv1DTranspose(8, 3), {"weight": W2, "bias": B8}, {},
     ValueError, r"torch nn.ConvTranspose1d weight has rank 3"),
    (kconv.Conv2D(8, (3, 5)), {"weight": W2, "bias": B8}, {},
     ValueError, r"kernel size \(3, 3\), but the layer has kernel_size \(3, 5\).*"
                 r"expected \(8, in, 3, 5\)"),
    (kconv.Conv2D(16, 3), {"weight": W2, "bias": B8}, {},
     ValueError, r"Conv2D\(filters=16.*'weight' has shape \(8, 3, 3, 3\), out_channels 8, "
                 r"but the layer has filters=16"),
    (kconv.Conv2DTranspose(4, 3), {"weight": W2, "bias": np.zeros(4)}, {},
     ValueError, r"'weight' has shape \(8, 3, 3, 3\), out_channels // groups = 3, which with "
                 r"groups=1 gives 3 output channels, but the layer has filters=4: expected "
                 r"\(in, 4, 3, 3\) \(in_channels, out_channels // groups, \*kernel_size\)$"),
    (kconv.Conv2DTranspose(6, 3, use_bias=False), {"weight": W2}, {},
     ValueError, r"but the layer has filters=6.*pass groups=module.groups \(here 2\?\)"),
    (kconv.Conv2DTranspose(9, 3, use_bias=False), {"weight": W2}, {"groups": 2},
     ValueError, r"with groups=2 gives 6 output channels, but the layer has filters=9"),
    # groups and input channels
    (kconv.Conv2D(8, 3, groups=2), {"weight": W2, "bias": B8}, {"groups": 1},
     ValueError, r"Conv2D\(filters=8, kernel_size=\(3, 3\), groups=2\): the torch module has "
                 r"groups=1 but the layer has groups=2"),
    (kconv.Conv2D(8, 3, groups=2), {"weight": W2, "bias": B8}, {"in_channels": 3},
     ValueError, r"in_channels=3 does not match 'weight' of shape \(8, 3, 3, 3\).*"
                 r"means 6 input channels"),
    (kconv.Conv2DTranspose(6, 3, use_bias=False), {"weight": np.zeros((9, 3, 3, 3))},
     {"groups": 2}, ValueError, r"groups=2 does not divide the 9 input channels"),
    (kconv.Conv2DTranspose(3, 3, use_bias=False), {"weight": W2}, {"in_channels": 4},
     ValueError, r"in_channels=4 does not match 'weight' of shape \(8, 3, 3, 3\) "
                 r"\(8 input channels\)"),
    (kconv.DepthwiseConv2D(3, use_bias=False), {"weight": W2}, {},
     ValueError, r"DepthwiseConv2D\(kernel_size=\(3, 3\), depth_multiplier=1\): 'weight' "
                 r"has shape \(8, 3, 3, 3\), in_channels // groups = 3, but a depthwise.*"
                 r"expected \(in \* 1, 1, 3, 3\)"),
    (kconv.DepthwiseConv2D(3, depth_multiplier=3, use_bias=False),
     {"weight": np.zeros((8, 1, 3, 3))}, {},
     ValueError, r"out_channels 8 is not a multiple of depth_multiplier=3"),
    (kconv.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False),
     {"weight": np.zeros((8, 1, 3, 3))}, {"groups": 8},
     ValueError, r"groups=8 does not match 'weight' of shape \(8, 1, 3, 3\): with "
                 r"depth_multiplier=2 it holds 4 input channels"),
    (kconv.DepthwiseConv1D(3, use_bias=False), {"weight": np.zeros((4, 1, 3))},
     {"in_channels": 2}, ValueError, r"in_channels=2 does not match"),
    (kconv.Conv2D(8, 3), {"weight": W2, "bias": B8}, {"groups": 0},
     ValueError, r"groups must be positive, got 0"),
    (kconv.Conv2D(8, 3), {"weight": W2, "bias": B8}, {"in_channels": 3.0},
     TypeError, r"in_channels must be an int, got 3.0"),
    # unsupported layers and inputs
    (kconv.SeparableConv2D(8, 3), {"weight": W2}, {},
     TypeError, r"params_from_torch: unsupported kconv layer SeparableConv2D; supported are "
                r".*Conv1D/2D/3D.*Conv1D/2D/3DTranspose.*DepthwiseConv1D/2D.*"
                r"depthwise nn.Conv2d with DepthwiseConv2D and its 1x1 nn.Conv2d with Conv2D"),
    (kconv.Cropping2D(1), {"weight": W2}, {},
     ValueError, r"Cropping2D has no weights, but the state_dict has \['weight'\]; for one "
                 r"layer of a larger model pass prefix="),
    (kconv.UpSampling1D(), _model().state_dict(), {"prefix": "2"},
     ValueError, r"UpSampling1D has no weights, but the state_dict has \['2.weight'\] under "
                 r"prefix '2.'$"),
    (kconv.Conv2D, {"weight": W2}, {}, TypeError, r"expected a kconv layer instance, got the "
                                                  r"class Conv2D"),
    (torch.nn.Conv2d(3, 8, 3), {"weight": W2}, {}, TypeError, r"unsupported object Conv2d"),
    (kconv.Conv2D(8, 3), [W2, B8], {},
     TypeError, r"state_dict must be a mapping of names to tensors \(or the torch module\), "
                r"got list"),
    (kconv.ZeroPadding2D(1), None, {}, TypeError, r"ZeroPadding2D: state_dict must be"),
    (kconv.Conv2D(8, 3), {"weight": W2, "bias": B8}, {"prefix": 0},
     TypeError, r"prefix must be a str, got 0"),
    (kconv.Conv2D(8, 3), {"weight": "W", "bias": B8}, {},
     TypeError, r"'weight' must hold real numbers, got str"),
])
def test_errors(layer, state, kwargs, error, match):
    with pytest.raises(error, match=match):
        params_from_torch(layer, state, **kwargs)


def test_grouped_transpose_without_groups_is_not_silently_block_diagonal():
    """filters = 2 * (out // groups) is ambiguous (a grouped module, or a wrong layer), so
    a grouped ConvTranspose needs groups= spelled out."""
    m = _seeded(torch.nn.ConvTranspose1d, 4, 6, 3, groups=2, bias=False)
    layer = kconv.Conv1DTranspose(6, 3, use_bias=False)
    with pytest.raises(ValueError, match=r"pass groups=module.groups \(here 2\?\)"):
        params_from_torch(layer, m.state_dict())
    assert params_from_torch(layer, m.state_dict(), groups=2)["kernel"].shape == (3, 6, 4)
