"""What makes a lowering a JAX primitive: bilinear transposes, batching, a value of its own
inside a derivative, and the joint tangent whose one transpose computes both gradients.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from kconv.ops.lowering.spec import Array, ConvSpec, _output_aval, conv_output_shape


def _bind_batch_folded(bind: Callable[[Array, ConvSpec], Array], x: Array, x_dim: int,
                       spec: ConvSpec) -> tuple[Array, int]:
    """A batching rule's shared-weights case: ``x``'s mapped axis folded into the
    convolution's batch axis, ``bind(folded_x, folded_spec)``, and the result unfolded."""
    x = jnp.moveaxis(x, x_dim, 0)
    b, n = x.shape[:2]
    folded = dataclasses.replace(spec, input_shape=(b * n,) + tuple(spec.input_shape[1:]))
    y = bind(x.reshape((b * n,) + x.shape[2:]), folded)
    return y.reshape((b, n) + y.shape[1:]), 0


def _transposes(fn: Callable[..., Array]
                ) -> tuple[Callable[..., Array], Callable[..., Array]]:
    """JAX's transposes of a convolution ``fn(x, kernel, spec=, precision=)`` in its input
    and in its kernel, as :func:`_conv_primitive` takes them."""

    # Transposed at the operand's own aval, not a bare shape and dtype: inside
    # jax.shard_map it varies over manual axes, and a cotangent that did not would be the
    # transpose of a cast (summed over those axes).
    def lhs(ct: Array, x: Any, kernel: Array, *, spec: ConvSpec, precision: Any) -> Array:
        return jax.linear_transpose(
            lambda z: fn(z, kernel, spec=spec, precision=precision), x.aval)(ct)[0]

    def rhs(ct: Array, x: Array, kernel: Any, *, spec: ConvSpec, precision: Any) -> Array:
        return jax.linear_transpose(
            lambda k: fn(x, k, spec=spec, precision=precision), kernel.aval)(ct)[0]

    return lhs, rhs


def _tangent_sum(terms: list[Any], value: Any) -> Any:
    """A JVP rule's tangent: the sum of its ``terms``, or ``value``'s symbolic zero where
    there are none (every tangent in was zero: JAX skips the rule then, but a direct call
    of the rule may not; ``ad.Zero.from_primal_value`` is not in every JAX allowed here)."""
    if not terms:
        return ad.Zero(jax.typeof(value).to_tangent_aval())
    return functools.reduce(lax.add, terms)


def _conv_primitive_batch(primitive: Primitive, value: Callable[..., Array],
                          args: Sequence[Array], dims: Sequence[Any], *, spec: ConvSpec,
                          precision: Any) -> tuple[Array, int]:
    """Batched input, shared kernel: the batch axis folded into the convolution's (the
    primitive again, so its transposes stay). A batched kernel: ``value``'s lax ops under
    :func:`jax.vmap` (JAX batches a per-example kernel into a grouped convolution)."""
    x, kernel = args
    x_dim, kernel_dim = dims
    if kernel_dim is None:  # not mapped
        return _bind_batch_folded(
            lambda x, spec: primitive.bind(x, kernel, spec=spec, precision=precision),
            x, x_dim, spec)
    value = functools.partial(value, spec=spec, precision=precision)
    return jax.vmap(value, in_axes=(x_dim, kernel_dim))(x, kernel), 0


