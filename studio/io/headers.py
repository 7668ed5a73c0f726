"""Header checks of the file formats the studio reads, done before any data is allocated.

Each ``check_*`` reads at most a bounded header (a few KiB to a few MiB), compares what the header
claims with the file's size, and raises one :class:`StudioInputError` sentence when the file is
missing, of another kind, truncated, or claims more data than it holds (a PLY declaring 10^9
vertices in a 1 KiB file is refused, not read). They return what a reader needs to know next
(element counts, image size, tensor names).

Formats: PLY (ascii / binary, any elements), GLB 2.0 and glTF JSON, STL (binary / ascii), OFF,
OpenEXR (single-part scanline/tiled header), Radiance HDR, safetensors, raster images (PIL), and
the generic limits of text inputs (prompts).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from studio.io.errors import StudioInputError

HEADER_LIMIT = 1 << 16
"""Bytes read to find a PLY's ``end_header`` / an EXR's attribute list (64 KiB)."""
SAFETENSORS_HEADER_LIMIT = 100 << 20
"""Largest safetensors JSON header accepted (100 MiB, the format's own limit)."""
MAX_IMAGE_PIXELS = 1 << 27
"""Largest image accepted (134 M pixels: a 11585^2 image; PIL's bomb limit is 179 M)."""
MAX_PROMPT_CHARS = 2000
"""Longest prompt accepted (CLIP/T5 encoders truncate far earlier; longer text is a mistake)."""

PLY_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1,
    "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def require_file(path: Path, what: str) -> int:
    """Size in bytes of the existing, non-empty regular file ``path``; ``what`` names it in errors."""
    if not path.exists():
        raise StudioInputError(f"{what} {path} does not exist.")
    if not path.is_file():
        raise StudioInputError(f"{what} {path} is not a file.")
    size = path.stat().st_size
    if size == 0:
        raise StudioInputError(f"{what} {path} is empty.")
    return size


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


@dataclass
class PlyElement:
    """One ``element`` of a PLY header: its name, row count and (name, type) properties; a list
    property's type is ``("list", count_type, item_type)``."""

    name: str
    count: int
    properties: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.properties]

    def min_row_bytes(self, binary: bool) -> int:
        """Fewest bytes one row can take: fixed sizes (binary; a list counts its length field only)
        or one character per value (ascii)."""
        if not binary:
            return max(len(self.properties), 1)
        return sum(PLY_SIZES[t[1]] if t[0] == "list" else PLY_SIZES[t[0]] for _, t in self.properties)


@dataclass
class PlyHeader:
    """A parsed PLY header: ``format`` (ascii / binary_little_endian / binary_big_endian), the
    header length in bytes and the elements in file order."""

    format: str
    length: int
    elements: list[PlyElement]

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


