/*
 * image_codecs.c — libpng / libjpeg(-turbo) wrappers for untrusted input.
 *
 * Every setjmp is in this file and every longjmp (libpng's png_error, our
 * libjpeg error_exit / emit_message / progress monitor) lands in the function
 * that called setjmp here, never in a Swift frame.
 *
 * Objects that change after setjmp and are read after a longjmp live in a
 * state struct owned by the *caller* of the function that calls setjmp, so
 * they are not "automatic objects local to the function containing setjmp"
 * (C11 7.13.2.1p3) and keep their values.
 */
#include "image_codecs.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
/* jpeglib.h needs stdio.h (FILE) and size_t before it. */
#include <jpeglib.h>
#include <jerror.h>

/* Ancillary chunks larger than this are refused by libpng (zTXt/iCCP
   decompression included). */
#define GDH_PNG_CHUNK_MALLOC_MAX (8u << 20)
/* Maximum number of cached ancillary/unknown chunks. */
#define GDH_PNG_CHUNK_CACHE_MAX 256u
/* Progressive JPEG scan limit (libjpeg-turbo's recommended DoS guard; ordinary
   progressive files have about 10 scans). */
#define GDH_JPEG_MAX_SCANS 500

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void clear_err(char *err, size_t errlen) {
    if (err != NULL && errlen > 0) err[0] = '\0';
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* CRC-32 (ISO-HDLC, as used by PNG), bitwise; only used on 17-byte IHDRs. */
static uint32_t crc32_bytes(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* (a * b) / 255 rounded to nearest, for a, b in 0...255. */
static inline uint8_t mul255(unsigned a, unsigned b) {
    return (uint8_t)((a * b + 127u) / 255u);
}

/* c composited over white with alpha a. */
static inline uint8_t over_white(unsigned c, unsigned a) {
    return (uint8_t)((c * a + 255u * (255u - a) + 127u) / 255u);
}

/* ------------------------------------------------------------------------ */
/* Format detection                                                         */
/* ------------------------------------------------------------------------ */

static const uint8_t k_png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};

static int detect_format(const uint8_t *data, size_t len, char *err, size_t errlen) {
    if (len == 0) {
        set_err(err, errlen, "empty input (0 bytes)");
        return -GDH_IMAGE_ECORRUPT;
    }
    size_t n = len < 8 ? len : 8;
    if (memcmp(data, k_png_sig, n) == 0) {
        if (len < 8) {
            set_err(err, errlen, "PNG: truncated signature (%zu bytes)", len);
            return -GDH_IMAGE_ECORRUPT;
        }
        return GDH_IMAGE_FORMAT_PNG;
    }
    if (data[0] == 0xFF && (len < 2 || data[1] == 0xD8)) {
        if (len < 3) {
            set_err(err, errlen, "JPEG: truncated (%zu bytes)", len);
            return -GDH_IMAGE_ECORRUPT;
        }
        return GDH_IMAGE_FORMAT_JPEG;
    }
    const char *what = NULL;
    if (len >= 6 && (memcmp(data, "GIF87a", 6) == 0 || memcmp(data, "GIF89a", 6) == 0)) what = "GIF";
    else if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0) what = "WebP";
    else if (len >= 4 && (memcmp(data, "II*\0", 4) == 0 || memcmp(data, "MM\0*", 4) == 0)) what = "TIFF";
    else if (len >= 2 && memcmp(data, "BM", 2) == 0) what = "BMP";
    else if (len >= 12 && memcmp(data + 4, "ftyp", 4) == 0) what = "ISO-BMFF (HEIF/AVIF?)";
    if (what != NULL) {
        set_err(err, errlen, "unsupported image format %s (only PNG and JPEG are decoded)", what);
    } else {
        char hex[3 * 8 + 1];
        size_t m = len < 8 ? len : 8;
        for (size_t i = 0; i < m; i++) snprintf(hex + 3 * i, 4, "%02x ", data[i]);
        hex[m > 0 ? 3 * m - 1 : 0] = '\0';
        set_err(err, errlen, "not a PNG or JPEG (starts with %s)", hex);
    }
    return -GDH_IMAGE_EUNSUPPORTED;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                      */
/* ------------------------------------------------------------------------ */

/* Parses the signature and IHDR by hand (no libpng), verifying the CRC. */
static int png_probe_ihdr(const uint8_t *data, size_t len, uint32_t *w, uint32_t *h,
                          char *err, size_t errlen) {
    /* signature(8) + length(4) + "IHDR"(4) + data(13) + crc(4) */
    if (len < 33) {
        set_err(err, errlen, "PNG: truncated before the end of IHDR (%zu bytes)", len);
        return GDH_IMAGE_ECORRUPT;
    }
    const uint8_t *chunk = data + 8;
    if (be32(chunk) != 13 || memcmp(chunk + 4, "IHDR", 4) != 0) {
        set_err(err, errlen, "PNG: first chunk is not a 13-byte IHDR");
        return GDH_IMAGE_ECORRUPT;
    }
    if (crc32_bytes(chunk + 4, 17) != be32(chunk + 21)) {
        set_err(err, errlen, "PNG: IHDR CRC mismatch");
        return GDH_IMAGE_ECORRUPT;
    }
    const uint8_t *ihdr = chunk + 8;
    uint32_t width = be32(ihdr), height = be32(ihdr + 4);
    unsigned depth = ihdr[8], ctype = ihdr[9];
    if (width == 0 || height == 0 || width > 0x7FFFFFFFu || height > 0x7FFFFFFFu) {
        set_err(err, errlen, "PNG: invalid dimensions %ux%u", width, height);
        return GDH_IMAGE_ECORRUPT;
    }
    int ok;
    switch (ctype) {
    case 0: ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16; break;
    case 3: ok = depth == 1 || depth == 2 || depth == 4 || depth == 8; break;
    case 2: case 4: case 6: ok = depth == 8 || depth == 16; break;
    default: ok = 0; break;
    }
    if (!ok) {
        set_err(err, errlen, "PNG: invalid colour type %u / bit depth %u", ctype, depth);
        return GDH_IMAGE_ECORRUPT;
    }
    if (ihdr[10] != 0 || ihdr[11] != 0 || ihdr[12] > 1) {
        set_err(err, errlen, "PNG: invalid compression/filter/interlace method");
        return GDH_IMAGE_ECORRUPT;
    }
    *w = width;
    *h = height;
    return GDH_IMAGE_OK;
}

struct png_state {
    /* input */
    const uint8_t *data;
    size_t len;
    size_t pos;
    uint64_t max_pixels;
    uint8_t *out;
    /* libpng objects, released by the caller of png_decode_inner */
    png_structp png;
    png_infop info;
    uint8_t *rowbuf;
    /* result */
    int code;
    char *err;
    size_t errlen;
};

static void png_read_cb(png_structp png, png_bytep dst, size_t n) {
    struct png_state *st = (struct png_state *)png_get_io_ptr(png);
    if (n > st->len - st->pos) {
        png_error(png, "truncated data (unexpected end of input)");
    }
    memcpy(dst, st->data + st->pos, n);
    st->pos += n;
}

static void png_error_cb(png_structp png, png_const_charp msg) {
    struct png_state *st = (struct png_state *)png_get_error_ptr(png);
    if (st->code == GDH_IMAGE_OK) {
        int oom = msg != NULL && (strstr(msg, "ut of memory") != NULL);
        st->code = oom ? GDH_IMAGE_ENOMEM : GDH_IMAGE_ECORRUPT;
        set_err(st->err, st->errlen, "PNG: %s", msg != NULL ? msg : "error");
    }
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* warnings (bad ancillary CRCs, benign errors) are ignored */
}

/* Ancillary chunks we never use: libpng discards them unparsed. */
static const png_byte k_png_ignored_chunks[] =
    "tEXt\0zTXt\0iTXt\0iCCP\0sPLT\0eXIf\0hIST\0pCAL\0sCAL\0tIME\0oFFs\0pHYs\0sBIT\0gAMA\0cHRM\0sRGB\0bKGD";

static void png_decode_inner(struct png_state *st) {
    png_structp png = st->png;
    png_infop info = st->info;
    if (setjmp(png_jmpbuf(png))) {
        return; /* st->code / message already set by png_error_cb */
    }
    png_set_read_fn(png, st, png_read_cb);
    uint32_t lim = st->max_pixels > 0x7FFFFFFFu ? 0x7FFFFFFFu : (uint32_t)st->max_pixels;
    png_set_user_limits(png, lim, lim);
    png_set_chunk_malloc_max(png, GDH_PNG_CHUNK_MALLOC_MAX);
    png_set_chunk_cache_max(png, GDH_PNG_CHUNK_CACHE_MAX);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, k_png_ignored_chunks,
                                (int)(sizeof k_png_ignored_chunks / 5));

    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((uint64_t)w * (uint64_t)h > st->max_pixels) {
        st->code = GDH_IMAGE_ETOOLARGE;
        set_err(st->err, st->errlen, "PNG: %ux%u exceeds the pixel limit", (unsigned)w, (unsigned)h);
        return;
    }

    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (depth == 16) png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    /* Interlaced images: no png_set_interlace_handling(); we read each Adam7
       pass's reduced rows and scatter them, so no full-image buffer is needed. */
    png_read_update_info(png, info);

    unsigned channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (png_get_bit_depth(png, info) != 8 || (channels != 3 && channels != 4) ||
        rowbytes != (size_t)w * channels) {
        st->code = GDH_IMAGE_EUNSUPPORTED;
        set_err(st->err, st->errlen, "PNG: unexpected layout after transforms (%u channels, depth %d)",
                channels, (int)png_get_bit_depth(png, info));
        return;
    }
    st->rowbuf = (uint8_t *)malloc(rowbytes);
    if (st->rowbuf == NULL) {
        st->code = GDH_IMAGE_ENOMEM;
        set_err(st->err, st->errlen, "PNG: out of memory (row buffer)");
        return;
    }
    uint8_t *row = st->rowbuf;
    uint8_t *out = st->out;

    if (interlace == PNG_INTERLACE_NONE) {
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *dst = out + (size_t)y * w * 3;
            if (channels == 3) {
                png_read_row(png, dst, NULL);
            } else {
                png_read_row(png, row, NULL);
                for (png_uint_32 x = 0; x < w; x++) {
                    const uint8_t *s = row + (size_t)x * 4;
                    dst[3 * x + 0] = over_white(s[0], s[3]);
                    dst[3 * x + 1] = over_white(s[1], s[3]);
                    dst[3 * x + 2] = over_white(s[2], s[3]);
                }
            }
        }
    } else {
        for (int pass = 0; pass < 7; pass++) {
            png_uint_32 pw = PNG_PASS_COLS(w, pass), ph = PNG_PASS_ROWS(h, pass);
            if (pw == 0 || ph == 0) continue; /* libpng skips empty passes too */
            for (png_uint_32 r = 0; r < ph; r++) {
                png_read_row(png, row, NULL);
                size_t y = PNG_ROW_FROM_PASS_ROW((size_t)r, pass);
                uint8_t *dst = out + y * w * 3;
                for (png_uint_32 c = 0; c < pw; c++) {
                    size_t x = PNG_COL_FROM_PASS_COL((size_t)c, pass);
                    const uint8_t *s = row + (size_t)c * channels;
                    uint8_t *d = dst + 3 * x;
                    if (channels == 3) {
                        d[0] = s[0];
                        d[1] = s[1];
                        d[2] = s[2];
                    } else {
                        d[0] = over_white(s[0], s[3]);
                        d[1] = over_white(s[1], s[3]);
                        d[2] = over_white(s[2], s[3]);
                    }
                }
            }
        }
    }
    /* Reads through IEND: a file cut anywhere before its end is an error. */
    png_read_end(png, NULL);
}

