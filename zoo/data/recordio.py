"""InsightFace MXNet RecordIO (`train.rec` + `train.idx`) read and written without mxnet.

Format (dmlc-core recordio + mxnet.recordio), all little-endian:
- a record is `uint32 magic 0xced7230a`, `uint32 lrecord` (top 3 bits: continuation flag,
  low 29 bits: length), the payload, zero padding to a multiple of 4. The writer splits a
  payload at every 4-aligned copy of the magic word (flags 1 start, 2 middle, 3 end) and the
  reader puts the magic back between the parts.
- a payload is an IRHeader `<IfQQ` (flag, label, id, id2), then `flag` float32 labels when
  flag > 0, then the encoded image.
- `train.idx` is text, one `key<TAB>byte offset` per record.
InsightFace layout: record 0 has flag > 0 and labels (first identity record, end); records
1..first-1 are images (label = class id); each identity record's labels are its image range.
Files without that header record are read as "every key is an image".
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import EmptyDatasetError, FormatError, PathLike, require_file
from .images import decode_image, encode_jpeg

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: Union[float, np.ndarray]
    id: int
    id2: int


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """mxnet.recordio.pack: header, optional label array, payload (flag = label count when > 1)."""
    label = np.asarray(header.label, dtype=np.float32).ravel()
    if label.size > 1:
        head = struct.pack(_IR_FORMAT, label.size, 0.0, header.id, header.id2) + label.tobytes()
    else:
        head = struct.pack(_IR_FORMAT, 0, float(label[0]) if label.size else 0.0, header.id, header.id2)
    return head + payload


def unpack_record(record: bytes, source: str = "<record>") -> Tuple[IRHeader, bytes]:
    """mxnet.recordio.unpack: the IRHeader (labels as an array when flag > 0) and the payload."""
    if len(record) < _IR_SIZE:
        raise FormatError(f"record of {len(record)} bytes is shorter than its {_IR_SIZE}-byte header", source)
    flag, label, id1, id2 = struct.unpack_from(_IR_FORMAT, record)
    rest = record[_IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise FormatError(f"header announces {flag} labels but the record is too short", source)
        label = np.frombuffer(rest, dtype="<f4", count=flag).copy()
        rest = rest[4 * flag:]
    return IRHeader(flag, label, id1, id2), rest


class _Closing:
    """`with reader_or_writer:` calls its `close()` at the end."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordIOWriter(_Closing):
    """Writes records and their index, byte-compatible with mxnet.recordio.MXIndexedRecordIO."""

    def __init__(self, rec_path: PathLike, idx_path: PathLike):
        self._rec = open(rec_path, "wb")
        self._idx = open(idx_path, "w")

    def write(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        parts, start = [], 0
        for i in range(0, len(record) - len(record) % 4, 4):
            if record[i:i + 4] == _MAGIC_BYTES:
                parts.append(record[start:i])
                start = i + 4
        parts.append(record[start:])
        for n, part in enumerate(parts):
            flag = 0 if len(parts) == 1 else (1 if n == 0 else (3 if n == len(parts) - 1 else 2))
            self._rec.write(_MAGIC_BYTES + struct.pack("<I", (flag << 29) | len(part)) + part)
        self._rec.write(b"\0" * (-len(record) % 4))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()


class RecordIOReader(_Closing):
    """Random access to records through the `.idx` offsets.

    Reads are positional (`os.pread`), with no shared file offset, so DataLoader worker processes
    forked from the process that opened the file can all read through it at once."""

    def __init__(self, rec_path: PathLike, idx_path: Optional[PathLike] = None):
        self.rec_path = require_file(rec_path, "RecordIO .rec file")
        self.idx_path = require_file(idx_path or self.rec_path.with_suffix(".idx"), "RecordIO .idx file")
        self.offsets: Dict[int, int] = {}
        with open(self.idx_path) as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    key, offset = int(fields[0]), int(fields[1])
                except (ValueError, IndexError):
                    raise FormatError(f"expected 'key<TAB>offset', got {line.rstrip()!r}",
                                      self.idx_path, line_number) from None
                self.offsets[key] = offset
        self._fd = os.open(self.rec_path, os.O_RDONLY)

    @property
    def keys(self) -> List[int]:
        return sorted(self.offsets)

    def _where(self, key: int) -> str:
        return f"{self.rec_path} (record {key} at byte {self.offsets[key]})"

    def _start(self, key: int) -> int:
        if key not in self.offsets:
            raise FormatError(f"key {key} is not in the index", self.idx_path)
        return self.offsets[key]

    def _part(self, key: int, position: int) -> Tuple[int, int]:
        """The 8-byte header of the part at `position`: (continuation flag, length)."""
        head = os.pread(self._fd, 8, position)
        if len(head) < 8:
            raise FormatError("file ends inside a record header", self._where(key))
        magic, lrecord = struct.unpack("<II", head)
        if magic != MAGIC:
            raise FormatError(f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})", self._where(key))
        return lrecord >> 29, lrecord & _LENGTH_MASK

    def read(self, key: int) -> bytes:
        position, parts = self._start(key), []
        while True:
            flag, length = self._part(key, position)
            data = os.pread(self._fd, length, position + 8)
            if len(data) < length:
                raise FormatError(f"file ends inside a record ({len(data)} of {length} bytes)", self._where(key))
            parts.append(data)
            if flag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            position += 8 + length + (-length % 4)

    def read_head(self, key: int, size: int) -> bytes:
        """The first `size` bytes of a record without reading the rest (labels of a large
        file are read from the headers alone)."""
        position = self._start(key)
        flag, length = self._part(key, position)
        if flag != 0 and length < size:
            return self.read(key)[:size]
        data = os.pread(self._fd, min(size, length), position + 8)
        if len(data) < min(size, length):
            raise FormatError("file ends inside a record", self._where(key))
        return data

    def close(self) -> None:
        os.close(self._fd)


