"""Run the CUDA C bodies of minidl/kernels/cuda.py on the CPU, element by element, in Python.

This checks the kernels' index arithmetic where no GPU is at hand: the very source text CuPy would compile
is translated line by line into Python and executed once per element ``i``, with C semantics where they
differ from Python's (integer ``/`` truncates toward zero, ``%`` takes the sign of the dividend), array
element types kept (float32 arithmetic stays float32), and CuPy's ElementwiseKernel conventions: non-raw
arguments are broadcast and bound to their element ``i``, raw arguments are indexed by flat C-order index.

Only the C subset the kernels use is accepted (anything else raises): one statement per line;
``TYPE name = expr;``, ``lhs = expr;``, ``lhs += expr;``, ``if (...) {``, ``} else if (...) {``, ``} else {``,
``}``, ``for (int v = a; v < b; ++v) {``, ``continue;``; expressions with + - * / %, comparisons, && ||,
``T(value)`` casts and ``sqrt``.  It is slow: use small shapes.
"""
from __future__ import annotations

import ast
import re

import numpy as np

_TYPE = r"(?:const\s+)?(?:ptrdiff_t|int|long long|size_t|bool|float|double|T|I)"
_CTYPES = {"int32": np.int32, "int64": np.int64, "uint8": np.uint8, "float32": np.float32, "float64": np.float64,
           "bool": np.bool_}


def _cdiv(a, b):
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        a, b = int(a), int(b)
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def _cmod(a, b):
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        a, b = int(a), int(b)
        return a - b * _cdiv(a, b)
    return np.fmod(a, b)