static int png_decode(const uint8_t *data, size_t len, uint64_t max_pixels,
                      uint8_t *out, size_t out_len, uint32_t *wp, uint32_t *hp,
                      char *err, size_t errlen) {
    uint32_t w = 0, h = 0;
    int rc = png_probe_ihdr(data, len, &w, &h, err, errlen);
    if (rc != GDH_IMAGE_OK) return rc;
    if (wp) *wp = w;
    if (hp) *hp = h;
    /* Size checks before libpng allocates anything image-sized. */
    if ((uint64_t)w * h > max_pixels) {
        set_err(err, errlen, "PNG: %ux%u = %llu pixels exceeds the limit of %llu", w, h,
                (unsigned long long)((uint64_t)w * h), (unsigned long long)max_pixels);
        return GDH_IMAGE_ETOOLARGE;
    }
    if ((uint64_t)w * h > SIZE_MAX / 4 || out_len < (size_t)w * h * 3) {
        set_err(err, errlen, "PNG: output buffer too small for %ux%u RGB", w, h);
        return GDH_IMAGE_EBUFFER;
    }

    struct png_state st;
    memset(&st, 0, sizeof st);
    st.data = data;
    st.len = len;
    st.max_pixels = max_pixels;
    st.out = out;
    st.err = err;
    st.errlen = errlen;
    st.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_error_cb, png_warning_cb);
    if (st.png == NULL) {
        set_err(err, errlen, "PNG: cannot create read struct");
        return GDH_IMAGE_ENOMEM;
    }
    st.info = png_create_info_struct(st.png);
    if (st.info == NULL) {
        png_destroy_read_struct(&st.png, NULL, NULL);
        set_err(err, errlen, "PNG: cannot create info struct");
        return GDH_IMAGE_ENOMEM;
    }
    png_decode_inner(&st);
    png_destroy_read_struct(&st.png, &st.info, NULL);
    free(st.rowbuf);
    return st.code;
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                     */
/* ------------------------------------------------------------------------ */

