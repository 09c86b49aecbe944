"""Fuzzing the six public ops with hypothesis: random shapes (zeros, 1x200 images, wrong ndim),
dtypes (ints, bools, uint8, float16/32/64, complex, object, strings, datetimes, longdouble),
layouts (Fortran, strided, reversed, read-only, broadcast views, nested lists), NaN/Inf values and
hyper-parameters in and out of range or of the wrong type.

An independent oracle, written from the documented contract (cnnext.ops docstring), lists the
problems of each generated call. A call without problems must succeed on every backend with the
predicted shape and dtype, equal values on the compiled kernels and the NumPy twin (NaN in the
same places), and unmodified inputs. A call with problems must raise, on every backend, the same
ValueError/TypeError/MemoryError whose message starts with the op name and names one of them.

Every op call is counted; each test asserts it made its share, and the shares add up to at least
TOTAL_CALLS (the issue asks for 10,000 generated calls).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from numbers import Integral

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from cnnext import backend, ops
from cnnext.shapes import to_pair

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN/Inf arithmetic
BACKENDS = backend.available_backends()
TOTAL_CALLS = 10_000
# Share of TOTAL_CALLS per op; examples = calls / backends (each example calls every backend).
SHARES = {"conv2d": 0.2, "conv2d_backward": 0.2, "pool2d": 0.18, "pool2d_backward": 0.18,
          "upsample2d": 0.12, "upsample2d_backward": 0.12, "dense": 0.05, "dense_backward": 0.05,
          "relu": 0.05, "relu_backward": 0.05}
EXAMPLES = {op: math.ceil(TOTAL_CALLS * share / len(BACKENDS)) for op, share in SHARES.items()}
TALLY: Counter = Counter()
COMPARED: Counter = Counter()  # valid calls whose results were compared across backends
MAX_PARAMETER = 2**31 - 1
MIN_COMPARED = 20  # most examples are bad calls; at least this many per op must be valid ones
MEMORY = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- generated inputs ---------------------------------------------------------------------------

GOOD_DTYPES = ["float32", "float64"]
OTHER_DTYPES = ["float16", "int8", "int32", "int64", "uint8", "bool", "complex64", "complex128",
                "object", "U3", "S2", "datetime64[s]", "longdouble"]
LAYOUTS = ["C", "F", "strided", "reversed", "readonly", "broadcast", "list"]
JUNK_ARRAYS = [None, 3.0, "abc", [[1.0], [1.0, 2.0]], {}, b"xy"]
BAD_TYPES = [None, 1.0, 2.5, float("nan"), "2", True, False, [1], (1, 2, 3), (1.0, 2), [None, 1],
             {}, b"1", np.float64(2.0), 1j]
BAD_VALUES = [0, -1, -7, (0, 1), [2, -1], (-3, -3)]
TOO_LARGE = [2**31, 10**20, (1, 2**31)]


def _pick(data, weights: dict):
    """One key of ``weights`` drawn with (roughly) the given percentages."""
    roll = data.draw(st.integers(0, sum(weights.values()) - 1))
    for key, weight in weights.items():
        roll -= weight
        if roll < 0:
            return key
    raise AssertionError


def draw_shape(data, base: tuple) -> tuple:
    """``base`` mostly; sometimes with zero dims, a 1x200-style ratio or the wrong ndim."""
    kind = _pick(data, {"base": 70, "zero": 10, "ratio": 10, "ndim": 10})
    shape = list(base)
    if kind == "zero":
        shape[data.draw(st.integers(0, len(shape) - 1))] = 0
    elif kind == "ratio" and len(shape) == 4:
        shape[1:3] = data.draw(st.sampled_from([(1, 200), (200, 1), (2, 97), (64, 1)]))
    elif kind == "ndim":
        shape = shape[:-1] if data.draw(st.booleans()) else shape + [1]
    return tuple(shape)


def make_array(data, shape: tuple, dtype_weights: dict | None = None):
    """An array-like of ``shape``: random dtype, values (NaN/Inf included) and layout, or junk."""
    if _pick(data, {"array": 97, "junk": 3}) == "junk":
        return data.draw(st.sampled_from(JUNK_ARRAYS))
    good = _pick(data, dtype_weights or {"good": 80, "other": 20}) == "good"
    dtype = np.dtype(data.draw(st.sampled_from(GOOD_DTYPES if good else OTHER_DTYPES)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if dtype.kind in "US":
        a = np.full(shape, "ab", dtype)
    elif dtype.kind == "M":
        a = np.zeros(shape, dtype)
    elif dtype.kind == "b":
        a = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        a = rng.integers(0 if dtype.kind == "u" else -3, 4, size=shape).astype(dtype)
    elif dtype.kind == "c":
        a = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    else:
        a = rng.normal(size=shape).astype(dtype)
        if a.size and dtype.kind == "f" and data.draw(st.integers(0, 9)) == 0:
            for _ in range(data.draw(st.integers(1, 3))):
                a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
    layout = data.draw(st.sampled_from(LAYOUTS))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "reversed" and a.ndim:
        a = np.flip(np.flip(a, axis=0).copy(), axis=0)
    elif layout == "readonly":
        a.setflags(write=False)
    elif layout == "broadcast" and a.ndim:
        a = np.broadcast_to(a[:1], shape)
    elif layout == "list":
        return a.tolist()
    return a


def draw_int_param(data, small: st.SearchStrategy, huge: list, moderate=(5, 40)):
    """An int-or-pair hyper-parameter: mostly valid, else out of range or of a wrong type."""
    kind = _pick(data, {"valid": 70, "moderate": 6, "bad_value": 8, "bad_type": 8,
                        "too_large": 4, "huge": 4 if huge else 0})
    if kind == "valid":
        form = data.draw(st.sampled_from(["int", "np", "tuple", "list"]))
        if form in ("tuple", "list"):
            pair = (data.draw(small), data.draw(small))
            return pair if form == "tuple" else list(pair)
        value = data.draw(small)
        return np.int64(value) if form == "np" else value
    if kind == "moderate":
        return data.draw(st.integers(*moderate))
    pool = {"bad_value": BAD_VALUES, "bad_type": BAD_TYPES, "too_large": TOO_LARGE, "huge": huge}
    return data.draw(st.sampled_from(pool[kind]))


def draw_padding(data, small_max: int = 3):
    kind = _pick(data, {"param": 75, "string": 15, "bad_string": 5, "bad_type": 5})
    if kind == "param":
        return draw_int_param(data, st.integers(0, small_max), [10**6, MAX_PARAMETER], (4, 20))
    if kind == "string":
        return data.draw(st.sampled_from(["same", "valid", "SAME", "Valid"]))
    if kind == "bad_string":
        return data.draw(st.sampled_from(["full", "", "causal", "same "]))
    return data.draw(st.sampled_from([1.5, None, [1, 2, 3], (1,), True, {}]))


# --- the oracle: problems of a call, from the documented contract -----------------------------

class Oracle:
    """Collects the problems of one call as ``(exception type, substrings of its message)``."""

    def __init__(self) -> None:
        self.problems: list[tuple[type, tuple[str, ...]]] = []

    def add(self, exc: type, *words: str) -> None:
        self.problems.append((exc, words))

    def array(self, name: str, arg, ndim: int | None):
        """``np.asarray(arg)`` when it is a usable float array of ``ndim`` dims (None: any),
        else None."""
        try:
            a = np.asarray(arg)
        except ValueError:
            return self.add(ValueError, f"{name} is not a rectangular array")
        convertible = a.dtype.kind in "biu" or a.dtype.char in "efd"
        if not convertible:
            return self.add(TypeError, f"{name} has dtype")
        if ndim is not None and a.ndim != ndim:
            return self.add(ValueError, f"{name} must be {ndim}-D", f"{name}.shape=")
        return a

    def nonempty(self, name: str, shape: tuple, first: int) -> bool:
        if 0 in shape[first:]:
            self.add(ValueError, f"{name}.shape=", "empty dimension")
            return False
        return True

    def pair(self, name: str, value, minimum: int = 1):
        """The contract of int-or-pair parameters; the normalised pair or None."""
        def as_int(v):
            return None if isinstance(v, bool) or not isinstance(v, Integral) else int(v)

        if as_int(value) is not None:
            pair = (as_int(value),) * 2
        elif isinstance(value, (tuple, list)) and len(value) == 2 \
                and None not in (as_int(value[0]), as_int(value[1])):
            pair = (as_int(value[0]), as_int(value[1]))
        else:
            return self.add(TypeError, f"{name}=")
        if min(pair) < minimum or max(pair) > MAX_PARAMETER:
            return self.add(ValueError, f"{name}=")
        return pair

    def padding(self, spec, in_hw, kernel_hw, stride, dilation=(1, 1)):
        """``(top, bottom, left, right)`` or None."""
        if isinstance(spec, str):
            if spec.lower() not in ("same", "valid"):
                return self.add(ValueError, "padding=")
            if spec.lower() == "valid":
                return (0, 0, 0, 0)
            if stride is None or dilation is None:
                return None
            pads = []
            for n, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
                total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        pair = self.pair("padding", spec, minimum=0)
        return None if pair is None else (pair[0], pair[0], pair[1], pair[1])

    def fits(self, x_shape, pad, span) -> bool:
        if span[0] > x_shape[1] + pad[0] + pad[1] or span[1] > x_shape[2] + pad[2] + pad[3]:
            self.add(ValueError, "larger than the padded input")
            return False
        return True

    def memory(self, dtype, *shapes) -> None:
        if sum(math.prod(s) for s in shapes) * np.dtype(dtype).itemsize > MEMORY:
            self.add(MemoryError, "GiB", "memory")

    def result(self, dtype, shape) -> None:
        """An empty batch's result must still be an array numpy can make."""
        if (not self.problems and shape[0] == 0
                and math.prod(shape[1:]) * np.dtype(dtype).itemsize > np.iinfo(np.intp).max):
            self.add(ValueError, "too large for a numpy array")

    def dy(self, dy_shape, expected) -> None:
        if dy_shape != expected:
            self.add(ValueError, "dy.shape=", "does not match")


