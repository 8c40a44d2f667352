"""Where the bytes of a video frame are in GStreamer's default layout (``GstVideoInfo``), which
is how shmframe frames are stored, and the caps strings that describe them."""

import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

# format -> (bytes per pixel, channels or None for a 2-D array, numpy dtype)
_PACKED: Dict[str, Tuple[int, Optional[int], str]] = {
    "RGB": (3, 3, "u1"),
    "BGR": (3, 3, "u1"),
    "RGBA": (4, 4, "u1"),
    "BGRA": (4, 4, "u1"),
    "ARGB": (4, 4, "u1"),
    "ABGR": (4, 4, "u1"),
    "RGBx": (4, 4, "u1"),
    "BGRx": (4, 4, "u1"),
    "xRGB": (4, 4, "u1"),
    "xBGR": (4, 4, "u1"),
    "GRAY8": (1, None, "u1"),
    "GRAY16_LE": (2, None, "<u2"),
    "GRAY16_BE": (2, None, ">u2"),
    "RGB16": (2, None, "=u2"),
    "BGR16": (2, None, "=u2"),
}
_PLANAR = ("I420", "YV12", "NV12", "NV21", "Y42B", "Y444")
SUPPORTED_FORMATS: Tuple[str, ...] = tuple(_PACKED) + _PLANAR

Shape = Tuple[int, ...]


