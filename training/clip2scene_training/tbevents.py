"""TensorBoard scalar event files, written without TensorBoard installed.

An event file is a TFRecord stream (length, masked CRC32C of the length, payload, masked CRC32C of
the payload) of ``Event`` protocol buffers; scalars need only four message fields, encoded here by
hand, so training logs for TensorBoard without pulling in TensorBoard and its gRPC stack.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["EventWriter", "read_scalars"]


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None, scalars: dict | None = None) -> bytes:
    msg = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items()
        )
        msg += _field_bytes(5, summary)
    return msg


class EventWriter:
    """``events.out.tfevents.*`` in ``logdir``: ``add_scalars({"loss": 0.3}, step)``."""

    def __init__(self, logdir: str | os.PathLike):
        self.dir = Path(logdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = self.dir / name
        self._f = open(self.path, "ab")  # noqa: SIM115 -- kept open for the run, closed in close()
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, payload: bytes) -> None:
        header = struct.pack("<Q", len(payload))
        self._f.write(header + struct.pack("<I", _masked(header)) + payload + struct.pack("<I", _masked(payload)))
        self._f.flush()

    def add_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._write(_event(time.time(), int(step), scalars=scalars))

    def close(self) -> None:
        self._f.close()


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def read_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in an event file; checks both CRCs of every record."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        header = data[i : i + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[i + 8 : i + 12])[0] != _masked(header):
            raise ValueError(f"{path}: bad length CRC at byte {i}")
        payload = data[i + 12 : i + 12 + length]
        if struct.unpack("<I", data[i + 12 + length : i + 16 + length])[0] != _masked(payload):
            raise ValueError(f"{path}: bad payload CRC at byte {i}")
        i += 16 + length
        step = 0
        for number, value in _fields(payload):
            if number == 2:
                step = value
            elif number == 5:
                for _, v in _fields(value):
                    tag, val = "", 0.0
                    for n2, v2 in _fields(v):
                        if n2 == 1:
                            tag = v2.decode()
                        elif n2 == 2:
                            val = struct.unpack("<f", v2)[0]
                    out.append((step, tag, val))
    return out