def out_dtype(*arrays) -> np.dtype:
    return np.dtype(np.float64 if any(a is not None and a.dtype == np.float64 for a in arrays)
                    else np.float32)


def out_hw(x_shape, kernel_hw, stride, pad, dilation=(1, 1)) -> tuple[int, int]:
    return tuple((x_shape[1 + i] + pad[2 * i] + pad[2 * i + 1] - dilation[i] * (kernel_hw[i] - 1)
                  - 1) // stride[i] + 1 for i in range(2))


def padded(x_shape, pad) -> tuple:
    return (x_shape[0], x_shape[1] + pad[0] + pad[1], x_shape[2] + pad[2] + pad[3], x_shape[3])


# --- running one call on every backend ----------------------------------------------------------

def _snapshot(arg):
    return np.array(arg, copy=True) if isinstance(arg, np.ndarray) else None


def check_call(op: str, oracle: Oracle, expected_shapes, dtype, *args, **kwargs) -> None:
    """Run ``ops.<op>(*args, **kwargs)`` on every backend and hold it to the oracle."""
    note(f"{op}{args!r} {kwargs!r}")
    before = [_snapshot(a) for a in args]
    outcomes = []
    for name in BACKENDS:
        TALLY[op] += 1
        try:
            outcomes.append(("ok", getattr(ops, op)(*args, **kwargs, backend=name)))
        except (ValueError, TypeError, MemoryError) as exc:
            outcomes.append(("error", exc))
    if oracle.problems:
        for kind, exc in outcomes:
            assert kind == "error", f"{op} accepted a call with problems {oracle.problems}"
            message = str(exc)
            assert message.startswith(f"{op}:"), message
            assert any(isinstance(exc, t) and all(w in message for w in words)
                       for t, words in oracle.problems), (type(exc), message, oracle.problems)
        first = outcomes[0][1]
        for _, exc in outcomes[1:]:
            assert (type(exc), str(exc)) == (type(first), str(first))
        return
    for kind, result in outcomes:
        assert kind == "ok", f"{op} raised {result!r} on a valid call"
    COMPARED[op] += 1
    results = [r if isinstance(r, tuple) else (r,) for _, r in outcomes]
    for parts in results:
        assert [p.shape for p in parts] == list(expected_shapes)
        assert all(p.dtype == dtype for p in parts)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    for parts in results[1:]:
        for got, ref in zip(parts, results[0]):
            np.testing.assert_allclose(got, ref, equal_nan=True, **tol)
    for arg, old in zip(args, before):
        if old is not None:
            np.testing.assert_array_equal(arg, old)


# --- the fuzzed ops -----------------------------------------------------------------------------

def _small(shape) -> bool:
    """A shape whose array can be made for a test (huge ones are for the MemoryError checks)."""
    return shape is not None and math.prod(shape) <= 100_000


def _x_and_geometry(data, c: int | None = None):
    n, h, w = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7))
    c = data.draw(st.integers(1, 4)) if c is None else c
    return draw_shape(data, (n, h, w, c))