def _conv_primitive(name: str, value: Callable[..., Array], lhs: Callable[..., Array],
                    rhs: Callable[..., Array],
                    joint: Callable[..., tuple[Array, Array]] | None = None, *,
                    transposed: bool = False,
                    derivative_value: Callable[..., Array] | None = None) -> Primitive:
    """A convolution primitive ``p(x, kernel, spec=..., precision=...)``: ``value``'s lax
    ops as its evaluation and lowering, the output shape of XLA's plain convolution
    (``transposed``: of the transposed one; :func:`~.spec.conv_output_shape`), bilinear
    with the transposes ``lhs`` (input) and ``rhs`` (kernel), batched by
    :func:`_conv_primitive_batch`; with ``joint`` (both transposes from one call), its
    tangent in both operands is one equation whose transpose calls it
    (:func:`_def_joint_tangent`).

    ``derivative_value`` (lax ops, e.g. the plain convolution), if given, computes the
    primal output inside a derivative (``jvp``, ``grad``, ``vjp``) in ``value``'s place:
    for a value whose forward temporaries would sit beside the gradients' own (a
    derivative's program schedules the two together), above the plain path's memory.
    """
    primitive = Primitive(name)
    primitive.def_impl(value)

    def abstract(x: Any, kernel: Any, *, spec: ConvSpec, precision: Any
                 ) -> jax.core.ShapedArray:
        del precision
        return _output_aval(
            x, conv_output_shape(x.shape, kernel.shape, spec, transposed=transposed),
            spec.preferred_element_type or x.dtype)

    primitive.def_abstract_eval(abstract)
    mlir.register_lowering(primitive, mlir.lower_fun(value, multiple_results=False))
    ad.defbilinear(primitive, lhs, rhs)
    batching.primitive_batchers[primitive] = functools.partial(_conv_primitive_batch,
                                                               primitive, value)
    primal = derivative_value or primitive.bind
    if joint is not None:
        _def_joint_tangent(primitive, value, abstract, lhs, rhs, joint, primal)
    elif derivative_value is not None:
        def jvp(primals: Sequence[Array], tangents: Sequence[Any], **params: Any
                ) -> tuple[Array, Any]:
            (x, kernel), (dx, dk) = primals, tangents
            terms = ([primitive.bind(dx, kernel, **params)] if type(dx) is not ad.Zero
                     else []) + ([primitive.bind(x, dk, **params)]
                                 if type(dk) is not ad.Zero else [])
            y = primal(x, kernel, **params)
            return y, _tangent_sum(terms, y)
        ad.primitive_jvps[primitive] = jvp
    return primitive


