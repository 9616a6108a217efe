"""The ranker's calls as bytes: what the API sends a replica over its socket, and what comes back.

A frame is a 4-byte length (network order) then a msgpack document. A call is
``[[alias, request state], ...]`` (a :class:`RankRequest`'s ``__getstate__``: the numeric
columns as one float64 and one int64 matrix), its answer ``[[scores, "name/version"] or
{"error", "message"}, ...]``. Numeric arrays travel as their raw bytes (a msgpack extension:
dtype, shape, buffer), so a first page's 500 x 45 matrix is one copy each way, not a pickle.
msgpack runs no code on decode, so a socket that anyone on the network can reach (``tcp``,
across a cluster's nodes) is not a way to run code in a replica, as a pickle stream would be;
a frame past ``MAX_FRAME`` bytes is refused before it is read.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np

from serving.ranking.backends import RankRequest, Result
from serving.ranking.models import ModelUnavailable

HEADER = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a call of 8 first pages of 500 x 45 float64 is ~1.5 MiB
_ARRAY = 1  # msgpack extension code of a numeric numpy array


class WireError(ValueError):
    """A frame that is not one: too long, or not a call / answer."""


class RankerError(RuntimeError):
    """An exception the replica raised for one request, other than :class:`ModelUnavailable`
    (which keeps its type: the feed and its tests tell it apart)."""


def frame(document: Any) -> bytes:
    body = msgpack.packb(document, default=_encode, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise WireError(f"frame of {len(body)} bytes, past {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def body_length(header: bytes) -> int:
    """The length of the document after ``header``; refused past ``MAX_FRAME``."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise WireError(f"frame of {length} bytes, past {MAX_FRAME}")
    return length


def unpack(body: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(body, ext_hook=_decode, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"not a msgpack document: {exc}") from exc


def encode_call(requests: list[tuple[str, RankRequest]]) -> bytes:
    return frame([[alias, request.__getstate__()] for alias, request in requests])


def decode_call(document: Any) -> list[tuple[str, RankRequest]]:
    try:
        calls = []
        for alias, state in document:
            request = RankRequest.__new__(RankRequest)
            state["o"] = {c: _objects(v) for c, v in state["o"].items()}
            request.__setstate__(state)
            calls.append((str(alias), request))
        return calls
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"not a ranker call: {exc!r}") from exc


def encode_results(results: list[Result]) -> bytes:
    return frame([{"error": type(r).__name__, "message": str(r)} if isinstance(r, Exception)
                  else [r[0], r[1]] for r in results])


def decode_results(document: Any) -> list[Result]:
    return [(r[0], str(r[1])) if not isinstance(r, dict)
            else ModelUnavailable(r["message"]) if r["error"] == ModelUnavailable.__name__
            else RankerError(f"{r['error']}: {r['message']}") for r in document]


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":
            head = msgpack.packb([obj.dtype.str, list(obj.shape)])
            return msgpack.ExtType(_ARRAY, head + np.ascontiguousarray(obj).tobytes())
        return obj.tolist()  # an object column (a list per row): as msgpack lists
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__} to the ranker")


def _decode(code: int, data: bytes) -> Any:
    if code != _ARRAY:
        return msgpack.ExtType(code, data)
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    dtype, shape = unpacker.unpack()
    if np.dtype(dtype).kind not in "biuf":
        raise WireError(f"array of dtype {dtype}")
    return np.frombuffer(data, dtype, offset=unpacker.tell()).reshape(shape)


def _objects(values: list) -> np.ndarray:
    """An object column back as a 1-D object array: a list per row stays one element."""
    out = np.empty(len(values), object)
    for i, v in enumerate(values):
        out[i] = v
    return out