def _conv_case(data, backward: bool):
    op = "conv2d_backward" if backward else "conv2d"
    x = make_array(data, _x_and_geometry(data))
    x_c = np.shape(x)[-1] if isinstance(x, np.ndarray) and np.ndim(x) else 1
    same_c = data.draw(st.integers(0, 9)) > 0
    kshape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)),
              x_c if same_c else data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    w = make_array(data, draw_shape(data, kshape))
    stride = draw_int_param(data, st.integers(1, 3), [10**6])
    dilation = draw_int_param(data, st.integers(1, 2), [10**6, MAX_PARAMETER])
    padding = draw_padding(data)
    o = Oracle()
    xa, wa = o.array("x", x, 4), o.array("w", w, 4)
    if xa is not None and wa is not None:
        shapes_ok = o.nonempty("x", xa.shape, 1) & o.nonempty("w", wa.shape, 0)
        if shapes_ok and xa.shape[3] != wa.shape[2]:
            o.add(ValueError, "channels", "x.shape=", "w.shape=")
        s, d = o.pair("stride", stride), o.pair("dilation", dilation)
        pad = o.padding(padding, xa.shape[1:3] if shapes_ok else (1, 1), wa.shape[:2], s, d)
        geometry = None
        if shapes_ok and None not in (s, d, pad):
            span = tuple(d[i] * (wa.shape[i] - 1) + 1 for i in range(2))
            if o.fits(xa.shape, pad, span) and not o.problems:
                geometry = (xa.shape[0], *out_hw(xa.shape, wa.shape[:2], s, pad, d), wa.shape[3])
    else:
        xa = wa = geometry = pad = None
    if not backward:
        b = ba = None
        if data.draw(st.booleans()):
            f = wa.shape[3] if wa is not None and wa.ndim == 4 else 2
            b = make_array(data, (f,) if data.draw(st.integers(0, 9)) else (f + 1,))
            ba = o.array("b", b, 1)
            if ba is not None and wa is not None and ba.shape != (wa.shape[3],):
                o.add(ValueError, "b.shape=")
        if geometry is not None and not o.problems:
            o.memory(out_dtype(xa, wa, ba if b is not None else None), geometry,
                     padded(xa.shape, pad))
            o.result(out_dtype(xa, wa, ba if b is not None else None), geometry)
        shapes = [geometry]
        args = (x, w, b)
    else:
        dy_shape = geometry if _small(geometry) and data.draw(st.integers(0, 4)) else \
            draw_shape(data, (1, 2, 2, 1))
        dy = make_array(data, dy_shape, {"good": 90, "other": 10})
        dya = o.array("dy", dy, 4)
        if geometry is not None and dya is not None:
            o.dy(dya.shape, geometry)
            if not o.problems:
                o.memory(out_dtype(xa, wa, dya), padded(xa.shape, pad))
        shapes = [None if xa is None else xa.shape, None if wa is None else wa.shape,
                  None if wa is None else (wa.shape[3],)]
        args = (dy, x, w)
    dtype = None if o.problems else out_dtype(*(np.asarray(a) for a in args if a is not None))
    check_call(op, o, shapes, dtype, *args,
               stride=stride, padding=padding, dilation=dilation)


