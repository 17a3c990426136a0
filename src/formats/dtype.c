/* IEEE 754 binary16 conversions, written out bit by bit so that every input (subnormals,
 * infinities, NaNs) converts the same on every compiler, with or without F16C. */
#include "formats/dtype.h"

float mt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return mt_bits_to_f32(sign | 0x7f800000u | (mant << 13)); /* inf, NaN */
    if (exp != 0) return mt_bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return mt_bits_to_f32(sign); /* signed zero */
    /* Subnormal: value is mant * 2^-24, exactly representable as a normal f32. */
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
}

uint16_t mt_f32_to_f16(float f) {
    uint32_t u = mt_f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00; /* NaN */
    if (abs >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: infinity */
    if (abs < 0x38800000u) {
        /* Result is subnormal (or zero): scale to units of 2^-24 and round to nearest even. */
        if (abs < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint32_t exp = abs >> 23, mant = (abs & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - exp; /* mant * 2^(exp-150) / 2^-24 = mant >> (126 - exp) */
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    /* Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even. */
    uint32_t r = abs - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1);
    return sign | (uint16_t)(r >> 13);
}