class _CSemantics(ast.NodeTransformer):
    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, (ast.Div, ast.Mod)):
            fn = "_cdiv" if isinstance(node.op, ast.Div) else "_cmod"
            return ast.copy_location(ast.Call(ast.Name(fn, ast.Load()), [node.left, node.right], []), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1:
            raise ValueError("chained comparisons mean something else in C; use && ")
        return node


def expr(text: str) -> str:
    """A C expression as Python source with C's integer division and remainder."""
    if re.search(r"!(?!=)", text) or "?" in text or re.search(r"\(\s*(?:int|float|double|T|ptrdiff_t)\s*\)", text):
        raise ValueError(f"unsupported C in expression {text!r} (no !, ?:, or C-style casts)")
    py = text.replace("&&", " and ").replace("||", " or ")
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", py))
    tree = ast.fix_missing_locations(_CSemantics().visit(ast.parse(py.strip(), mode="eval")))
    return ast.unparse(tree)


def translate(body: str) -> str:
    """Python source of a kernel body (see the module docstring for the accepted subset)."""
    out, depth = [], 0

    def emit(s):
        out.append("    " * depth + s)

    for raw in body.splitlines():
        line = raw.split("//")[0].strip()
        if not line:
            continue
        if line == "}":
            depth -= 1
            continue
        m = re.fullmatch(r"for \((?:int|ptrdiff_t) (\w+) = (.+); (\w+) < (.+); \+\+(\w+)\) \{", line)
        if m:
            v, a, v2, b, v3 = m.groups()
            if not v == v2 == v3:
                raise ValueError(f"unsupported for loop {line!r}")
            emit(f"for {v} in range({expr(a)}, {expr(b)}):")
            depth += 1
            continue
        m = re.fullmatch(r"\} else if \((.+)\) \{", line)
        if m:
            depth -= 1
            emit(f"elif {expr(m.group(1))}:")
            depth += 1
            continue
        if line == "} else {":
            depth -= 1
            emit("else:")
            depth += 1
            continue
        m = re.fullmatch(r"if \((.+)\) \{", line)
        if m:
            emit(f"if {expr(m.group(1))}:")
            depth += 1
            continue
        if line in ("continue;", "break;"):
            emit(line[:-1])
            continue
        m = re.fullmatch(rf"{_TYPE}\s+(\w+) = (.+);", line)
        if m:
            emit(f"{m.group(1)} = {expr(m.group(2))}")
            continue
        m = re.fullmatch(r"([\w\[\]\s\(\)\*\+\-%/]+?) (=|\+=|-=|\*=) (.+);", line)
        if m:
            lhs, op, rhs = m.groups()
            emit(f"{expr(lhs)} {op} {expr(rhs)}")
            continue
        raise ValueError(f"unsupported kernel line {line!r}")
    if depth != 0:
        raise ValueError("unbalanced braces in kernel body")
    return "\n".join(out)


def parse_params(params: str):
    """[(raw, type, name)] of a CuPy parameter list such as 'raw T x, int32 H'."""
    out = []
    for p in params.split(","):
        words = p.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        out.append((raw, words[0], words[1]))
    return out


def _resolve_types(params, args):
    """The NumPy dtype of each type placeholder (T, I), from the arrays passed for it."""
    types = {}
    for raw, typ, name in params:
        if typ not in _CTYPES and isinstance(args.get(name), np.ndarray):
            types.setdefault(typ, args[name].dtype.type)
    return types


def run_elementwise(spec, *args):
    """Run an ElementwiseKernel Spec on NumPy arrays as CuPy would on the GPU (arguments in the kernel's order,
    inputs then outputs, the outputs given as arrays and filled in place)."""
    params = parse_params(spec.in_params) + parse_params(spec.out_params)
    n_in = len(parse_params(spec.in_params))
    if len(args) not in (n_in, len(params)):
        raise TypeError(f"{spec.name} takes {n_in} inputs and optionally {len(params) - n_in} outputs, "
                        f"got {len(args)} arguments")
    named = dict(zip((p[2] for p in params), args))
    types = _resolve_types(params, named)
    if len(args) == n_in:  # outputs allocated with the inputs' broadcast shape, as CuPy does
        shape = np.broadcast_shapes(*(named[p[2]].shape for p in params[:n_in]
                                      if not p[0] and isinstance(named[p[2]], np.ndarray)))
        for raw, typ, name in params[n_in:]:
            named[name] = np.empty(shape, dtype=types.get(typ) or _CTYPES[typ])
    code = compile(translate(spec.body), spec.name, "exec")
    base = {"_cdiv": _cdiv, "_cmod": _cmod, "sqrt": np.sqrt}
    base.update(types)
    env = base
    elementwise, outputs = [], []
    for k, (raw, typ, name) in enumerate(params):
        value = named[name]
        kind = types.get(typ) or _CTYPES[typ]
        if isinstance(value, np.ndarray):
            if value.dtype.type is not kind:
                raise TypeError(f"{spec.name}: {name} has dtype {value.dtype}, the kernel's {typ} is {np.dtype(kind)}")
            if raw:
                base[name] = np.ascontiguousarray(value).reshape(-1)  # flat C-order index, as CArray[i]
            else:
                elementwise.append((name, value, k >= n_in))
        else:  # a scalar is converted to the parameter's type, as CuPy does
            value = kind(value)
            base[name] = int(value) if np.issubdtype(kind, np.integer) else value
    shape = np.broadcast_shapes(*(v.shape for _, v, _ in elementwise))
    flats = []
    for name, value, is_out in elementwise:
        if is_out:
            if value.shape != shape:
                raise ValueError(f"{spec.name}: output {name} has shape {value.shape}, expected {shape}")
            outputs.append((name, value))
        flats.append((name, np.broadcast_to(value, shape).reshape(-1) if not is_out else value.reshape(-1)))
    size = int(np.prod(shape))
    for i in range(size):
        env = dict(base)  # nothing carries over from the previous element
        env["i"] = i
        for name, flat in flats:
            env[name] = flat[i]
        exec(code, env)
        for name, value in outputs:
            value.reshape(-1)[i] = env[name]
    return tuple(v for _, v in outputs) if len(outputs) > 1 else outputs[0][1]


def run_reduction(spec, *args, axis):
    """Run a ReductionSpec (sum reductions only: reduce 'a + b', post map 'out = a', identity 0) on NumPy arrays."""
    if spec.reduce_expr != "a + b" or spec.identity != "0" or not re.fullmatch(r"\w+ = a", spec.post_map):
        raise ValueError(f"{spec.name}: only plain sums are emulated")
    params = parse_params(spec.in_params)
    named = dict(zip((p[2] for p in params), args))
    arrays = np.broadcast_arrays(*(named[p[2]] for p in params))
    env = {"_cdiv": _cdiv, "_cmod": _cmod, "sqrt": np.sqrt}
    out = None
    shape = arrays[0].shape
    for flat_i in range(int(np.prod(shape))):
        idx = np.unravel_index(flat_i, shape)
        for (raw, typ, name), a in zip(params, arrays):
            env[name] = a[idx]
        value = eval(expr(spec.map_expr), env)
        if out is None:
            out = np.zeros(tuple(s for k, s in enumerate(shape) if k != axis), dtype=np.asarray(value).dtype)
        key = tuple(j for k, j in enumerate(idx) if k != axis)
        out[key] = out[key] + value
    return out


# ---------------------------------------------------------------- CUDA source for a compile check with nvcc
_CUDA_TYPES = {"int32": "int", "int64": "long long", "uint8": "unsigned char", "float32": "float",
               "float64": "double", "bool": "bool"}
_CUDA_PRELUDE = """#include <cstddef>
template <typename T> struct CArray {  // stand-in for CuPy's CArray: indexed by a flat element index
  T* data_;
  __device__ T& operator[](ptrdiff_t i) { return data_[i]; }
  __device__ const T& operator[](ptrdiff_t i) const { return data_[i]; }
};
"""


def _cuda_kernel(spec):
    """One kernel laid out as CuPy's ElementwiseKernel generates it: non-raw inputs bound as ``const T x``,
    outputs as ``T &y``, raw arguments as arrays, the loop variable ``i``."""
    ins, outs = parse_params(spec.in_params), parse_params(spec.out_params)
    args, binds = [], []
    for k, (raw, typ, name) in enumerate(ins + outs):
        ctype = _CUDA_TYPES.get(typ, typ)
        is_array = raw or k >= len(ins) or typ not in _CUDA_TYPES
        if raw:
            args.append(f"CArray<{ctype}> {name}")
        elif is_array:
            args.append(f"CArray<{ctype}> _raw_{name}")
            binds.append(f"{'const ' if k < len(ins) else ''}{ctype} {'&' if k >= len(ins) else ''}{name} = "
                         f"_raw_{name}[i];")
        else:
            args.append(f"{ctype} {name}")
    return (f"__global__ void {spec.name}({', '.join(args + ['ptrdiff_t _size'])}) {{\n"
            f"  for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < _size; "
            f"i += (ptrdiff_t)blockDim.x * gridDim.x) {{\n    " + "\n    ".join(binds) + "\n"
            + spec.body + "\n  }\n}\n")


def _cuda_map(spec):
    ins = parse_params(spec.in_params)
    args = ", ".join(f"const {_CUDA_TYPES.get(t, t)} {n}" for _, t, n in ins)
    return f"__device__ T {spec.name}_map({args}) {{ return ({spec.map_expr}); }}\n"


def cuda_source(elementwise_specs, reduction_specs) -> str:
    """A .cu file with every kernel, instantiated for float32 (uint8 indices) and float64 (int32 indices)."""
    parts = [_CUDA_PRELUDE]
    for ns, t, idx in (("f32", "float", "unsigned char"), ("f64", "double", "int")):
        parts.append(f"namespace {ns} {{\ntypedef {t} T;\ntypedef {idx} I;\n")
        parts += [_cuda_kernel(s) for s in elementwise_specs]
        parts += [_cuda_map(s) for s in reduction_specs]
        parts.append(f"}}  // namespace {ns}\n")
    return "\n".join(parts)
