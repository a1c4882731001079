// CHECK for the C++ unit tests: unlike assert() it survives Release builds (NDEBUG).
// Usable only inside main()/functions returning int: a failed check returns 1.
#pragma once

#include <cstdio>

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                                     \
    }                                                                               \
  } while (0)
