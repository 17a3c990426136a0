/* Scalar conversions shared by the file formats: IEEE half (f16) and bfloat16 to and from
 * f32, and unaligned little-endian loads. Checkpoint files put tensors at arbitrary byte
 * offsets, so every read goes through memcpy rather than a cast pointer. */
#ifndef MT_FORMATS_DTYPE_H
#define MT_FORMATS_DTYPE_H
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "memtune's file formats are little-endian; a big-endian port needs byte swapping here"
#endif

static inline uint16_t mt_load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t mt_load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t mt_load_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline float mt_load_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

static inline float mt_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t mt_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* bfloat16 is the top half of an f32, so widening is exact. */
static inline float mt_bf16_to_f32(uint16_t h) { return mt_bits_to_f32((uint32_t)h << 16); }

/* Round to nearest even; NaNs stay NaN (a quiet bit is forced so truncation cannot make
 * them infinities). */
static inline uint16_t mt_f32_to_bf16(float f) {
    uint32_t u = mt_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float mt_f16_to_f32(uint16_t h);
uint16_t mt_f32_to_f16(float f);

#endif
