/*
 * image_codecs.h — PNG / JPEG decoding (and PNG encoding) for untrusted input.
 *
 * libpng and libjpeg report errors with setjmp/longjmp. Every setjmp lives in
 * image_codecs.c and every longjmp lands there too, so no longjmp ever crosses
 * a Swift frame: these functions always return normally with a status code and,
 * on failure, a NUL-terminated message in `err` (truncated to `errlen`).
 *
 * All decoding reads from the caller's in-memory buffer (never past `len`);
 * the pixel count is checked against `max_pixels` before any image-sized
 * allocation.
 */
#ifndef GDH_IMAGE_CODECS_H
#define GDH_IMAGE_CODECS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Values of `*format`. */
enum {
    GDH_IMAGE_FORMAT_UNKNOWN = 0,
    GDH_IMAGE_FORMAT_PNG = 1,
    GDH_IMAGE_FORMAT_JPEG = 2,
};

/* Return codes (0 = success). */
enum {
    GDH_IMAGE_OK = 0,
    /* Not PNG/JPEG, or a PNG/JPEG variant this decoder refuses
       (e.g. 12-bit JPEG, an unknown JPEG colour space). */
    GDH_IMAGE_EUNSUPPORTED = 1,
    /* width * height > max_pixels; *width and *height hold the claimed size. */
    GDH_IMAGE_ETOOLARGE = 2,
    /* Corrupt, truncated or otherwise undecodable data. */
    GDH_IMAGE_ECORRUPT = 3,
    /* `out_len` is smaller than width * height * 3 (width and height are set). */
    GDH_IMAGE_EBUFFER = 4,
    /* An allocation failed. */
    GDH_IMAGE_ENOMEM = 5,
    /* Invalid argument (NULL pointer, zero size, ...). */
    GDH_IMAGE_EINVAL = 6,
};

/*
 * Reads only the header: the format (by signature) and the dimensions.
 * PNG: the IHDR chunk is parsed and its CRC verified (libpng is not involved).
 * JPEG: libjpeg's jpeg_read_header (markers up to the first SOS; no image
 * buffers are allocated).
 * `format`, `width`, `height` may be NULL. Returns 0 or a GDH_IMAGE_E* code.
 */
int gdh_image_probe(const uint8_t *data, size_t len, int *format,
                    uint32_t *width, uint32_t *height, char *err, size_t errlen);

/*
 * Decodes a PNG or JPEG to 8-bit RGB, row-major, 3 bytes per pixel, no row
 * padding, into `out` (which must hold width * height * 3 bytes).
 * Alpha (including palette/grey/RGB tRNS) is composited over white:
 *   v = (c * a + 255 * (255 - a) + 127) / 255   (integer division)
 * 16-bit PNG samples keep their high byte. CMYK/YCCK JPEGs (Adobe-inverted or
 * not) are converted with r = (255 - c) * (255 - k) / 255 (rounded).
 * Refuses width * height > max_pixels before any image-sized allocation
 * (GDH_IMAGE_ETOOLARGE). `width`, `height` may be NULL.
 */
int gdh_image_decode_rgb8(const uint8_t *data, size_t len, uint64_t max_pixels,
                          uint8_t *out, size_t out_len,
                          uint32_t *width, uint32_t *height,
                          char *err, size_t errlen);

/*
 * The largest JPEG reduction, 1/d for d in 8, 4, 2, 1, that keeps a width x height
 * image at least min_width x min_height (reduced sizes round up, as libjpeg's).
 */
unsigned gdh_jpeg_reduction(uint32_t width, uint32_t height, uint32_t min_width, uint32_t min_height);

/*
 * gdh_image_decode_rgb8, except that a JPEG is decoded reduced by
 * gdh_jpeg_reduction(width, height, min_width, min_height) in libjpeg's DCT
 * domain (much faster for photos far larger than needed): `out` must hold the
 * reduced size, which *width and *height report. PNGs decode at full size.
 * max_pixels applies to the full (header) size.
 */
int gdh_image_decode_rgb8_reduced(const uint8_t *data, size_t len, uint64_t max_pixels,
                                  uint32_t min_width, uint32_t min_height,
                                  uint8_t *out, size_t out_len,
                                  uint32_t *width, uint32_t *height,
                                  char *err, size_t errlen);

/*
 * Encodes 8-bit RGB (row-major, width * height * 3 bytes) as a non-interlaced
 * PNG. On success *out is a malloc'ed buffer of *out_len bytes that the caller
 * releases with gdh_image_free.
 */
int gdh_png_encode_rgb8(const uint8_t *rgb, uint32_t width, uint32_t height,
                        uint8_t **out, size_t *out_len, char *err, size_t errlen);

void gdh_image_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* GDH_IMAGE_CODECS_H */