struct jpeg_state {
    struct jpeg_error_mgr errmgr; /* first: cinfo.err points here */
    jmp_buf jb;
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr progress;
    const uint8_t *data;
    size_t len;
    uint64_t max_pixels;
    int header_only;
    unsigned scale_denom; /* 1, 2, 4 or 8: libjpeg's DCT-domain reduction */
    uint8_t *out;
    size_t out_len;
    uint32_t width, height;
    int code;
    char *err;
    size_t errlen;
};

static void jpeg_fail(struct jpeg_state *st, int code, const char *msg) __attribute__((noreturn));

static void jpeg_fail(struct jpeg_state *st, int code, const char *msg) {
    if (st->code == GDH_IMAGE_OK) {
        st->code = code;
        set_err(st->err, st->errlen, "JPEG: %s", msg);
    }
    longjmp(st->jb, 1);
}

static void jpeg_error_exit_cb(j_common_ptr cinfo) {
    struct jpeg_state *st = (struct jpeg_state *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    int code;
    switch (cinfo->err->msg_code) {
    case JERR_BAD_PRECISION:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_NOT_COMPILED:
        code = GDH_IMAGE_EUNSUPPORTED;
        break;
    case JERR_OUT_OF_MEMORY:
    case JERR_NO_BACKING_STORE: /* our max_memory_to_use was exceeded */
        code = GDH_IMAGE_ENOMEM;
        break;
    default:
        code = GDH_IMAGE_ECORRUPT;
        break;
    }
    jpeg_fail(st, code, buf);
}

static void jpeg_emit_message_cb(j_common_ptr cinfo, int msg_level) {
    if (msg_level >= 0) return; /* trace messages */
    struct jpeg_state *st = (struct jpeg_state *)cinfo->err;
    /* jpeg_mem_src hit the end of the buffer: the file is truncated. libjpeg
       would insert a fake EOI and return grey pixels; we refuse instead. */
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_fail(st, GDH_IMAGE_ECORRUPT, "truncated data (premature end of JPEG file)");
    }
    /* Other warnings (corrupt entropy data, extraneous bytes, ...) are
       tolerated like most decoders do; the pixels may be damaged. */
    cinfo->err->num_warnings++;
}

