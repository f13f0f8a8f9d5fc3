// A tiny assertion for the tutorial programs: they run as tests, so each one
// checks that what the tutorial says happens really happens.

#ifndef TIERCACHE_EXAMPLES_TUTORIAL_CHECK_H_
#define TIERCACHE_EXAMPLES_TUTORIAL_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define TUTORIAL_CHECK(condition)                                                   \
  do {                                                                              \
    if (!(condition)) {                                                             \
      std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #condition); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (false)

#endif  // TIERCACHE_EXAMPLES_TUTORIAL_CHECK_H_
