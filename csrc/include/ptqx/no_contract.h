// A value the compiler must treat as opaque, so a rounded product is not contracted into
// an FMA with the add or subtract that follows. GCC contracts a*b+c even in ISO C++ mode
// (intrinsics included), and one rounding instead of two can move a result by an ulp:
// enough to rank a grid candidate differently from the reference, or to put AdaRound's
// h on the other side of a clamp. Host code only (device code uses __fmul_rn).
#pragma once

namespace ptqx {

template <typename V>
inline V no_contract(V v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(v));
#endif
  return v;
}

}  // namespace ptqx
