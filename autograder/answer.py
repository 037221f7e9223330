"""What a probe reports for one case (`Answer`), and the one codec that carries it.

An answer is made where the graded code ran: in the sandboxed child (the
class runner), in the kernel (`nbgrader autograde`) or in the grader itself
(the reference and the known mistakes). Wherever it was made, it crosses the
same codec before anything decides on it, so every executor gives the same
score:

    encode_records(kind, records) -> bytes   b"R" + 8-byte length + JSON + raw tensor bytes
    encode_json(obj) -> bytes                b"J" + JSON (messages without tensors)
    decode(bytes) -> dict                     the message, tensors rebuilt as plain tensors

No unpickler ever reads what a child sends (not even torch.load's
weights_only one): tensors travel as (dtype, shape, offset, size) into one
blob of raw bytes and are rebuilt as plain tensors of an allow-listed dtype,
each entirely inside the blob. `Answer.from_record` then validates every
field against its schema (issue: nothing from the child is trusted by
shape); what does not fit raises `MalformedAnswer`, which the caller turns
into a failed case, never into an exception in the grader.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import torch

from autograder.text import clean

MAX_VALUES = 256  # outputs in one answer
MAX_TEXT = 4000  # characters of an error message or captured output kept
MAX_DIMS = 16
MAX_ELEMENTS = 1 << 28

_DTYPES = {str(v): v for v in vars(torch).values() if isinstance(v, torch.dtype)}
_ITEMSIZE = {name: d.itemsize for name, d in _DTYPES.items()}


class MalformedAnswer(ValueError):
    """A message or answer whose shape does not fit its schema."""


@dataclass
class Answer:
    """One case's outcome: named outputs (plain tensors and plain values), the device
    each tensor output was on, the error the code raised (or None), the forbidden
    torch functions it called, and what it printed."""

    values: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    forbidden: list[str] = field(default_factory=list)
    stdout: str = ""

    @classmethod
    def failed(cls, reason: str) -> "Answer":
        return cls(error=reason)

    @classmethod
    def missing(cls, target: str) -> "Answer":
        return cls.failed(f"NameError: {target} is not defined in your notebook "
                          "(was its cell deleted, renamed, or did it raise an error?)")

    # read access by key, for code that treats an answer as the mapping it used to be
    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default

    def to_record(self) -> dict:
        return {"values": self.values, "devices": self.devices, "error": self.error,
                "forbidden": self.forbidden, "stdout": self.stdout}

    @classmethod
    def from_record(cls, record: Any) -> "Answer":
        """Validate a decoded record; MalformedAnswer when any field is not what an answer holds."""
        if not isinstance(record, dict):
            raise MalformedAnswer(f"an answer is a {type(record).__name__}, not an object")
        values = record.get("values")
        if not isinstance(values, dict) or len(values) > MAX_VALUES:
            raise MalformedAnswer("its outputs are not a mapping of names to values")
        for key, v in values.items():
            if not isinstance(key, str) or not _plain_value(v):
                raise MalformedAnswer(f"output {clean(key, 40)!r} is not a tensor or a plain value")
        devices = record.get("devices", {})
        if not isinstance(devices, dict) or not all(isinstance(k, str) and isinstance(d, str) and len(d) < 64
                                                    for k, d in devices.items()):
            raise MalformedAnswer("its devices are not names")
        error = record.get("error")
        if error is not None and not isinstance(error, str):
            raise MalformedAnswer("its error is not text")
        forbidden = record.get("forbidden", [])
        if not isinstance(forbidden, list) or len(forbidden) > 64 or not all(isinstance(f, str) for f in forbidden):
            raise MalformedAnswer("its forbidden calls are not names")
        stdout = record.get("stdout", "")
        if not isinstance(stdout, str):
            raise MalformedAnswer("its output is not text")
        return cls({k: (clean(v, MAX_TEXT) if isinstance(v, str) else v) for k, v in values.items()},
                   dict(devices), None if error is None else clean(error, MAX_TEXT),
                   [clean(f, 200) for f in forbidden], clean(stdout, MAX_TEXT))


def _plain_value(v: Any) -> bool:
    if v is None or type(v) in (bool, int, str, torch.Tensor):
        return True
    if type(v) is float:
        return True
    if type(v) is list:
        return len(v) <= 4096 and all(type(x) in (bool, int, float, str) for x in v)
    return False


# -- the codec ------------------------------------------------------------------------
def encode_json(obj: dict) -> bytes:
    return b"J" + json.dumps(obj).encode()


_PAD = torch.zeros(16, dtype=torch.uint8)  # read only: the blob's padding, shared


def encode_records(kind: str, records: list[dict]) -> bytes:
    """Records (dicts whose "values" may hold tensors) as JSON, their tensors' bytes in
    one blob after it, with an index of (dtype, shape, offset, size)."""
    index, parts, offset = [], [], 0
    packed = []
    for r in records:
        values = {}
        for key, v in r.get("values", {}).items():
            if isinstance(v, torch.Tensor):
                t = v.detach()
                if not t.is_cpu:
                    t = t.cpu()
                if not t.is_contiguous():
                    t = t.contiguous()
                size = t.numel() * t.element_size()
                raw = t.reshape(-1).view(torch.uint8) if size else _PAD[:0]
                pad = -offset % 16
                if pad:
                    parts.append(_PAD[:pad])
                    offset += pad
                index.append([str(v.dtype), list(v.shape), offset, size])
                parts.append(raw)
                offset += size
                values[key] = {"tensor": len(index) - 1}
            else:
                values[key] = v
        packed.append({**r, "values": values})
    blob = _raw_bytes(torch.cat(parts)) if parts else b""
    meta = json.dumps({"kind": kind, "records": packed, "index": index}).encode()
    return b"R" + struct.pack("<Q", len(meta)) + meta + blob


def _raw_bytes(t: torch.Tensor) -> bytes:
    try:
        return t.numpy().tobytes()
    except (RuntimeError, ImportError):  # a torch without numpy
        return bytes(t.tolist())


def _unpack_tensor(blob: torch.Tensor, entry: Any, flats: dict) -> torch.Tensor:
    """The tensor `entry` (dtype, shape, offset, size) indexes in the message's blob, checked
    against the blob's bounds and alignment. `flats` holds the blob viewed as each dtype met so
    far (the blob is padded to 16 bytes, so every view is whole): a tensor is then one slice
    and one view of it."""
    if not (type(entry) is list and len(entry) == 4 and type(entry[0]) is str and type(entry[1]) is list
            and len(entry[1]) <= MAX_DIMS and type(entry[2]) is int and type(entry[3]) is int):
        raise MalformedAnswer("a tensor's index entry is not (dtype, shape, offset, size)")
    dtype_name, shape, offset, size = entry
    dtype = _DTYPES.get(dtype_name)
    if dtype is None:
        raise MalformedAnswer(f"unknown dtype {clean(dtype_name, 40)!r}")
    n = 1
    for s in shape:
        if type(s) is not int or s < 0:
            raise MalformedAnswer("a tensor's shape is out of range")
        n *= s
    if n > MAX_ELEMENTS:
        raise MalformedAnswer("a tensor's shape is out of range")
    itemsize = _ITEMSIZE[dtype_name]
    if size != n * itemsize or not 0 <= offset <= blob.numel() - size:
        raise MalformedAnswer("a tensor lies outside the message")
    if offset % itemsize:
        raise MalformedAnswer("a tensor is not aligned in the message")
    # a view of the message's own copy (decode's bytearray, which nothing else holds): no copy per tensor
    flat = flats.get(dtype)
    if flat is None:
        flat = flats[dtype] = flats[None].view(dtype)
    start = offset // itemsize
    return flat[start:start + n].view(shape)


def decode(data: bytes) -> dict:
    """A message as plain data: JSON, and for records JSON then the raw bytes of
    their tensors, rebuilt as plain tensors. MalformedAnswer for anything else."""
    try:
        if data[:1] == b"J":
            obj = json.loads(data[1:])
        elif data[:1] == b"R" and len(data) >= 9:
            (size,) = struct.unpack("<Q", data[1:9])
            obj = json.loads(data[9:9 + size])
            if not (isinstance(obj, dict) and isinstance(obj.get("records"), list)
                    and isinstance(obj.get("index"), list)):
                raise MalformedAnswer("records without their index")
            rest = data[9 + size:]
            # padded to 16 bytes (never empty: torch.frombuffer refuses an empty buffer)
            flats = {None: torch.frombuffer(bytearray(rest) + bytes(-len(rest) % 16 if rest else 16), dtype=torch.uint8)}
            blob = flats[None][:len(rest)]  # the bounds: the message's own bytes
            tensors = [_unpack_tensor(blob, e, flats) for e in obj["index"]]
            for r in obj["records"]:
                if not isinstance(r, dict) or not isinstance(r.get("values"), dict):
                    raise MalformedAnswer("a record without values")
                r["values"] = {k: _tensor_ref(tensors, v) for k, v in r["values"].items()}
        else:
            raise MalformedAnswer("an unknown kind of message")
    except MalformedAnswer:
        raise
    except (ValueError, RecursionError, struct.error, TypeError, OverflowError, MemoryError) as exc:
        raise MalformedAnswer(f"not a readable message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise MalformedAnswer("a message is not an object")
    return obj


def _tensor_ref(tensors: list, v: Any) -> Any:
    if isinstance(v, dict):
        k = v.get("tensor")
        if type(k) is not int or not 0 <= k < len(tensors) or len(v) != 1:
            raise MalformedAnswer("a reference to a tensor that was not sent")
        return tensors[k]
    return v


def round_trip(answer: Answer) -> Answer:
    """The answer as the grader receives it from any executor: encoded, decoded, validated."""
    return Answer.from_record(decode(encode_records("answers", [answer.to_record()]))["records"][0])