static void jpeg_output_message_cb(j_common_ptr cinfo) {
    (void)cinfo; /* never print to stderr */
}

static void jpeg_progress_cb(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > GDH_JPEG_MAX_SCANS) {
        jpeg_fail((struct jpeg_state *)cinfo->err, GDH_IMAGE_ECORRUPT,
                  "too many progressive scans (limit 500)");
    }
}

static void jpeg_decode_inner(struct jpeg_state *st) {
    j_decompress_ptr cinfo = &st->cinfo;
    if (setjmp(st->jb)) {
        return; /* st->code / message set by jpeg_fail */
    }
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, st->data, (unsigned long)st->len);
    (void)jpeg_read_header(cinfo, TRUE);

    uint32_t w = cinfo->image_width, h = cinfo->image_height;
    st->width = w;
    st->height = h;
    if (w == 0 || h == 0) {
        jpeg_fail(st, GDH_IMAGE_ECORRUPT, "empty image");
    }
    if ((uint64_t)w * h > st->max_pixels) {
        st->code = GDH_IMAGE_ETOOLARGE;
        set_err(st->err, st->errlen, "JPEG: %ux%u = %llu pixels exceeds the limit of %llu", w, h,
                (unsigned long long)((uint64_t)w * h), (unsigned long long)st->max_pixels);
        return;
    }

    int cmyk = 0;
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cmyk = 1;
        break;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "unsupported colour space (%d components, libjpeg colour space %d)",
                 cinfo->num_components, (int)cinfo->jpeg_color_space);
        jpeg_fail(st, GDH_IMAGE_EUNSUPPORTED, msg);
    }
    }
    if (st->header_only) return;

    /* The memory bound below is for the full image: a reduced decode keeps all
       coefficients of a progressive file too. */
    uint64_t limit = ((uint64_t)w + 64) * ((uint64_t)h + 64) * (uint64_t)cinfo->num_components * 2 +
                     (64ull << 20);
    if (st->scale_denom > 1) {
        cinfo->scale_num = 1;
        cinfo->scale_denom = st->scale_denom;
    }
    cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_calc_output_dimensions(cinfo);
    w = cinfo->output_width;
    h = cinfo->output_height;
    st->width = w;
    st->height = h;
    if (w == 0 || h == 0) {
        jpeg_fail(st, GDH_IMAGE_ECORRUPT, "empty image");
    }
    if ((uint64_t)w * h > SIZE_MAX / 4 || st->out_len < (size_t)w * h * 3) {
        jpeg_fail(st, GDH_IMAGE_EBUFFER, "output buffer too small");
    }
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;

    /* Memory bound: progressive files keep all DCT coefficients (2 bytes per
       sample per component, MCU-padded) plus working buffers. */
    cinfo->mem->max_memory_to_use = limit > (uint64_t)LONG_MAX ? LONG_MAX : (long)limit;

    st->progress.progress_monitor = jpeg_progress_cb;
    cinfo->progress = &st->progress;

    jpeg_start_decompress(cinfo);
    if (cinfo->output_width != w || cinfo->output_height != h ||
        cinfo->output_components != (cmyk ? 4 : 3)) {
        jpeg_fail(st, GDH_IMAGE_ECORRUPT, "unexpected output geometry");
    }

    if (!cmyk) {
        while (cinfo->output_scanline < h) {
            JSAMPROW rows[8];
            unsigned n = 0;
            for (; n < 8 && cinfo->output_scanline + n < h; n++)
                rows[n] = st->out + (size_t)(cinfo->output_scanline + n) * w * 3;
            if (jpeg_read_scanlines(cinfo, rows, n) == 0)
                jpeg_fail(st, GDH_IMAGE_ECORRUPT, "decoder made no progress");
        }
    } else {
        JSAMPARRAY buf = (*cinfo->mem->alloc_sarray)((j_common_ptr)cinfo, JPOOL_IMAGE,
                                                     (JDIMENSION)w * 4, 1);
        /* Adobe (Photoshop) CMYK JPEGs store inverted samples. */
        int inverted = cinfo->saw_Adobe_marker;
        while (cinfo->output_scanline < h) {
            uint8_t *dst = st->out + (size_t)cinfo->output_scanline * w * 3;
            if (jpeg_read_scanlines(cinfo, buf, 1) != 1)
                jpeg_fail(st, GDH_IMAGE_ECORRUPT, "decoder made no progress");
            const uint8_t *s = buf[0];
            for (uint32_t x = 0; x < w; x++, s += 4, dst += 3) {
                unsigned c = s[0], m = s[1], y = s[2], k = s[3];
                if (!inverted) {
                    c = 255 - c;
                    m = 255 - m;
                    y = 255 - y;
                    k = 255 - k;
                }
                /* now c,m,y,k are 255 - ink */
                dst[0] = mul255(c, k);
                dst[1] = mul255(m, k);
                dst[2] = mul255(y, k);
            }
        }
    }
    /* Reads through EOI: a file cut anywhere before its end is an error. */
    jpeg_finish_decompress(cinfo);
}