def _pool_case(data, backward: bool):
    op = "pool2d_backward" if backward else "pool2d"
    x = make_array(data, _x_and_geometry(data))
    size = draw_int_param(data, st.integers(1, 3), [10**6, MAX_PARAMETER], (4, 9))
    stride = None if data.draw(st.booleans()) else \
        draw_int_param(data, st.integers(1, 3), [10**6, MAX_PARAMETER])
    padding = draw_padding(data, small_max=1)
    mode = data.draw(st.sampled_from(["max", "min", "avg", "max", "avg", "MAX", "mean", None]))
    relu = data.draw(st.sampled_from([False, False, True, "yes", 1]))
    o = Oracle()
    xa = o.array("x", x, 4)
    geometry = pad = None
    if xa is not None:
        shape_ok = o.nonempty("x", xa.shape, 1)
        if mode not in ("max", "min", "avg"):
            o.add(ValueError, "mode=")
        if not isinstance(relu, bool):
            o.add(TypeError, "relu must be a bool")
        elif relu and mode == "avg":
            o.add(ValueError, "relu=True needs mode")
        k = o.pair("size", size)
        s = k if stride is None else o.pair("stride", stride)
        pad = o.padding(padding, xa.shape[1:3], k or (1, 1), s)
        if shape_ok and None not in (k, s, pad):
            if max(pad[:2]) >= k[0] or max(pad[2:]) >= k[1]:
                o.add(ValueError, "must be smaller than the pool size")
            elif o.fits(xa.shape, pad, k) and not o.problems:
                geometry = (xa.shape[0], *out_hw(xa.shape, k, s, pad), xa.shape[3])
    if not backward:
        if geometry is not None:
            o.memory(out_dtype(xa), geometry, padded(xa.shape, pad))
            o.result(out_dtype(xa), geometry)
        args, shapes = (x,), [geometry]
        dtype = out_dtype(xa) if xa is not None else None
    else:
        dy_shape = geometry if _small(geometry) and data.draw(st.integers(0, 4)) else \
            draw_shape(data, (1, 2, 2, 1))
        dy = make_array(data, dy_shape, {"good": 90, "other": 10})
        dya = o.array("dy", dy, 4)
        if geometry is not None and dya is not None:
            o.dy(dya.shape, geometry)
            if not o.problems:
                o.memory(out_dtype(xa, dya), padded(xa.shape, pad))
        args, shapes = (dy, x), [None if xa is None else xa.shape]
        dtype = out_dtype(xa, dya) if not o.problems else None
    check_call(op, o, shapes, dtype, *args, size, stride=stride, padding=padding, mode=mode,
               relu=relu)


