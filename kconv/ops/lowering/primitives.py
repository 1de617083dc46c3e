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
