"""The cnnext model file format: its layout, its checksum, and reading one back with every
structural check done before anything is allocated or built.

A model file is a zip archive as written by :func:`numpy.savez` (members stored uncompressed),
read here member by member with ``allow_pickle=False``:

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

import hashlib
import json
import math
import struct
import zipfile
import zlib
from typing import Any

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


def checksum(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the header (minus its ``sha256`` field) and every listed array."""
    digest = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "sha256"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for entry in header["arrays"]:
        array = np.ascontiguousarray(arrays[entry["name"]])
        digest.update(f"\0{entry['name']}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


# What zipfile and the .npy reader raise on damaged bytes (bad offsets, flags, names, lengths).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
                   RuntimeError, zlib.error, struct.error, UnicodeError, ValueError, KeyError,
                   MemoryError)
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}


def read_archive(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check the zip structure and CRCs, then read the header and the arrays it lists."""
    open(path, "rb").close()  # a missing, unreadable or directory path: OSError naming it
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
    if checksum(header, arrays) != header["sha256"]:
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
    if type(version) is not int or version != FORMAT_VERSION:
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