def _upsample_case(data, backward: bool):
    op = "upsample2d_backward" if backward else "upsample2d"
    scale = draw_int_param(data, st.integers(1, 3), [10**6, MAX_PARAMETER], (4, 6))
    o = Oracle()
    if not backward:
        x = make_array(data, _x_and_geometry(data))
        xa = o.array("x", x, 4)
        s = o.pair("scale", scale)
        shape = None
        if xa is not None and o.nonempty("x", xa.shape, 1) and s is not None:
            shape = (xa.shape[0], xa.shape[1] * s[0], xa.shape[2] * s[1], xa.shape[3])
            o.memory(out_dtype(xa), shape)
            o.result(out_dtype(xa), shape)
        check_call(op, o, [shape], None if xa is None else out_dtype(xa), x, scale)
        return
    s_hint = scale if isinstance(scale, int) and 1 <= scale <= 3 else 1
    n, h, w = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    exact = data.draw(st.integers(0, 3)) > 0
    dy_shape = draw_shape(data, (n, h * s_hint + (not exact), w * s_hint, data.draw(st.integers(1, 3))))
    dy = make_array(data, dy_shape)
    dya = o.array("dy", dy, 4)
    s = o.pair("scale", scale)
    shape = None
    if dya is not None and o.nonempty("dy", dya.shape, 1) and s is not None:
        if dya.shape[1] % s[0] or dya.shape[2] % s[1]:
            o.add(ValueError, "dy.shape=", "not a multiple")
        else:
            shape = (dya.shape[0], dya.shape[1] // s[0], dya.shape[2] // s[1], dya.shape[3])
    check_call(op, o, [shape], None if dya is None else out_dtype(dya), dy, scale)


def _dense_case(data, backward: bool):
    """``x (N, D) @ w (D, U) + b``: sizes around the kernel's tiles, mismatched ``w``, ``b`` or
    ``dy`` now and then."""
    op = "dense_backward" if backward else "dense"
    n, d, u = (data.draw(st.integers(lo, 40)) for lo in (0, 1, 1))
    x = make_array(data, draw_shape(data, (n, d)))
    w_rows = d if data.draw(st.integers(0, 9)) else data.draw(st.integers(1, 40))
    w = make_array(data, draw_shape(data, (w_rows, u)))
    o = Oracle()
    xa, wa = o.array("x", x, 2), o.array("w", w, 2)
    ok = xa is not None and wa is not None
    if ok:
        ok = o.nonempty("x", xa.shape, 1) & o.nonempty("w", wa.shape, 0)
        if ok and xa.shape[1] != wa.shape[0]:
            o.add(ValueError, "features", f"x.shape={xa.shape}", f"w.shape={wa.shape}")
            ok = False
    if not backward:
        b = None if data.draw(st.booleans()) else \
            make_array(data, draw_shape(data, (u if data.draw(st.integers(0, 9)) else u + 1,)))
        ba = None if b is None else o.array("b", b, 1)
        if ok and ba is not None and ba.shape != (wa.shape[1],):
            o.add(ValueError, f"b.shape={ba.shape}", "units")
        dtype = None if o.problems else out_dtype(xa, wa, ba)
        check_call(op, o, [(xa.shape[0], wa.shape[1]) if ok else None], dtype, x, w, b)
        return
    dy_shape = (n, u) if data.draw(st.integers(0, 4)) else draw_shape(data, (n, u + 1))
    dy = make_array(data, dy_shape, {"good": 90, "other": 10})
    dya = o.array("dy", dy, 2)
    if ok and dya is not None:
        o.dy(dya.shape, (xa.shape[0], wa.shape[1]))
    shapes = [xa.shape, wa.shape, (wa.shape[1],)] if ok else []
    dtype = None if o.problems else out_dtype(dya, xa, wa)
    check_call(op, o, shapes, dtype, dy, x, w)


def _relu_case(data, backward: bool):
    """Any rank (scalars included) and size; ``dy`` sometimes of another shape."""
    shape = tuple(data.draw(st.lists(st.integers(0, 9), max_size=4)))
    o = Oracle()
    x = make_array(data, shape)
    xa = o.array("x", x, None)
    if not backward:
        check_call("relu", o, [None if xa is None else xa.shape],
                   None if xa is None else out_dtype(xa), x)
        return
    same = data.draw(st.integers(0, 4)) > 0
    dy = make_array(data, shape if same else tuple(data.draw(st.lists(st.integers(0, 9),
                                                                         max_size=4))))
    dya = o.array("dy", dy, None)
    if xa is not None and dya is not None and dya.shape != xa.shape:
        o.add(ValueError, f"dy.shape={dya.shape}", f"x.shape={xa.shape}")
    dtype = out_dtype(dya, xa) if xa is not None and dya is not None else None
    check_call("relu_backward", o, [None if xa is None else xa.shape], dtype, dy, x)


CASES = {"conv2d": _conv_case, "conv2d_backward": _conv_case, "pool2d": _pool_case,
         "pool2d_backward": _pool_case, "upsample2d": _upsample_case,
         "upsample2d_backward": _upsample_case, "dense": _dense_case,
         "dense_backward": _dense_case, "relu": _relu_case, "relu_backward": _relu_case}


def _run(op: str) -> None:
    @settings(FUZZ, max_examples=EXAMPLES[op])
    @given(st.data())
    def fuzz(data) -> None:
        CASES[op](data, backward=op.endswith("_backward"))

    before, compared_before = TALLY[op], COMPARED[op]
    fuzz()
    made, compared = TALLY[op] - before, COMPARED[op] - compared_before
    assert made >= 0.95 * EXAMPLES[op] * len(BACKENDS), (op, made)
    assert compared >= MIN_COMPARED, f"{op}: only {compared} valid calls compared"
    print(f"\n{op}: {made} fuzzed calls, {compared} valid ones compared")


def test_fuzz_conv2d():
    _run("conv2d")


def test_fuzz_conv2d_backward():
    _run("conv2d_backward")


def test_fuzz_pool2d():
    _run("pool2d")


def test_fuzz_pool2d_backward():
    _run("pool2d_backward")


def test_fuzz_upsample2d():
    _run("upsample2d")


def test_fuzz_upsample2d_backward():
    _run("upsample2d_backward")


def test_fuzz_dense():
    _run("dense")


def test_fuzz_dense_backward():
    _run("dense_backward")


def test_fuzz_relu():
    _run("relu")


def test_fuzz_relu_backward():
    _run("relu_backward")


def test_the_shares_add_up_to_the_required_total():
    assert sum(EXAMPLES.values()) * len(BACKENDS) >= TOTAL_CALLS


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_conv2d_backward_keeps_a_nan_in_dy_to_its_own_cells(backend_name, bad):
    """dx[n, h, w, :] depends only on the dy cells whose windows cover (h, w): a NaN or infinity
    in dy must make exactly the cells of its window non-finite, no others (found by the fuzzer
    above: the compiled scatter kernel's zero padding lanes used to spread it)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, h, w, c, f = (int(v) for v in rng.integers(1, 6, size=5))
        kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))
        x = rng.normal(size=(n, h, w, c)).astype(np.float32)
        kernel = rng.normal(size=(kh, kw, c, f)).astype(np.float32)
        dy = rng.normal(size=(n, h - kh + 1, w - kw + 1, f)).astype(np.float32)
        at = tuple(int(rng.integers(s)) for s in dy.shape)
        dy[at] = bad
        dx = ops.conv2d_backward(dy, x, kernel, backend=backend_name)[0]
        expected = np.zeros(dx.shape, bool)
        expected[at[0], at[1]:at[1] + kh, at[2]:at[2] + kw, :] = True  # its window
        np.testing.assert_array_equal(~np.isfinite(dx), expected,
                                      err_msg=f"{x.shape} {kernel.shape}")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("c, k, f, dilation", [(6, 5, 16, 1), (3, 3, 8, (1, 2)), (1, 3, 40, 1)])
@pytest.mark.parametrize("n", [3, 8])
def test_conv2d_backward_keeps_non_finite_dy_to_its_window_on_larger_layers(backend_name, bad, c,
                                                                           k, f, dilation, n):
    """The same on shapes where the compiled kernels scatter (LeNet's second layer: the last
    vector of a kernel row's span is masked; by rows for 3 samples, sliding down them for 8) or,
    for a dilated row, use the planar path."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 14, 15, c)).astype(np.float32)
    kernel = rng.normal(size=(k, k, c, f)).astype(np.float32)
    dh, dw = to_pair(dilation, "dilation")
    span = (k - 1) * dh + 1, (k - 1) * dw + 1
    dy = rng.normal(size=(n, 15 - span[0], 16 - span[1], f)).astype(np.float32)
    at = (1, 4, 5, 2)
    dy[at] = bad
    dx = ops.conv2d_backward(dy, x, kernel, dilation=dilation, backend=backend_name)[0]
    expected = np.zeros(dx.shape, bool)
    expected[1, 4:4 + span[0]:dh, 5:5 + span[1]:dw, :] = True  # the cells its window reads
    np.testing.assert_array_equal(~np.isfinite(dx), expected)


def _non_finite_pattern(a: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), 2, np.where(np.isinf(a), 1, 0))


@pytest.mark.parametrize("where", ["x", "w"])
def test_conv2d_backward_spreads_a_non_finite_x_or_w_only_where_the_forward_multiplies_it(where):
    """A NaN or infinity in x (w) must reach only the weight (input) gradients of the products
    the forward makes with it: the compiled pixel-lane kernels also multiplied it by the zeros
    past each output-gradient row (interleaved into dy), giving NaN where the twin and PyTorch
    have finite values (found by a review). Compiled and twin must agree cell by cell."""
    rng = np.random.default_rng(2)
    for _ in range(150):
        kh, kw, sh, sw, dh, dw = (int(v) for v in rng.integers(1, [4, 4, 3, 3, 3, 3]))
        h, w_, c = int(rng.integers(3, 12)), int(rng.integers(3, 12)), int(rng.choice([1, 2, 4]))
        f = int(rng.choice([1, 2, 3, 8, 16]))
        x = rng.normal(size=(2, h, w_, c))
        kernel = rng.normal(size=(kh, kw, c, f))
        conv = dict(stride=(sh, sw), dilation=(dh, dw), padding=["valid", "same", 1][_ % 3])
        try:
            dy = np.ones(ops.conv2d(x, kernel, **conv, backend="numpy").shape)
        except ValueError:  # the kernel does not fit
            continue
        target = x if where == "x" else kernel
        target.flat[int(rng.integers(target.size))] = rng.choice([np.inf, -np.inf, np.nan])
        with np.errstate(invalid="ignore"):
            twin = ops.conv2d_backward(dy, x, kernel, **conv, backend="numpy")
            compiled = ops.conv2d_backward(dy, x, kernel, **conv, backend="cython")
        for name, a, b in zip(("dx", "dw", "db"), twin, compiled):
            np.testing.assert_array_equal(_non_finite_pattern(b), _non_finite_pattern(a),
                                          err_msg=f"{name}: {x.shape} {kernel.shape} {conv}")


def test_conv2d_backward_of_a_non_finite_weight_or_input_cell_by_hand():
    ones = np.ones((1, 1, 4, 1))
    dx = ops.conv2d_backward(np.ones((1, 1, 2, 1)), ones, np.full((1, 1, 1, 1), np.inf),
                             stride=2, backend="cython")[0]
    np.testing.assert_array_equal(dx.ravel(), [np.inf, 0, np.inf, 0])  # odd columns unread
    x = np.ones((2, 9, 3, 2))
    x[0, 8, 0, 0] = np.inf  # read only by the tap (kh=2, kw=0) at dilation (2, 1)
    with np.errstate(all="raise"):  # the kernel choice checks finiteness without warnings
        dw = ops.conv2d_backward(np.ones((2, 5, 1, 3)), x, np.ones((3, 3, 2, 3)),
                                 dilation=(2, 1), backend="cython")[1]
    np.testing.assert_array_equal(dw[:, :, 0, 0], [[10, 10, 10], [10, 10, 10], [np.inf, 10, 10]])