class RecordIODataset:
    """An InsightFace `train.rec`: `dataset[i] -> (HxWx3 uint8 RGB, class id)`.

    Labels are read once at open from the record headers only (a few dozen bytes each, not
    the images), so `labels` is available for samplers and class counts.
    """

    def __init__(self, rec_path: PathLike, idx_path: Optional[PathLike] = None):
        self.reader = RecordIOReader(rec_path, idx_path)
        self.source = str(self.reader.rec_path)
        keys = self.reader.keys
        if not keys:
            raise EmptyDatasetError("RecordIO index lists no records", self.reader.idx_path)
        first, _ = unpack_record(self.reader.read(keys[0]), self._where(keys[0]))
        if first.flag > 0 and keys[0] == 0:
            end = int(np.asarray(first.label).ravel()[0])
            self.image_keys = [k for k in keys if 1 <= k < end]
        else:
            self.image_keys = keys
        if not self.image_keys:
            raise EmptyDatasetError("RecordIO file holds no image records", self.source)
        labels = []
        for key in self.image_keys:
            head = self.reader.read_head(key, _IR_SIZE)
            flag = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
            if flag > 0:
                head = self.reader.read_head(key, _IR_SIZE + 4 * flag)
            header, _ = unpack_record(head, self._where(key))
            labels.append(int(np.asarray(header.label).ravel()[0]))
        self.labels = np.array(labels, dtype=np.int64)

    def _where(self, key: int) -> str:
        return f"{self.source} (record {key})"

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        key = self.image_keys[index]
        _, payload = unpack_record(self.reader.read(key), self._where(key))
        return decode_image(payload, source=self._where(key)), int(self.labels[index])

    def close(self) -> None:
        self.reader.close()


def write_insightface_rec(rec_path: PathLike, idx_path: PathLike,
                          samples: Iterable[Tuple[np.ndarray, int]], quality: int = 95) -> int:
    """Write (RGB image, class id) samples in InsightFace's layout; returns the image count.

    Samples are grouped by class (InsightFace's identity records need contiguous ranges).
    """
    ordered: Sequence[Tuple[np.ndarray, int]] = sorted(samples, key=lambda s: s[1])
    ranges: Dict[int, List[int]] = {}
    with RecordIOWriter(rec_path, idx_path) as writer:
        first_identity = len(ordered) + 1
        classes = sorted({label for _, label in ordered})
        writer.write(0, pack_record(IRHeader(2, np.array([first_identity, first_identity + len(classes)]), 0, 0), b""))
        for key, (image, label) in enumerate(ordered, 1):
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), encode_jpeg(image, quality)))
            ranges.setdefault(label, [key, key + 1])[1] = key + 1
        for offset, label in enumerate(classes):
            start, end = ranges[label]
            writer.write(first_identity + offset, pack_record(IRHeader(2, np.array([start, end]), 0, 0), b""))
    return len(ordered)
