"""Save and load whole models: one file per model (see :mod:`cnnext.model_file` for the format),
no pickle, atomic writes, everything verified before a loaded model is built.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import IO, Any, Iterator

import numpy as np

from ._config import __version__
from .layers.base import WeightSpecs
from .model_file import FORMAT_NAME, FORMAT_VERSION, HEADER_KEY, ModelFileError, checksum, read_archive

__all__ = ["ModelFileError", "atomic_write", "check_writable", "load_model", "save_model"]


# --------------------------------------------------------------------------------------- writing
def check_writable(path: str | os.PathLike) -> str:
    """The directory a new file at ``path`` would go in; FileNotFoundError when that directory
    does not exist, IsADirectoryError when ``path`` itself is a directory (both naming ``path``)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory")
    return directory


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a new temporary file beside ``path`` for binary writing; on success flush, fsync and
    ``os.replace`` it onto ``path`` (then fsync the directory). On any error the temporary file is
    removed and ``path`` is left exactly as it was. The file gets the usual permissions
    (``0o666`` less the umask), like a file opened with ``open(path, "wb")``."""
    path = os.fspath(path)
    directory = check_writable(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_archive(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)


def _array_entries(model: Any) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(header entry, array) for every layer param, layer state and optimizer state array."""
    entries = []
    for index, layer in enumerate(model.layers):
        for kind in ("params", "state"):
            for key, value in getattr(layer, kind).items():
                entries.append(({"name": f"layers/{index}/{kind}/{key}", "kind": kind,
                                 "layer": index, "key": key}, np.asarray(value)))
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        for key, value in optimizer.get_state().items():
            entries.append(({"name": f"optimizer/{key}", "kind": "optimizer", "layer": None,
                             "key": key}, np.asarray(value)))
    for entry, array in entries:
        entry["shape"] = list(array.shape)
        entry["dtype"] = array.dtype.str
    return entries


def _rng_states(model: Any) -> list[dict[str, Any]]:
    """The state of each layer's random generator (Dropout's ``rng``), so that training resumes
    with the same masks it would have drawn without the save."""
    return [{"layer": index, "state": layer.rng.bit_generator.state}
            for index, layer in enumerate(model.layers)
            if isinstance(getattr(layer, "rng", None), np.random.Generator)]


def save_model(model: Any, path: str | os.PathLike) -> str:
    """Write ``model`` (architecture, weights, layer state, compile settings and optimizer state)
    to ``path`` atomically: a crash mid-save leaves any previous file at ``path`` intact.

    ``path`` is used as given (no suffix is appended). Returns ``path`` as a string.
    """
    if not getattr(model, "built", False):
        raise ValueError("cannot save a model that is not built yet; give the first layer an "
                         "input_shape or call fit/predict once")
    entries = _array_entries(model)
    compile_config = model.compile_config() if getattr(model, "optimizer", None) is not None else None
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "cnnext_version": __version__,
        "model_config": model.get_config(),
        "compile_config": compile_config,
        "arrays": [entry for entry, _ in entries],
        "rng_states": _rng_states(model),
    }
    arrays = {entry["name"]: array for entry, array in entries}
    header["sha256"] = checksum(header, arrays)
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    arrays[HEADER_KEY] = np.frombuffer(header_bytes, dtype=np.uint8)
    with atomic_write(path) as f:
        _write_archive(f, arrays)
    return os.fspath(path)


# --------------------------------------------------------------------------------------- loading
def _unbuilt_model(header: dict[str, Any], path: str) -> tuple[Any, list[WeightSpecs]]:
    """The model ``model_config`` describes, not built yet, and the weights building it for its
    input shape will create (:meth:`Sequential.weight_specs`; nothing allocated)."""
    from .layers import get_layer_class
    from .models import Sequential

    config = header["model_config"]
    for spec in config["layers"]:
        try:
            get_layer_class(spec["class_name"])
        except ValueError as exc:
            raise ModelFileError(f"{path!r}: {exc}") from None
    if config.get("input_shape") is None:
        raise ModelFileError(f"{path!r}: model_config has no input_shape, so the weights cannot be "
                             "matched to layers")
    try:
        model = Sequential.from_config(config, build=False)
        return model, model.weight_specs(config["input_shape"])
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise ModelFileError(f"{path!r}: invalid model_config: {exc}") from exc


def _describe(shape: Any, dtype: Any) -> str:
    """``shape [...] dtype float32``; a non-native byte order shows, e.g. ``dtype >f4``."""
    dtype = np.dtype(dtype)
    return f"shape {list(shape)} dtype {dtype.name if dtype.isnative else dtype.str}"


