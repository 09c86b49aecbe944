"""Save and load whole models: one ``.npz`` file, no pickle, atomic writes, verified reads.

File layout (a zip archive written by :func:`numpy.savez`, read with ``allow_pickle=False``):

- ``__header__``: the UTF-8 bytes of a JSON object, stored as a 1-D ``uint8`` array, holding
  ``format`` (``"cnnext-model"``), ``format_version``, ``cnnext_version``, ``model_config``
  (:meth:`Sequential.get_config`), ``compile_config`` (or ``null``), ``arrays`` (one entry per
  stored array: ``name``, ``kind`` (``"params"``, ``"state"`` or ``"optimizer"``), ``layer``
  index, ``key``, ``shape``, ``dtype``), ``rng_states`` (the states of layers' random
  generators, e.g. Dropout masks) and ``sha256``.
- one array per layer weight, layer state entry and optimizer state entry, named in ``arrays``.

``sha256`` covers the canonical JSON of the header (without ``sha256``) and every array's name,
dtype, shape and bytes, so any silent change to weights or configuration is detected.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib
from typing import IO, Any, Iterator

import numpy as np

from ._config import __version__

FORMAT_NAME = "cnnext-model"
FORMAT_VERSION = 1
HEADER_KEY = "__header__"
ARRAY_KINDS = ("params", "state", "optimizer")
MAX_HEADER_BYTES = 64 * 2**20  # the JSON header; far more than any real model needs
NPY_HEADER_MAX_BYTES = 2**16 + 16  # a .npy preamble: magic, version, length and the dict
# Stored dtypes: floats for weights/moments, ints and bools for counters and flags.
_ALLOWED_DTYPE_KINDS = "fiub"


class ModelFileError(ValueError):
    """A model file is missing parts, corrupted, foreign, or does not match the model it describes."""


# --------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a new temporary file beside ``path`` for binary writing; on success flush, fsync and
    ``os.replace`` it onto ``path`` (then fsync the directory). On any error the temporary file is
    removed and ``path`` is left exactly as it was. The file gets the usual permissions
    (``0o666`` less the umask), like a file opened with ``open(path, "wb")``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
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


def _checksum(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the header (minus its ``sha256`` field) and every listed array."""
    digest = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "sha256"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for entry in header["arrays"]:
        array = np.ascontiguousarray(arrays[entry["name"]])
        digest.update(f"\0{entry['name']}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


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
    header["sha256"] = _checksum(header, arrays)
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    arrays[HEADER_KEY] = np.frombuffer(header_bytes, dtype=np.uint8)
    with atomic_write(path) as f:
        _write_archive(f, arrays)
    return os.fspath(path)


# --------------------------------------------------------------------------------------- reading
# What zipfile and the .npy reader raise on damaged bytes (bad offsets, flags, names, lengths).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
                   RuntimeError, zlib.error, struct.error, UnicodeError, ValueError, KeyError,
                   MemoryError)
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}


def _read_archive(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check the zip structure and CRCs, then read the header and the arrays it lists."""
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path!r} is not a cnnext model file (not a zip/.npz archive; "
                             "truncated or foreign file?)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            if bad_member is not None:
                raise ModelFileError(f"{path!r} is corrupted: CRC mismatch in member {bad_member!r}")
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            if HEADER_KEY + ".npy" not in sizes:
                raise ModelFileError(f"{path!r} is not a cnnext model file: it has no "
                                     f"{HEADER_KEY!r} entry")
            header = _parse_header(_read_member(archive, HEADER_KEY, path, np.dtype(np.uint8)), path)
            _check_members(header, sizes, path)
            arrays = {entry["name"]: _read_member(archive, entry["name"], path,
                                                  np.dtype(entry["dtype"]), tuple(entry["shape"]))
                      for entry in header["arrays"]}
    except ModelFileError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise ModelFileError(f"{path!r} is a damaged archive: {exc!r}") from exc
    if _checksum(header, arrays) != header["sha256"]:
        raise ModelFileError(f"{path!r} is corrupted: SHA-256 checksum mismatch "
                             "(weights or header changed after saving)")
    return header, arrays


def _check_members(header: dict[str, Any], sizes: dict[str, int], path: str) -> None:
    """The archive holds exactly the header's arrays, each with as many bytes as its shape and
    dtype need (so nothing larger than the file is ever allocated)."""
    expected = {entry["name"] + ".npy" for entry in header["arrays"]} | {HEADER_KEY + ".npy"}
    if set(sizes) != expected:
        extra, missing = sorted(set(sizes) - expected), sorted(expected - set(sizes))
        raise ModelFileError(f"{path!r}: archive members do not match its header "
                             f"(unexpected: {extra}, missing: {missing})")
    for entry in header["arrays"]:
        nbytes = math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize
        stored = sizes[entry["name"] + ".npy"]
        if not nbytes <= stored <= nbytes + NPY_HEADER_MAX_BYTES:
            raise ModelFileError(f"{path!r}: array {entry['name']!r} stores {stored} bytes, which "
                                 f"does not fit its header shape {entry['shape']} dtype {entry['dtype']}")


def _read_member(archive: zipfile.ZipFile, name: str, path: str, dtype: np.dtype,
                 shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Array ``name`` after checking its .npy preamble: never an object (pickle) array, and of
    ``dtype`` and ``shape`` (``None``: 1-D of at most ``MAX_HEADER_BYTES``, for the header)."""
    member = name + ".npy"
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version not in _NPY_HEADER_READERS:
                raise ValueError(f"unsupported .npy format version {version}")
            found_shape, _, found_dtype = _NPY_HEADER_READERS[version](f)
        if found_dtype.hasobject:
            raise ModelFileError(f"{path!r}: refusing array {name!r}: it holds Python objects "
                                 "(pickle data), which cnnext never writes or loads")
        if shape is None and len(found_shape) == 1 and found_shape[0] > MAX_HEADER_BYTES:
            raise ModelFileError(f"{path!r}: header of {found_shape[0]} bytes exceeds the "
                                 f"{MAX_HEADER_BYTES} byte limit")
        if found_dtype != dtype or (found_shape != shape if shape is not None else len(found_shape) != 1):
            raise ModelFileError(f"{path!r}: array {name!r} is {found_dtype.str}{list(found_shape)}, "
                                 f"expected {dtype.str}{list(shape) if shape is not None else '[n]'}")
        with archive.open(member) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ModelFileError:
        raise
    except ValueError as exc:
        raise ModelFileError(f"{path!r}: cannot read array {name!r}: {exc}") from exc


def _parse_header(raw: np.ndarray, path: str) -> dict[str, Any]:
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd nesting or numbers
        raise ModelFileError(f"{path!r}: header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path!r}: header must be a JSON object")
    if header.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path!r} is not a cnnext model file (format {header.get('format')!r})")
    version = header.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ModelFileError(f"{path!r} has format_version {version!r}; this cnnext ({__version__}) "
                             f"reads format_version {FORMAT_VERSION}")
    _check_header_schema(header, path)
    return header