static int jpeg_run(const uint8_t *data, size_t len, uint64_t max_pixels, int header_only, unsigned scale_denom,
                    uint8_t *out, size_t out_len, uint32_t *wp, uint32_t *hp,
                    char *err, size_t errlen) {
    struct jpeg_state *st = (struct jpeg_state *)calloc(1, sizeof *st);
    if (st == NULL) {
        set_err(err, errlen, "JPEG: out of memory");
        return GDH_IMAGE_ENOMEM;
    }
    st->cinfo.err = jpeg_std_error(&st->errmgr);
    st->errmgr.error_exit = jpeg_error_exit_cb;
    st->errmgr.emit_message = jpeg_emit_message_cb;
    st->errmgr.output_message = jpeg_output_message_cb;
    st->data = data;
    st->len = len;
    st->max_pixels = max_pixels;
    st->header_only = header_only;
    st->scale_denom = scale_denom;
    st->out = out;
    st->out_len = out_len;
    st->err = err;
    st->errlen = errlen;
    jpeg_decode_inner(st);
    jpeg_destroy_decompress(&st->cinfo);
    if (wp) *wp = st->width;
    if (hp) *hp = st->height;
    int code = st->code;
    free(st);
    return code;
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                      */
/* ------------------------------------------------------------------------ */

int gdh_image_probe(const uint8_t *data, size_t len, int *format,
                    uint32_t *width, uint32_t *height, char *err, size_t errlen) {
    clear_err(err, errlen);
    if (format) *format = GDH_IMAGE_FORMAT_UNKNOWN;
    if (width) *width = 0;
    if (height) *height = 0;
    if (data == NULL && len > 0) {
        set_err(err, errlen, "NULL data");
        return GDH_IMAGE_EINVAL;
    }
    int fmt = detect_format(data, len, err, errlen);
    if (fmt < 0) return -fmt;
    if (format) *format = fmt;
    if (fmt == GDH_IMAGE_FORMAT_PNG) {
        uint32_t w = 0, h = 0;
        int rc = png_probe_ihdr(data, len, &w, &h, err, errlen);
        if (rc == GDH_IMAGE_OK) {
            if (width) *width = w;
            if (height) *height = h;
        }
        return rc;
    }
    return jpeg_run(data, len, UINT64_MAX, 1, 1, NULL, 0, width, height, err, errlen);
}

unsigned gdh_jpeg_reduction(uint32_t width, uint32_t height, uint32_t min_width, uint32_t min_height) {
    unsigned d = 8;
    while (d > 1 && ((width + d - 1) / d < min_width || (height + d - 1) / d < min_height)) d /= 2;
    return d;
}

/* Both decode entry points; min_width = min_height = 0 means no reduction. */
static int decode_rgb8(const uint8_t *data, size_t len, uint64_t max_pixels,
                       uint32_t min_width, uint32_t min_height,
                       uint8_t *out, size_t out_len, uint32_t *width, uint32_t *height,
                       char *err, size_t errlen) {
    clear_err(err, errlen);
    if (width) *width = 0;
    if (height) *height = 0;
    if ((data == NULL && len > 0) || (out == NULL && out_len > 0)) {
        set_err(err, errlen, "NULL buffer");
        return GDH_IMAGE_EINVAL;
    }
    int fmt = detect_format(data, len, err, errlen);
    if (fmt < 0) return -fmt;
    if (fmt == GDH_IMAGE_FORMAT_PNG)
        return png_decode(data, len, max_pixels, out, out_len, width, height, err, errlen);
    unsigned d = 1;
    if (min_width > 0 || min_height > 0) {
        uint32_t w = 0, h = 0;
        int rc = jpeg_run(data, len, UINT64_MAX, 1, 1, NULL, 0, &w, &h, err, errlen);
        if (rc != GDH_IMAGE_OK) return rc;
        d = gdh_jpeg_reduction(w, h, min_width, min_height);
    }
    return jpeg_run(data, len, max_pixels, 0, d, out, out_len, width, height, err, errlen);
}

int gdh_image_decode_rgb8(const uint8_t *data, size_t len, uint64_t max_pixels,
                          uint8_t *out, size_t out_len,
                          uint32_t *width, uint32_t *height,
                          char *err, size_t errlen) {
    return decode_rgb8(data, len, max_pixels, 0, 0, out, out_len, width, height, err, errlen);
}

int gdh_image_decode_rgb8_reduced(const uint8_t *data, size_t len, uint64_t max_pixels,
                                  uint32_t min_width, uint32_t min_height,
                                  uint8_t *out, size_t out_len,
                                  uint32_t *width, uint32_t *height,
                                  char *err, size_t errlen) {
    return decode_rgb8(data, len, max_pixels, min_width ? min_width : 1, min_height ? min_height : 1,
                       out, out_len, width, height, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* PNG encoding                                                             */
/* ------------------------------------------------------------------------ */

struct png_wstate {
    png_structp png;
    png_infop info;
    const uint8_t *rgb;
    uint32_t width, height;
    uint8_t *buf;
    size_t len, cap;
    int code;
    char *err;
    size_t errlen;
};

static void png_write_cb(png_structp png, png_bytep src, size_t n) {
    struct png_wstate *st = (struct png_wstate *)png_get_io_ptr(png);
    if (n > SIZE_MAX - st->len) png_error(png, "output too large");
    if (st->len + n > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + n) {
            if (cap > SIZE_MAX / 2) { cap = st->len + n; break; }
            cap *= 2;
        }
        uint8_t *p = (uint8_t *)realloc(st->buf, cap);
        if (p == NULL) png_error(png, "out of memory");
        st->buf = p;
        st->cap = cap;
    }
    memcpy(st->buf + st->len, src, n);
    st->len += n;
}

static void png_flush_cb(png_structp png) { (void)png; }

static void png_werror_cb(png_structp png, png_const_charp msg) {
    struct png_wstate *st = (struct png_wstate *)png_get_error_ptr(png);
    if (st->code == GDH_IMAGE_OK) {
        int oom = msg != NULL && (strstr(msg, "ut of memory") != NULL);
        st->code = oom ? GDH_IMAGE_ENOMEM : GDH_IMAGE_ECORRUPT;
        set_err(st->err, st->errlen, "PNG encode: %s", msg != NULL ? msg : "error");
    }
    png_longjmp(png, 1);
}

static void png_encode_inner(struct png_wstate *st) {
    png_structp png = st->png;
    if (setjmp(png_jmpbuf(png))) return;
    png_set_write_fn(png, st, png_write_cb, png_flush_cb);
    png_set_IHDR(png, st->info, st->width, st->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, st->info);
    for (uint32_t y = 0; y < st->height; y++) {
        png_write_row(png, (png_const_bytep)(st->rgb + (size_t)y * st->width * 3));
    }
    png_write_end(png, NULL);
}

int gdh_png_encode_rgb8(const uint8_t *rgb, uint32_t width, uint32_t height,
                        uint8_t **out, size_t *out_len, char *err, size_t errlen) {
    clear_err(err, errlen);
    if (out == NULL || out_len == NULL || rgb == NULL) {
        set_err(err, errlen, "NULL argument");
        return GDH_IMAGE_EINVAL;
    }
    *out = NULL;
    *out_len = 0;
    if (width == 0 || height == 0 || width > 0x7FFFFFFFu || height > 0x7FFFFFFFu ||
        (uint64_t)width * 3 > 0x7FFFFFFFu) {
        set_err(err, errlen, "PNG encode: invalid dimensions %ux%u", width, height);
        return GDH_IMAGE_EINVAL;
    }
    struct png_wstate st;
    memset(&st, 0, sizeof st);
    st.rgb = rgb;
    st.width = width;
    st.height = height;
    st.err = err;
    st.errlen = errlen;
    st.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, png_werror_cb, png_warning_cb);
    if (st.png == NULL) {
        set_err(err, errlen, "PNG encode: cannot create write struct");
        return GDH_IMAGE_ENOMEM;
    }
    st.info = png_create_info_struct(st.png);
    if (st.info == NULL) {
        png_destroy_write_struct(&st.png, NULL);
        set_err(err, errlen, "PNG encode: cannot create info struct");
        return GDH_IMAGE_ENOMEM;
    }
    png_encode_inner(&st);
    png_destroy_write_struct(&st.png, &st.info);
    if (st.code != GDH_IMAGE_OK) {
        free(st.buf);
        return st.code;
    }
    *out = st.buf;
    *out_len = st.len;
    return GDH_IMAGE_OK;
}

void gdh_image_free(void *p) { free(p); }
