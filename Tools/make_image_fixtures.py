#!/usr/bin/env python3
"""Writes the small PNG/JPEG fixtures for Tests/ImageIOTests/Fixtures.

Usage: pip install pillow && python3 Tools/make_image_fixtures.py

For every fixture <name>.<png|jpg> it writes <name>.rgb: the expected decoded
8-bit RGB, row-major, alpha composited over white with
    v = (c * a + 255 * (255 - a) + 127) // 255.
PNG expectations are computed from the source samples (independently of any
decoder) and must match exactly. JPEG expectations are Pillow's decode (its
bundled libjpeg-turbo, ISLOW IDCT, fancy upsampling) and are compared with a
tolerance; JPEGs also get <name>.source.rgb (the RGB that was encoded) for a
loose mean-error check. fixtures.json lists everything.

16-bit and interlaced PNGs are written by the small PNG writer below (Pillow
cannot write them); it cycles through all five row filters.
"""
import json
import os
import struct
import sys
import zlib

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ImageIOTests", "Fixtures")

W, H = 13, 11      # PNG size: odd, so every Adam7 pass is partial
JW, JH = 37, 29    # JPEG size: partial MCUs on both axes


def over_white(c, a):
    return (c * a + 255 * (255 - a) + 127) // 255


def pattern_rgb(w, h):
    """A deterministic pattern with varied values in all channels."""
    px = []
    for y in range(h):
        for x in range(w):
            r = (x * 255) // max(1, w - 1)
            g = (y * 255) // max(1, h - 1)
            b = (x * 37 + y * 91 + 11) % 256
            px.append((r, g, b))
    return px


def smooth_rgb(w, h):
    """Smooth content for JPEG (so the lossy error stays small)."""
    px = []
    for y in range(h):
        for x in range(w):
            r = 30 + (x * 190) // (w - 1)
            g = 40 + (y * 170) // (h - 1)
            b = 200 - ((x + y) * 150) // (w + h - 2)
            px.append((r, g, b))
    return px


def alpha_at(x, y, w):
    # includes fully transparent (0), fully opaque (255) and partial values
    return [0, 255, 128, 1, 254, 64, 200][(x + y * w) % 7]


# ---------------------------------------------------------------- raw PNG writer

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_rows(rows, bpp, first_filter=0):
    """Filters a list of raw scanlines (bytes), cycling filter types 0..4."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        ft = (first_filter + i) % 5
        f = bytearray()
        for j, v in enumerate(row):
            a = row[j - bpp] if j >= bpp else 0
            b = prev[j]
            c = prev[j - bpp] if j >= bpp else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][ft]
            f.append((v - pred) & 0xFF)
        out.append(ft)
        out += f
        prev = row
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, w, h, color_type, depth, samples, interlace=False):
    """samples: list of per-pixel tuples of ints (each < 2**depth)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    bps = depth // 8
    bpp = channels * bps

    def pixel_bytes(p):
        return b"".join(v.to_bytes(bps, "big") for v in p)

    if not interlace:
        rows = [b"".join(pixel_bytes(samples[y * w + x]) for x in range(w)) for y in range(h)]
        raw = filter_rows(rows, bpp)
    else:
        raw = b""
        for n, (x0, y0, dx, dy) in enumerate(ADAM7):
            xs = list(range(x0, w, dx))
            ys = list(range(y0, h, dy))
            if not xs or not ys:
                continue
            rows = [b"".join(pixel_bytes(samples[y * w + x]) for x in xs) for y in ys]
            raw += filter_rows(rows, bpp, first_filter=n)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    data += png_chunk(b"tEXt", b"Comment\0gdh-index ImageIO fixture")
    # Two IDAT chunks, to exercise chunk boundaries inside the zlib stream.
    z = zlib.compress(raw, 9)
    half = len(z) // 2
    data += png_chunk(b"IDAT", z[:half]) + png_chunk(b"IDAT", z[half:]) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- fixtures

manifest = []


def save_expected(name, w, h, rgb, tolerance, kind, covers, source=None):
    with open(os.path.join(OUT, name + ".rgb"), "wb") as f:
        f.write(bytes(v for p in rgb for v in p))
    entry = {"file": name + "." + kind, "width": w, "height": h, "expected": name + ".rgb",
             "tolerance": tolerance, "covers": covers}
    if source is not None:
        with open(os.path.join(OUT, name + ".source.rgb"), "wb") as f:
            f.write(bytes(v for p in source for v in p))
        entry["source"] = name + ".source.rgb"
    manifest.append(entry)