def _require(ok: bool, path: str, what: str) -> None:
    if not ok:
        raise ModelFileError(f"{path!r}: malformed header: {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_header_schema(header: dict[str, Any], path: str) -> None:
    """Types of every header field (the values are checked against the rebuilt model later)."""
    _require(isinstance(header.get("cnnext_version"), str), path, "cnnext_version must be a string")
    _require(isinstance(header.get("sha256"), str), path, "sha256 must be a string")
    config = header.get("model_config")
    _require(isinstance(config, dict), path, "model_config must be an object")
    layers = config.get("layers")
    _require(isinstance(layers, list) and len(layers) > 0, path, "model_config.layers must be a non-empty list")
    for i, layer in enumerate(layers):
        _require(isinstance(layer, dict) and isinstance(layer.get("class_name"), str)
                 and isinstance(layer.get("config"), dict), path,
                 f"model_config.layers[{i}] must be {{'class_name': str, 'config': object}}")
    compile_config = header.get("compile_config")
    _require(compile_config is None or isinstance(compile_config, dict), path,
             "compile_config must be an object or null")
    entries = header.get("arrays")
    _require(isinstance(entries, list), path, "arrays must be a list")
    for i, entry in enumerate(entries):
        _require(isinstance(entry, dict), path, f"arrays[{i}] must be an object")
        _require(isinstance(entry.get("name"), str) and entry["name"] != HEADER_KEY
                 and isinstance(entry.get("key"), str), path, f"arrays[{i}] needs string name and key")
        _require(entry.get("kind") in ARRAY_KINDS, path, f"arrays[{i}].kind must be one of {ARRAY_KINDS}")
        layer = entry.get("layer")
        _require((entry["kind"] == "optimizer" and layer is None)
                 or (entry["kind"] != "optimizer" and _is_int(layer) and 0 <= layer < len(layers)),
                 path, f"arrays[{i}].layer must index model_config.layers")
        shape = entry.get("shape")
        _require(isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape), path,
                 f"arrays[{i}].shape must be a list of non-negative ints")
        _require(isinstance(entry.get("dtype"), str), path, f"arrays[{i}].dtype must be a string")
        try:
            dtype = np.dtype(entry["dtype"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path!r}: malformed header: arrays[{i}].dtype: {exc}") from exc
        _require(dtype.kind in _ALLOWED_DTYPE_KINDS, path,
                 f"arrays[{i}].dtype {entry['dtype']!r} is not a numeric dtype")
    rng_states = header.get("rng_states")
    _require(isinstance(rng_states, list) and all(
        isinstance(item, dict) and _is_int(item.get("layer")) and 0 <= item["layer"] < len(layers)
        and isinstance(item.get("state"), dict) for item in rng_states), path,
        "rng_states must be a list of {'layer': index, 'state': object}")
    names = [entry["name"] for entry in entries]
    _require(len(set(names)) == len(names), path, "array names must be unique")


# --------------------------------------------------------------------------------------- rebuilding
def _build_model(header: dict[str, Any], path: str) -> Any:
    """The model described by ``model_config``, built, with fresh weights."""
    from .layers import get_layer_class
    from .models import Sequential

    config = header["model_config"]
    for spec in config["layers"]:
        try:
            get_layer_class(spec["class_name"])
        except ValueError as exc:
            raise ModelFileError(f"{path!r}: {exc}") from None
    try:
        model = Sequential.from_config(config)
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise ModelFileError(f"{path!r}: invalid model_config: {exc}") from exc
    except MemoryError:
        raise ModelFileError(f"{path!r}: model_config describes a model too large to build "
                             "in memory") from None
    if not model.built:
        raise ModelFileError(f"{path!r}: model_config has no input_shape, so the weights cannot be "
                             "matched to layers")
    return model


def _describe(array: Any) -> str:
    return f"shape {list(array.shape)} dtype {np.dtype(array.dtype).name}"


def _check_layer_arrays(model: Any, header: dict[str, Any], path: str) -> None:
    """Every layer's stored params/state keys, shapes and dtypes equal the rebuilt layer's."""
    stored: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
    for entry in header["arrays"]:
        if entry["kind"] != "optimizer":
            stored.setdefault((entry["layer"], entry["kind"]), {})[entry["key"]] = entry
    for index, layer in enumerate(model.layers):
        for kind in ("params", "state"):
            expected = getattr(layer, kind)
            found = stored.get((index, kind), {})
            if list(found) != list(expected):
                raise ModelFileError(
                    f"{path!r}: layer {index} ({layer.name!r}, {type(layer).__name__}) expects "
                    f"{kind} {list(expected)} but the file has {list(found)}")
            for key, target in expected.items():
                entry = found[key]
                if entry["shape"] != list(target.shape) or np.dtype(entry["dtype"]) != target.dtype:
                    raise ModelFileError(
                        f"{path!r}: array {entry['name']!r} has shape {entry['shape']} dtype "
                        f"{np.dtype(entry['dtype']).name} but layer {index} ({layer.name!r}) "
                        f"expects {_describe(target)}")


def _check_optimizer_arrays(model: Any, header: dict[str, Any], path: str) -> None:
    """Optimizer state: a scalar integer ``iterations`` plus ``slot:<layer>.<param>`` buffers
    shaped like the parameters they belong to."""
    params = {f"{layer.name}.{key}": p for layer in model.layers for key, p in layer.params.items()}
    entries = [e for e in header["arrays"] if e["kind"] == "optimizer"]
    if entries and header["compile_config"] is None:
        raise ModelFileError(f"{path!r}: optimizer state is stored but compile_config is null")
    for entry in entries:
        key = entry["key"]
        if key == "iterations":
            ok = entry["shape"] == [] and np.dtype(entry["dtype"]).kind in "iu"
            expected = "a scalar integer"
        else:
            target = params.get(key.partition(":")[2])
            ok = target is not None and entry["shape"] == list(target.shape) \
                and np.dtype(entry["dtype"]) == target.dtype
            expected = f"parameter {key.partition(':')[2]!r}" + (
                f" with {_describe(target)}" if target is not None else " (no such parameter)")
        if not ok:
            raise ModelFileError(f"{path!r}: optimizer state {key!r} ({_describe_entry(entry)}) "
                                 f"does not match {expected}")


def _describe_entry(entry: dict[str, Any]) -> str:
    return f"shape {entry['shape']} dtype {np.dtype(entry['dtype']).name}"


def _restore(model: Any, header: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> None:
    """Copy weights and state in, then recompile and restore the optimizer state."""
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
    if header["compile_config"] is None:
        return
    try:
        model.compile_from_config(header["compile_config"])
        model.optimizer.set_state({e["key"]: arrays[e["name"]] for e in header["arrays"]
                                   if e["kind"] == "optimizer"})
    except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
        raise ModelFileError(f"{path!r}: invalid compile_config: {exc!r}") from exc


def _restore_rng(model: Any, item: Any, path: str) -> None:
    """Put a layer's random generator (e.g. Dropout masks) back where training left it."""
    try:
        layer = model.layers[item["layer"]]
        layer.rng.bit_generator.state = item["state"]
    except (TypeError, ValueError, OverflowError, KeyError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"{path!r}: malformed header: bad rng_states entry ({exc!r})") from exc


def load_model(path: str | os.PathLike) -> Any:
    """Read a model written by :func:`save_model`.

    Everything is checked before the model is used: archive integrity, header format and version,
    field types, layer class names, every array's name, shape and dtype against the rebuilt model,
    and the SHA-256 checksum. Any problem raises :class:`ModelFileError` saying what is wrong.
    Nothing in the file is ever unpickled or executed. A model saved after ``compile`` comes back
    compiled, with its optimizer state and its layers' random generators (Dropout masks), ready
    to continue training. The model's shuffling generator is not saved: resume with
    ``fit(..., seed=...)`` or ``shuffle=False`` for bit-identical continuation.
    """
    path = os.fspath(path)
    header, arrays = _read_archive(path)
    model = _build_model(header, path)
    _check_layer_arrays(model, header, path)
    _check_optimizer_arrays(model, header, path)
    _restore(model, header, arrays, path)
    return model