def read_ply_header(path: Path) -> PlyHeader | None:
    """The header of ``path``, or None when the file does not start like a PLY.

    Raises StudioInputError for a PLY whose header is malformed (unknown types, bad counts).
    """
    head = _head(path, HEADER_LIMIT)
    if not head.startswith(b"ply"):
        return None
    end = head.find(b"end_header")
    if end < 0:
        raise StudioInputError(f"PLY file {path} has no 'end_header' in its first {HEADER_LIMIT} bytes.")
    newline = head.find(b"\n", end)
    length = (newline + 1) if newline >= 0 else len(head)
    fmt, elements = "", []
    for number, raw in enumerate(head[:end].decode("ascii", errors="replace").splitlines()[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            if not words[2].isdigit():
                raise StudioInputError(f"PLY file {path}: header line {number} has a non-numeric element count.")
            elements.append(PlyElement(words[1], int(words[2])))
        elif words[0] == "property" and elements:
            types = tuple(words[1:-1])
            known = all(t in PLY_SIZES for t in (types[1:] if types[:1] == ("list",) else types))
            if not types or not known or (types[0] == "list" and len(types) != 3):
                raise StudioInputError(f"PLY file {path}: header line {number} has an unknown property type.")
            elements[-1].properties.append((words[-1], types))
        else:
            raise StudioInputError(f"PLY file {path}: header line {number} ({raw.strip()[:40]!r}) is not valid.")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise StudioInputError(f"PLY file {path} has no valid 'format' line.")
    return PlyHeader(fmt, length, elements)


def check_ply(path: Path, what: str = "PLY file") -> PlyHeader:
    """The header of a PLY whose size can hold the rows it declares (checked before reading them)."""
    size = require_file(path, what)
    header = read_ply_header(path)
    if header is None:
        raise StudioInputError(f"{what} {path} is not a PLY file (it does not start with 'ply').")
    binary = header.format != "ascii"
    need = sum(e.count * e.min_row_bytes(binary) for e in header.elements)
    if header.length + need > size:
        counts = ", ".join(f"{e.count:,} '{e.name}' rows" for e in header.elements)
        raise StudioInputError(
            f"{what} {path} declares {counts} but holds only {size - header.length:,} bytes of data "
            f"(at least {need:,} needed): it is truncated or its header is wrong."
        )
    return header


GLB_MAGIC, GLB_JSON, GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942


def check_glb(path: Path, what: str = "GLB file") -> dict:
    """The JSON chunk of a glTF 2.0 binary whose declared lengths match the file."""
    size = require_file(path, what)
    head = _head(path, 20)
    if len(head) < 20:
        raise StudioInputError(f"{what} {path} is too short to be a GLB file.")
    magic, version, length, chunk_length, chunk_type = struct.unpack("<IIIII", head)
    if magic != GLB_MAGIC:
        raise StudioInputError(f"{what} {path} is not a GLB file (no 'glTF' magic).")
    if version != 2:
        raise StudioInputError(f"{what} {path} is glTF version {version}; only 2 is supported.")
    if length != size:
        raise StudioInputError(f"{what} {path} declares {length:,} bytes but has {size:,} (truncated or corrupt).")
    if chunk_type != GLB_JSON or 20 + chunk_length > size:
        raise StudioInputError(f"{what} {path} has no valid JSON chunk.")
    with open(path, "rb") as f:
        f.seek(20)
        text = f.read(chunk_length)
    return _gltf_json(text, path, what)


def check_gltf(path: Path, what: str = "glTF file") -> dict:
    """A .gltf JSON document whose external buffers exist beside it."""
    size = require_file(path, what)
    if size > SAFETENSORS_HEADER_LIMIT:
        raise StudioInputError(f"{what} {path} is {size:,} bytes, too large for a glTF JSON document.")
    doc = _gltf_json(path.read_bytes(), path, what)
    for buffer in doc.get("buffers", []):
        uri = buffer.get("uri", "") if isinstance(buffer, dict) else ""
        if uri and not uri.startswith("data:") and not (path.parent / uri).is_file():
            raise StudioInputError(f"{what} {path} refers to a buffer {uri!r} that does not exist beside it.")
    return doc


def _gltf_json(text: bytes, path: Path, what: str) -> dict:
    try:
        doc = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StudioInputError(f"{what} {path} has a JSON part that is not valid JSON.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("asset"), dict):
        raise StudioInputError(f"{what} {path} is not a glTF document (no 'asset' object).")
    return doc


def check_stl(path: Path, what: str = "STL file") -> int:
    """Triangle count of a binary STL whose size matches it (an ascii STL returns -1)."""
    size = require_file(path, what)
    head = _head(path, 84)
    if head[:5].lower() == b"solid" and b"facet" in _head(path, 4096):
        return -1
    if len(head) < 84:
        raise StudioInputError(f"{what} {path} is too short to be an STL file.")
    (count,) = struct.unpack("<I", head[80:84])
    if 84 + 50 * count != size:
        raise StudioInputError(
            f"{what} {path} declares {count:,} triangles ({84 + 50 * count:,} bytes) but has {size:,} bytes."
        )
    return count


def check_off(path: Path, what: str = "OFF file") -> tuple[int, int]:
    """(vertices, faces) of an OFF file whose size can hold them (about 2 characters per number)."""
    size = require_file(path, what)
    lines = [ln.split("#")[0].split() for ln in _head(path, 4096).decode("ascii", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0][0].endswith("OFF"):
        raise StudioInputError(f"{what} {path} is not an OFF file (no 'OFF' keyword).")
    counts = lines[0][1:] if len(lines[0]) > 1 else (lines[1] if len(lines) > 1 else [])
    if len(counts) < 2 or not all(c.isdigit() for c in counts[:2]):
        raise StudioInputError(f"{path} has no vertex and face counts after 'OFF'.")
    nv, nf = int(counts[0]), int(counts[1])
    if 6 * nv + 8 * nf > size:
        raise StudioInputError(f"{what} {path} declares {nv:,} vertices and {nf:,} faces but has only {size:,} bytes.")
    return nv, nf


EXR_MAGIC = 0x01312F76


def check_exr(path: Path, what: str = "EXR file") -> tuple[int, int]:
    """(width, height) from an OpenEXR header whose data window fits a sane image size."""
    size = require_file(path, what)
    head = _head(path, HEADER_LIMIT)
    if len(head) < 8 or struct.unpack("<I", head[:4])[0] != EXR_MAGIC:
        raise StudioInputError(f"{what} {path} is not an OpenEXR file (bad magic number).")
    pos, attrs = 8, {}
    while True:
        name_end = head.find(b"\0", pos)
        if name_end < 0:
            raise StudioInputError(f"{what} {path} has a truncated header.")
        if name_end == pos:
            break
        type_end = head.find(b"\0", name_end + 1)
        if type_end < 0 or type_end + 5 > len(head):
            raise StudioInputError(f"{what} {path} has a truncated header.")
        (n,) = struct.unpack("<i", head[type_end + 1 : type_end + 5])
        start = type_end + 5
        if n < 0 or start + n > len(head):
            raise StudioInputError(f"{what} {path} has a header attribute longer than the header.")
        attrs[head[pos:name_end].decode("ascii", errors="replace")] = head[start : start + n]
        pos = start + n
    window = attrs.get("dataWindow")
    if window is None or len(window) != 16 or "channels" not in attrs:
        raise StudioInputError(f"{what} {path} has no dataWindow/channels attributes.")
    x0, y0, x1, y1 = struct.unpack("<iiii", window)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise StudioInputError(
            f"{what} {path} declares a {width}x{height} image, outside 1..{MAX_IMAGE_PIXELS:,} pixels."
        )
    if size < pos + 1 + 8 * math.ceil(height / 256):  # one offset per block; DWAB's 256 lines are the most
        raise StudioInputError(f"{what} {path} is truncated (its line offset table is missing).")
    return width, height


def check_hdr(path: Path, what: str = "HDR file") -> tuple[int, int]:
    """(width, height) of a Radiance .hdr whose resolution line is sane."""
    require_file(path, what)
    head = _head(path, 4096)
    if not head.startswith((b"#?RADIANCE", b"#?RGBE")):
        raise StudioInputError(f"{what} {path} is not a Radiance HDR file.")
    for line in head.split(b"\n")[1:]:
        words = line.split()
        if len(words) == 4 and words[0] in (b"-Y", b"+Y") and words[1].isdigit() and words[3].isdigit():
            height, width = int(words[1]), int(words[3])
            if 0 < width * height <= MAX_IMAGE_PIXELS:
                return width, height
            break
    raise StudioInputError(f"{what} {path} has no valid resolution line.")


def check_safetensors(path: Path, what: str = "safetensors file") -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets} of a safetensors file whose offsets fit the file."""
    size = require_file(path, what)
    head = _head(path, 8)
    if len(head) < 8:
        raise StudioInputError(f"{what} {path} is too short to be a safetensors file.")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, SAFETENSORS_HEADER_LIMIT):
        raise StudioInputError(f"{what} {path} is not a safetensors file (its header length {n:,} exceeds the file).")
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StudioInputError(f"{what} {path} is not a safetensors file (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise StudioInputError(f"{what} {path} is not a safetensors file (its header is not a JSON object).")
    data = size - 8 - n
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in tensors.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            count = math.prod(int(d) for d in info["shape"])
            itemsize = SAFETENSORS_DTYPES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise StudioInputError(f"{what} {path}: tensor {name!r} has a malformed header entry.") from None
        if not 0 <= begin <= end <= data or end - begin != count * itemsize:
            raise StudioInputError(f"{what} {path}: tensor {name!r} lies outside the file (truncated or corrupt).")
    return tensors


def check_image(path: Path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image whose header is sane and whose pixels decode."""
    require_file(path, what)
    from PIL import Image, UnidentifiedImageError

    errors = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height <= MAX_IMAGE_PIXELS:
                img.load()
    except errors as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StudioInputError(f"{what} {path} is corrupt or not an image ({reason}).") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise StudioInputError(f"{what} {path} is {width}x{height}, more than {MAX_IMAGE_PIXELS:,} pixels.")
    return width, height


def check_prompt(text: str | None, what: str = "prompt") -> str:
    """``text`` stripped, refusing empty text, control characters and text over ``MAX_PROMPT_CHARS``."""
    stripped = (text or "").strip()
    if not stripped:
        raise StudioInputError(f"the {what} is empty.")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise StudioInputError(f"the {what} has {len(stripped):,} characters; at most {MAX_PROMPT_CHARS} are accepted.")
    if any(ord(c) < 32 and c not in "\t\n" for c in stripped) or "\x7f" in stripped:
        raise StudioInputError(f"the {what} contains control characters.")
    return stripped


MAX_PROMPT_FILE_CAPTIONS = 100
"""Most captions a prompt file (``studio eval text-to-3d --prompts``) may hold."""


def check_prompt_file(path: Path, what: str = "prompt file") -> list[str]:
    """The captions of a UTF-8 text file, one a line (blank lines and ``#`` comments ignored), each a
    valid prompt (:func:`check_prompt`); refuses a file with none or more than :data:`MAX_PROMPT_FILE_CAPTIONS`."""
    path = Path(path)
    size = require_file(path, what)
    limit = MAX_PROMPT_FILE_CAPTIONS * (MAX_PROMPT_CHARS + 1)
    if size > limit:
        raise StudioInputError(f"{what} {path} is {size:,} bytes, too large for {MAX_PROMPT_FILE_CAPTIONS} captions.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise StudioInputError(f"{what} {path} is not UTF-8 text.") from None
    lines = [
        (n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise StudioInputError(f"{what} {path} holds no caption (only blank lines and # comments).")
    if len(lines) > MAX_PROMPT_FILE_CAPTIONS:
        raise StudioInputError(
            f"{what} {path} holds {len(lines)} captions; at most {MAX_PROMPT_FILE_CAPTIONS} are accepted."
        )
    return [check_prompt(line, f"caption on line {n} of {path}") for n, line in lines]


def writable_location(path: Path, what: str, is_dir: bool) -> None:
    """Refuse an output ``path`` that cannot be created: an existing one of the wrong kind, a parent
    that is a file, or a folder the user cannot write (probed without leaving anything behind)."""
    if path.exists() and path.is_dir() != is_dir:
        kind = "a folder" if path.is_dir() else "a file"
        raise StudioInputError(f"{what} {path} is {kind}; expected {'a folder' if is_dir else 'a file path'}.")
    ancestor = path if path.exists() and is_dir else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StudioInputError(f"{what} {path} cannot be created: {ancestor} is a file, not a folder.")
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".studio-write-probe-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise StudioInputError(f"{what} {path} is not writable (no file can be created in {ancestor}).") from None