def _check_layer_arrays(model: Any, specs: list[WeightSpecs], header: dict[str, Any],
                        path: str) -> None:
    """Every layer's stored params/state keys, shapes and dtypes equal the ones it will have."""
    stored: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
    for entry in header["arrays"]:
        if entry["kind"] != "optimizer":
            stored.setdefault((entry["layer"], entry["kind"]), {})[entry["key"]] = entry
    for index, (layer, layer_specs) in enumerate(zip(model.layers, specs)):
        for kind in ("params", "state"):
            expected = layer_specs[kind]
            found = stored.get((index, kind), {})
            if list(found) != list(expected):
                raise ModelFileError(
                    f"{path!r}: layer {index} ({layer.name!r}, {type(layer).__name__}) expects "
                    f"{kind} {list(expected)} but the file has {list(found)}")
            for key, spec in expected.items():
                entry = found[key]
                if entry["shape"] != list(spec.shape) or np.dtype(entry["dtype"]) != model.dtype:
                    raise ModelFileError(
                        f"{path!r}: array {entry['name']!r} has {_describe(entry['shape'], entry['dtype'])} "
                        f"but layer {index} ({layer.name!r}) expects "
                        f"{_describe(spec.shape, model.dtype)}")


def _check_optimizer_arrays(model: Any, specs: list[WeightSpecs], header: dict[str, Any],
                            path: str) -> None:
    """Optimizer state: a scalar integer ``iterations`` plus ``slot:<layer>.<param>`` buffers
    shaped like the parameters they belong to."""
    shapes = {f"{layer.name}.{key}": spec.shape for layer, layer_specs in zip(model.layers, specs)
              for key, spec in layer_specs["params"].items()}
    entries = [e for e in header["arrays"] if e["kind"] == "optimizer"]
    if entries and header["compile_config"] is None:
        raise ModelFileError(f"{path!r}: optimizer state is stored but compile_config is null")
    for entry in entries:
        key = entry["key"]
        if key == "iterations":
            ok = entry["shape"] == [] and np.dtype(entry["dtype"]).kind in "iu"
            expected = "a scalar integer"
        else:
            shape = shapes.get(key.partition(":")[2])
            ok = shape is not None and entry["shape"] == list(shape) \
                and np.dtype(entry["dtype"]) == model.dtype
            expected = f"parameter {key.partition(':')[2]!r}" + (
                " (no such parameter)" if shape is None else f" with {_describe(shape, model.dtype)}")
        if not ok:
            raise ModelFileError(f"{path!r}: optimizer state {key!r} "
                                 f"({_describe(entry['shape'], entry['dtype'])}) "
                                 f"does not match {expected}")


def _compile(model: Any, header: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> None:
    """Recompile from ``compile_config`` and restore the optimizer state (both validated)."""
    if header["compile_config"] is None:
        return
    try:
        model.compile_from_config(header["compile_config"])
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
        raise ModelFileError(f"{path!r}: invalid compile_config: {exc!r}") from exc
    try:
        model.optimizer.set_state({e["key"]: arrays[e["name"]] for e in header["arrays"]
                                   if e["kind"] == "optimizer"})
    except ValueError as exc:
        raise ModelFileError(f"{path!r}: invalid optimizer state: {exc}") from exc


def _build(model: Any, header: dict[str, Any], path: str) -> None:
    """Build the (checked) model: allocate its weights."""
    try:
        model.build(header["model_config"]["input_shape"])
    except MemoryError:
        raise ModelFileError(f"{path!r}: model_config describes a model too large to build "
                             "in memory") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ModelFileError(f"{path!r}: invalid model_config: {exc}") from exc


def _restore(model: Any, header: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> None:
    """Copy the weights, layer state and random generator states in."""
    by_layer: dict[int, dict[str, np.ndarray]] = {}
    for entry in header["arrays"]:
        if entry["kind"] != "optimizer":
            by_layer.setdefault(entry["layer"], {})[f"{entry['kind']}/{entry['key']}"] = arrays[entry["name"]]
    for index, layer in enumerate(model.layers):
        stored = by_layer.get(index, {})
        layer.set_weights([stored[f"{kind}/{key}"] for kind in ("params", "state")
                           for key in getattr(layer, kind)])
    for item in header["rng_states"]:
        _restore_rng(model, item, path)


def _restore_rng(model: Any, item: Any, path: str) -> None:
    """Put a layer's random generator (e.g. Dropout masks) back where training left it."""
    try:
        layer = model.layers[item["layer"]]
        layer.rng.bit_generator.state = item["state"]
    except (TypeError, ValueError, OverflowError, KeyError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"{path!r}: malformed header: bad rng_states entry ({exc!r})") from exc


def load_model(path: str | os.PathLike) -> Any:
    """Read a model written by :func:`save_model`.

    Everything is checked before the model is built (before any weight is allocated): archive
    integrity, header format and version, field types, layer class names, every array's name,
    shape and dtype against the weights the model will have, the compile settings and optimizer
    state, and the SHA-256 checksum. Any problem raises :class:`ModelFileError` saying what is
    wrong. Nothing in the file is ever unpickled or executed. A model saved after ``compile``
    comes back compiled, with its optimizer state and its layers' random generators (Dropout
    masks), ready to continue training. The model's shuffling generator is not saved: resume with
    ``fit(..., seed=...)`` or ``shuffle=False`` for bit-identical continuation.
    """
    path = os.fspath(path)
    header, arrays = read_archive(path)
    model, specs = _unbuilt_model(header, path)
    _check_layer_arrays(model, specs, header, path)
    _check_optimizer_arrays(model, specs, header, path)
    _compile(model, header, arrays, path)
    _build(model, header, path)
    _restore(model, header, arrays, path)
    return model