def _def_joint_tangent(primitive: Primitive, value: Callable[..., Array],
                       abstract: Callable[..., Any], lhs: Callable[..., Array],
                       rhs: Callable[..., Array],
                       joint: Callable[..., tuple[Array, Array]],
                       primal: Callable[..., Array]) -> None:
    """Forward mode for a bilinear convolution primitive ``p`` whose two transposes cost
    less computed together (``joint(ct, x, kernel, spec=, precision=)`` returns the input's
    and the kernel's cotangents).

    Reverse mode transposes each equation of the linearized program on its own, so the
    tangent ``p(dx, k) + p(x, dk)`` would be transposed by two separate calls. Here that
    sum is one equation, ``pair(dx, dk, x, k)`` (``pair(a, b, c, d) = p(a, d) + p(c, b)``),
    linear in ``(a, b)`` for known ``(c, d)`` and in ``(c, d)`` for known ``(a, b)``: its
    transpose makes one ``joint`` call where both of a pair are unknown. Its own tangent
    is again a sum of such pairs, so ``jvp``, ``grad`` of ``grad`` and
    Hessian-vector products stay exact; under :func:`jax.vmap` it is ``p`` twice.
    ``primal(x, kernel, **params)`` computes the JVP's primal output (``p.bind``, or
    :func:`_conv_primitive`'s ``derivative_value``).
    """
    pair = Primitive(primitive.name + "_pair")

    def pair_value(a: Array, b: Array, c: Array, d: Array, **params: Any) -> Array:
        return value(a, d, **params) + value(c, b, **params)

    pair.def_impl(pair_value)
    pair.def_abstract_eval(lambda a, b, c, d, **params: abstract(a, d, **params))
    mlir.register_lowering(pair, mlir.lower_fun(pair_value, multiple_results=False))

    def products(first: tuple[Any, Any], second: tuple[Any, Any], params: dict[str, Any]
                 ) -> list[Array]:
        """``p(*first) + p(*second)`` less its zero terms: one ``pair`` when both are
        there (``first`` the input's tangent and the kernel, ``second`` the input and the
        kernel's tangent)."""
        (dx, kernel), (x, dk) = first, second
        if type(dx) is ad.Zero and type(dk) is ad.Zero:
            return []
        if type(dk) is ad.Zero:
            return [primitive.bind(dx, kernel, **params)]
        if type(dx) is ad.Zero:
            return [primitive.bind(x, dk, **params)]
        return [pair.bind(dx, dk, x, kernel, **params)]

    def jvp(primals: Sequence[Array], tangents: Sequence[Any], **params: Any
            ) -> tuple[Array, Any]:
        (x, kernel), (dx, dk) = primals, tangents
        y = primal(x, kernel, **params)
        return y, _tangent_sum(products((dx, kernel), (x, dk), params), y)

    def pair_jvp(primals: Sequence[Array], tangents: Sequence[Any], **params: Any
                 ) -> tuple[Array, Any]:
        (a, b, c, d), (da, db, dc, dd) = primals, tangents
        terms = products((da, d), (c, db), params) + products((dc, b), (a, dd), params)
        out = pair.bind(a, b, c, d, **params)
        return out, _tangent_sum(terms, out)

    def pair_transpose(ct: Any, a: Any, b: Any, c: Any, d: Any, **params: Any
                       ) -> list[Any]:
        unknown = [ad.is_undefined_primal(v) for v in (a, b, c, d)]
        if type(ct) is ad.Zero:
            return [ad.Zero(v.aval) if u else None for u, v in zip(unknown, (a, b, c, d))]
        args, out = (a, b, c, d), [None] * 4
        # (a, b) multiply the known (d, c): a's cotangent is lhs(ct, ., d), b's
        # rhs(ct, c, .); (c, d) multiply (b, a) the same way.
        for i, j, x, kernel in ((0, 1, c, d), (2, 3, a, b)):
            if unknown[i] and unknown[j]:
                out[i], out[j] = joint(ct, x, kernel, **params)
            elif unknown[i]:
                out[i] = lhs(ct, args[i], kernel, **params)
            elif unknown[j]:
                out[j] = rhs(ct, x, args[j], **params)
        return out

    def pair_batch(args: Sequence[Array], dims: Sequence[Any], **params: Any
                   ) -> tuple[Array, int]:
        def both(a: Array, b: Array, c: Array, d: Array) -> Array:
            return primitive.bind(a, d, **params) + primitive.bind(c, b, **params)
        # An unbatched operand's dimension is ``None`` (what JAX's private
        # ``batching.not_mapped`` is; the public module no longer exports the name).
        return jax.vmap(both, in_axes=list(dims))(*args), 0

    ad.primitive_jvps[primitive] = jvp
    ad.primitive_jvps[pair] = pair_jvp
    ad.primitive_transposes[pair] = pair_transpose
    batching.primitive_batchers[pair] = pair_batch