def _ru(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _ceil_half(n: int) -> int:
    return (n + 1) // 2


class Plane:
    """One plane of a frame: ``rows`` rows of ``row_bytes`` visible bytes, ``stride`` bytes
    apart, from ``offset``; ``shape`` is its array shape."""

    def __init__(
        self, component: str, offset: int, stride: int, rows: int, row_bytes: int, shape: Shape
    ) -> None:
        self.component, self.offset, self.stride = component, offset, stride
        self.rows, self.row_bytes, self.shape = rows, row_bytes, shape

    def __repr__(self) -> str:
        return (
            f"Plane({self.component}, offset={self.offset}, stride={self.stride}, "
            f"rows={self.rows}, row_bytes={self.row_bytes})"
        )


class FrameLayout:
    """Where the bytes of a ``format`` frame of ``width`` x ``height`` are, in GStreamer's
    default layout: plane offsets, strides (rows padded to 4 bytes), total ``size``."""

    format: str
    width: int
    height: int
    dtype: np.dtype
    #: The array shape of a packed format's frame; None for planar formats (1-D buffers).
    shape: Optional[Shape]
    #: For packed formats without row padding: (shape, element count) of the frame array,
    #: which is then a plain reshape of the bytes; None otherwise.
    contiguous_shape: Optional[Tuple[Shape, int]]
    bytes_per_pixel: Optional[int]
    planes: List[Plane]
    size: int

    def __init__(self, fmt: str, width: int, height: int) -> None:
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(
                f"format {fmt!r} is not supported; expected one of {', '.join(SUPPORTED_FORMATS)}"
            )
        if width < 1 or height < 1:
            raise ValueError(f"frame size {width}x{height} must be at least 1x1")
        self.format, self.width, self.height = fmt, width, height
        w, h = width, height
        if fmt in _PACKED:
            bpp, channels, dtype = _PACKED[fmt]
            stride = w * 4 if bpp == 4 else _ru(w * bpp, 4)
            shape: Shape = (h, w, channels) if channels else (h, w)
            self.dtype = np.dtype(dtype)
            self.shape = shape
            self.bytes_per_pixel = bpp
            self.planes = [Plane("packed", 0, stride, h, w * bpp, shape)]
            self.size = stride * h
            self._padded = stride != w * bpp
            count = h * w * (channels or 1)
            self.contiguous_shape = None if self._padded else (shape, count)
            return
        self._padded = False
        self.contiguous_shape = None
        self.dtype = np.dtype("u1")
        self.shape = None
        self.bytes_per_pixel = None
        cw, ch = _ceil_half(w), _ceil_half(h)
        if fmt in ("I420", "YV12"):
            s0, s1 = _ru(w, 4), _ru(_ru(w, 2) // 2, 4)
            o1 = s0 * _ru(h, 2)
            o2 = o1 + s1 * (_ru(h, 2) // 2)
            self.size = o2 + s1 * (_ru(h, 2) // 2)
            u_off, v_off = (o1, o2) if fmt == "I420" else (o2, o1)
            self.planes = [
                Plane("Y", 0, s0, h, w, (h, w)),
                Plane("U", u_off, s1, ch, cw, (ch, cw)),
                Plane("V", v_off, s1, ch, cw, (ch, cw)),
            ]
        elif fmt in ("NV12", "NV21"):
            s0 = _ru(w, 4)
            o1 = s0 * _ru(h, 2)
            self.size = o1 + s0 * (_ru(h, 2) // 2)
            self.planes = [
                Plane("Y", 0, s0, h, w, (h, w)),
                Plane("UV" if fmt == "NV12" else "VU", o1, s0, ch, cw * 2, (ch, cw, 2)),
            ]
        elif fmt == "Y42B":
            s0, s1 = _ru(w, 4), _ru(w, 8) // 2
            o1 = s0 * h
            o2 = o1 + s1 * h
            self.size = o2 + s1 * h
            self.planes = [
                Plane("Y", 0, s0, h, w, (h, w)),
                Plane("U", o1, s1, h, cw, (h, cw)),
                Plane("V", o2, s1, h, cw, (h, cw)),
            ]
        else:  # Y444
            s = _ru(w, 4)
            self.size = 3 * s * h
            self.planes = [Plane(c, k * s * h, s, h, w, (h, w)) for k, c in enumerate("YUV")]

    @property
    def packed(self) -> bool:
        return self.shape is not None

    @property
    def padded(self) -> bool:
        """Whether rows carry padding bytes (the frame array is then not contiguous)."""
        return self._padded

    def __repr__(self) -> str:
        return f"FrameLayout({self.format}, {self.width}x{self.height}, size={self.size})"

    def _plane_view(self, buf: npt.ArrayLike, plane: Plane) -> np.ndarray:
        flat = np.asarray(buf).reshape(-1).view(np.uint8)
        if plane.shape == self.shape:  # packed
            if len(plane.shape) == 3:
                strides: Shape = (plane.stride, self.bytes_per_pixel or 1, 1)
            else:
                strides = (plane.stride, self.dtype.itemsize)
            return np.ndarray(plane.shape, self.dtype, flat, plane.offset, strides)
        strides = (plane.stride, 2, 1) if len(plane.shape) == 3 else (plane.stride, 1)
        return np.ndarray(plane.shape, np.uint8, flat, plane.offset, strides)

    def to_array(self, buf: npt.ArrayLike) -> np.ndarray:
        """The frame as ``Reader.read`` returns it: shaped for packed formats (a view of
        ``buf``, not contiguous when rows are padded), ``buf`` itself (1-D) otherwise."""
        if self.packed:
            if self.shape is not None and not self.padded and type(buf) is np.ndarray:
                # Contiguous pixels: a reshape is all it takes (and the cheapest view).
                flat = buf.reshape(-1)
                if self.dtype.itemsize != 1 or flat.dtype != np.uint8:
                    flat = flat.view(np.uint8).view(self.dtype)
                return flat[: self.size // self.dtype.itemsize].reshape(self.shape)
            return self._plane_view(buf, self.planes[0])
        return np.asarray(buf).reshape(-1)

    def split(self, buf: npt.ArrayLike) -> Dict[str, np.ndarray]:
        """Views of each plane of a frame buffer, keyed by component: ``{"Y": (h, w), "U":
        (ceil(h/2), ceil(w/2)), "V": ...}`` for I420/YV12, ``{"Y", "UV": (ceil(h/2), ceil(w/2),
        2)}`` for NV12 (``"VU"`` for NV21), full-height chroma for Y42B/Y444. For a packed
        format: ``{"packed": array}``."""
        flat = np.asarray(buf).reshape(-1)
        if flat.nbytes < self.size:
            raise ValueError(f"buffer of {flat.nbytes} bytes is smaller than a {self} frame")
        return {p.component: self._plane_view(flat, p) for p in self.planes}

    def pack(
        self,
        planes: Union[Mapping[str, npt.ArrayLike], Sequence[npt.ArrayLike]],
        out: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """A frame buffer (1-D uint8, ``size`` bytes, padding zeroed) from a dict of planes as
        ``split`` returns them (or a list in the same order)."""
        if out is None:
            out = np.zeros(self.size, np.uint8)
        if isinstance(planes, Mapping):
            planes = [planes[p.component] for p in self.planes]
        if len(planes) != len(self.planes):
            raise ValueError(f"{self.format} has {len(self.planes)} planes, got {len(planes)}")
        for p, src in zip(self.planes, planes):
            src = np.asarray(src)
            if src.shape != p.shape:
                raise ValueError(f"plane {p.component}: expected shape {p.shape}, got {src.shape}")
            self._plane_view(out, p)[...] = src
        return out

    def zero_padding(self, buf: np.ndarray) -> None:
        """Zeroes the row padding of a packed frame buffer, so that frames are byte for byte
        deterministic."""
        if self.packed and self.padded:
            p = self.planes[0]
            rows = np.ndarray((p.rows, p.stride), np.uint8, buf, 0, (p.stride, 1))
            rows[:, p.row_bytes :] = 0


_CAPS_FIELD = r"(?:^|[,;])\s*{name}\s*=\s*(?:\([A-Za-z0-9_]+\))?\s*\"?([^,;\"]+)\"?"


def parse_caps(caps: str) -> Tuple[str, int, int]:
    """``(format, width, height)`` of a ``video/x-raw`` caps string (the first structure)."""
    caps = caps.strip()
    if not caps.startswith("video/x-raw"):
        raise ValueError(f"caps {caps!r} are not video/x-raw")
    out = []
    for field in ("format", "width", "height"):
        m = re.search(_CAPS_FIELD.format(name=field), caps)
        if not m:
            raise ValueError(f"caps {caps!r} have no {field} field")
        out.append(m.group(1).strip())
    return out[0], int(out[1]), int(out[2])


Fps = Union[int, Tuple[int, int]]


def caps_string(fmt: str, width: int, height: int, fps: Fps = 30) -> str:
    """The caps string a writer of this package announces (as ``gst_caps_to_string`` prints
    it)."""
    num, den = (fps, 1) if isinstance(fps, int) else fps
    return (
        f"video/x-raw, format=(string){fmt}, width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){num}/{den}"
    )
