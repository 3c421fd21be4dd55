"""Reading ``.safetensors`` as NumPy memory maps (bfloat16 included); writing is the library's.

Why the reader is ours: ``load_pretrained`` builds each device's shard of a parameter from a
*view* of the stored tensor (an HF linear weight is transposed and reshaped into our layout, then
sliced by the device's index), so only that shard's bytes are ever copied. The ``safetensors``
package reads whole tensors (``get_tensor``) or slices in the *stored* layout (``get_slice``),
and it does not expose the byte offsets a memory map needs; the format (an 8-byte little-endian
header length, a JSON header ``{name: {dtype, shape, data_offsets}}``, the raw bytes) is small
enough to map directly. Files are written with ``safetensors.numpy.save_file``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from vital_jax.errors import VitalError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsError(VitalError, ValueError):
    pass


class SafetensorsFile:
    """Lazy view of one ``.safetensors`` file: ``names()``, ``shape(name)``, ``get(name)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) != 8:
                    raise SafetensorsError(f"{self.path}: truncated (no header)")
                (n,) = struct.unpack("<Q", raw)
                if n > 100 * 2**20:
                    raise SafetensorsError(f"{self.path}: header length {n} is absurd; not a safetensors file")
                if 8 + n > self.path.stat().st_size:
                    raise SafetensorsError(f"{self.path}: truncated (header runs past the end of the file)")
                header = json.loads(f.read(n))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{self.path}: cannot read safetensors header ({e})") from e
        self.metadata = header.pop("__metadata__", {}) or {}
        self._header = header
        self._base = 8 + n
        self._mm = None
        size = self.path.stat().st_size
        for name, info in header.items():
            if info["dtype"] not in _DTYPES:
                raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            if self._base + info["data_offsets"][1] > size:
                raise SafetensorsError(f"{self.path}: tensor {name!r} runs past the end of the file (truncated?)")

    def names(self) -> list[str]:
        return list(self._header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._header[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(_DTYPES[self._header[name]["dtype"]])

    def get(self, name: str) -> np.ndarray:
        """A read-only memory-mapped array (copy it before writing)."""
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        info = self._header[name]
        b, e = info["data_offsets"]
        buf = self._mm[self._base + b:self._base + e]
        return buf.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def save_file(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.numpy.save_file`` with the ``format: pt`` metadata transformers expects."""
    from safetensors.numpy import save_file as _save

    for name, arr in tensors.items():
        if np.dtype(arr.dtype) not in _NAMES:
            raise SafetensorsError(f"cannot save tensor {name!r} of dtype {arr.dtype}")
    _save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt", **(metadata or {})})