def png_fixtures():
    base = pattern_rgb(W, H)

    # 8-bit greyscale
    grey = [(p[0] + p[2]) // 2 for p in base]
    im = Image.new("L", (W, H))
    im.putdata(grey)
    im.save(os.path.join(OUT, "png_grey.png"))
    save_expected("png_grey", W, H, [(v, v, v) for v in grey], 0, "png", "greyscale, 8-bit")

    # 1-bit greyscale (expand_gray_1_2_4_to_8)
    bits = [255 if ((x // 2 + y) % 3 == 0) else 0 for y in range(H) for x in range(W)]
    im = Image.new("1", (W, H))
    im.putdata(bits)
    im.save(os.path.join(OUT, "png_grey1.png"))
    save_expected("png_grey1", W, H, [(v, v, v) for v in bits], 0, "png", "greyscale, 1-bit")

    # grey + alpha
    ga = [(grey[i], alpha_at(i % W, i // W, W)) for i in range(W * H)]
    im = Image.new("LA", (W, H))
    im.putdata(ga)
    im.save(os.path.join(OUT, "png_grey_alpha.png"))
    save_expected("png_grey_alpha", W, H, [(over_white(g, a),) * 3 for g, a in ga], 0, "png",
                  "greyscale + alpha, 8-bit, composited over white")

    # RGB
    im = Image.new("RGB", (W, H))
    im.putdata(base)
    im.save(os.path.join(OUT, "png_rgb.png"))
    save_expected("png_rgb", W, H, base, 0, "png", "RGB, 8-bit")

    # RGBA
    rgba = [(p[0], p[1], p[2], alpha_at(i % W, i // W, W)) for i, p in enumerate(base)]
    im = Image.new("RGBA", (W, H))
    im.putdata(rgba)
    im.save(os.path.join(OUT, "png_rgba.png"))
    save_expected("png_rgba", W, H, [tuple(over_white(c, p[3]) for c in p[:3]) for p in rgba], 0, "png",
                  "RGBA, 8-bit, composited over white")

    # RGB + tRNS (one transparent colour)
    key = base[5]
    im = Image.new("RGB", (W, H))
    im.putdata(base)
    im.save(os.path.join(OUT, "png_rgb_trns.png"), transparency=key)
    save_expected("png_rgb_trns", W, H, [(255, 255, 255) if p == key else p for p in base], 0, "png",
                  "RGB + tRNS colour key")

    # palette with partial transparency (tRNS with fewer entries than PLTE)
    palette = [((i * 53) % 256, (i * 97 + 30) % 256, (255 - i * 16) % 256) for i in range(16)]
    trns = [0, 255, 128, 30, 200, 77]  # entries 6..15 are opaque
    idx = [(x * 3 + y * 5) % 16 for y in range(H) for x in range(W)]
    im = Image.new("P", (W, H))
    im.putpalette([v for c in palette for v in c])
    im.putdata(idx)
    im.save(os.path.join(OUT, "png_palette_trns.png"), transparency=bytes(trns))
    exp = []
    for i in idx:
        a = trns[i] if i < len(trns) else 255
        exp.append(tuple(over_white(c, a) for c in palette[i]))
    save_expected("png_palette_trns", W, H, exp, 0, "png", "palette + tRNS (partial), 4-bit indices")

    # 16-bit RGB (strip to the high byte)
    s16 = [((p[0] << 8) | (255 - p[2]), (p[1] << 8) | p[0], (p[2] << 8) | 0xFF) for p in base]
    write_png(os.path.join(OUT, "png_rgb16.png"), W, H, 2, 16, s16)
    save_expected("png_rgb16", W, H, [tuple(v >> 8 for v in p) for p in s16], 0, "png",
                  "RGB, 16-bit (high byte kept), all row filters")

    # 16-bit grey + alpha
    ga16 = [((g << 8) | 0x5A, (a << 8) | (255 - a)) for g, a in ga]
    write_png(os.path.join(OUT, "png_grey_alpha16.png"), W, H, 4, 16, ga16)
    save_expected("png_grey_alpha16", W, H, [(over_white(g >> 8, a >> 8),) * 3 for g, a in ga16], 0, "png",
                  "greyscale + alpha, 16-bit")

    # Adam7 interlaced RGB
    write_png(os.path.join(OUT, "png_interlaced_rgb.png"), W, H, 2, 8, base, interlace=True)
    save_expected("png_interlaced_rgb", W, H, base, 0, "png", "Adam7 interlaced RGB 13x11")

    # Adam7 interlaced RGBA, tiny (several passes are empty)
    w2, h2 = 5, 3
    small = [(p[0], p[1], p[2], alpha_at(i % w2, i // w2, w2)) for i, p in enumerate(pattern_rgb(w2, h2))]
    write_png(os.path.join(OUT, "png_interlaced_rgba.png"), w2, h2, 6, 8, small, interlace=True)
    save_expected("png_interlaced_rgba", w2, h2, [tuple(over_white(c, p[3]) for c in p[:3]) for p in small], 0,
                  "png", "Adam7 interlaced RGBA 5x3 (empty passes)")


def jpeg_fixtures():
    src = smooth_rgb(JW, JH)
    im = Image.new("RGB", (JW, JH))
    im.putdata(src)

    def decoded(path):
        with Image.open(path) as d:
            b = d.convert("RGB").tobytes()
            return [tuple(b[i:i + 3]) for i in range(0, len(b), 3)]

    p = os.path.join(OUT, "jpg_rgb_baseline.jpg")
    im.save(p, quality=90)
    save_expected("jpg_rgb_baseline", JW, JH, decoded(p), 3, "jpg", "baseline YCbCr 4:2:0", src)

    p = os.path.join(OUT, "jpg_progressive.jpg")
    im.save(p, quality=90, progressive=True, subsampling=0)
    save_expected("jpg_progressive", JW, JH, decoded(p), 3, "jpg", "progressive YCbCr 4:4:4", src)

    grey = im.convert("L")
    p = os.path.join(OUT, "jpg_grey.jpg")
    grey.save(p, quality=90)
    save_expected("jpg_grey", JW, JH, decoded(p), 3, "jpg", "greyscale (1 component)",
                  [(v, v, v) for v in grey.tobytes()])

    # CMYK (Pillow writes an Adobe APP14 marker and inverted samples, as Photoshop does).
    cmyk = Image.new("CMYK", (JW, JH))
    cmyk.putdata([(255 - r, 255 - g, 255 - b, 0) for r, g, b in src])
    p = os.path.join(OUT, "jpg_cmyk.jpg")
    cmyk.save(p, quality=95)
    save_expected("jpg_cmyk", JW, JH, decoded(p), 3, "jpg", "CMYK, Adobe-inverted", src)


def main():
    os.makedirs(OUT, exist_ok=True)
    png_fixtures()
    jpeg_fixtures()
    with open(os.path.join(OUT, "fixtures.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(manifest)} fixtures, {total} bytes in {os.path.relpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