def materialized(a: Array) -> Array:
    """``a`` unchanged; inside a derivative (``grad``, ``vjp``, ``jvp``: a training step),
    computed into a buffer of its own that XLA:CPU fuses into no consumer, and so are its
    tangent and cotangent. For a value that is a long chain of cheap elementwise
    operations (the depthwise taps) whose consumers in a derivative's program read it at
    several shifted positions.

    XLA:CPU's fusion pass copies a cheap producer into each consumer that reads it, and
    into a consumer that reads it at up to 15 positions once per position (only a pad,
    concatenate, reduce or dot on the way stops it). A depthwise convolution's output
    reaches its own input gradient's taps through the loss's derivative (``2 * y`` for
    ``sum(y ** 2)``, an activation's mask), and in a stack of them the next layer's input
    gradient reaches this one's: the taps were recomputed there per tap, with the
    input's padded windows materialised. A 3×3 ``depthwise_conv`` on (16, 32, 32, 64),
    ``grad`` of ``sum(y ** 2)``, lower + compile / run / temporaries (lax's): 735 ms /
    24 ms / 35 MiB (204 / 82 / 12) before, 251 ms / 5.5 ms / 5 MiB behind this identity;
    a ReLU between two such layers 1270 ms / 210 ms / 103 MiB (257 / 153 / 20), now
    397 / 7.3 / 9. The cost where nothing needed it (X1's ``vjp`` with a given
    cotangent): one more pass over the output and over the cotangent, ~20 ms of compile
    (a side probe: 1.19 → 1.34 × lax's; the benchmark run at 5a34a80 read 1.19) and X1's
    temporaries 2.25 → 5.1 MiB (lax's 8.1).

    A forward pass alone keeps ``a`` as it is: the identity's loop costs XLA:CPU ~10 ms
    of compile (X1's forward 1.6 → 1.9 × lax's). There a depthwise convolution read by
    another one's taps through elementwise operations (a stack without a pointwise step
    between) is evaluated once, into the second one's padded input
    (``depthwise_taps._pads_once``): a ReLU between two 3×3 layers on (16, 32, 32, 64)
    36 → 2.3 ms, 500 → 75 ms of compile (lax's 58 ms, 39 ms).

    Example:
        >>> a = jnp.arange(6.0).reshape(2, 3)
        >>> y, t = jax.jvp(materialized, (a,), (jnp.ones_like(a),))
        >>> bool(jnp.array_equal(y, a)), bool(jnp.array_equal(t, jnp.ones_like(a)))
        (True, True)
    """
    return _materialized_p.bind(a)


def _own_buffer(a: Array) -> Array:
    """:data:`_own_buffer_p`'s lowering: the maximum over a window of two along a new unit
    axis whose second element is the padding (the dtype's lowest value: ``-inf`` leaves
    ``-0.0`` and NaN as they are). XLA:CPU computes a ``reduce_window`` as a loop of its
    own (it is not loop-fusible), and its simplifier keeps this one (a window of one it
    would remove); one more pass over ``a`` (0.16 ms for X1's 4 MiB). The unit axis is
    never sharded: a sharded ``a`` needs no halo."""
    lowest = (np.array(-np.inf, a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact)
              else np.array(jnp.iinfo(a.dtype).min, a.dtype))
    unit = lax.expand_dims(a, (a.ndim,))
    unit = lax.reduce_window(unit, lowest, lax.max, (1,) * a.ndim + (2,), (1,) * unit.ndim,
                             ((0, 0),) * a.ndim + ((0, 1),))
    return lax.squeeze(unit, (a.ndim,))


def _linear_identity(name: str, lowering: Callable[..., Any]) -> Primitive:
    """An identity primitive ``p(a)`` lowered by ``lowering``, linear (its transpose is
    ``p`` of the cotangent) and elementwise under ``vmap``."""
    primitive = Primitive(name)
    primitive.def_impl(lambda a: a)
    primitive.def_abstract_eval(lambda a: a)
    mlir.register_lowering(primitive, lowering)
    ad.deflinear2(primitive, lambda ct, a: [primitive.bind(ct)])
    batching.defvectorized(primitive)
    return primitive


#: The identity in its own buffer (:func:`_own_buffer`); tangents and cotangents too.
_own_buffer_p = _linear_identity("kconv_own_buffer",
                                 mlir.lower_fun(_own_buffer, multiple_results=False))

#: :func:`materialized`: the plain identity, whose JVP is :data:`_own_buffer_p`'s.
_materialized_p = _linear_identity("kconv_materialized", lambda ctx, a: [a])
ad.primitive_jvps[_materialized_p] = lambda primals, tangents: (
    _own_buffer_p.bind(*primals),
    tangents[0] if type(tangents[0]) is ad.Zero else _own_buffer_p.bind(*tangents))
