// Assertions at state transitions: TIERCACHE_ASSERT(condition, message).
//
// Active where bugs are hunted — the test build and the sanitizer builds
// (CMake option TIERCACHE_ASSERTS, on by default for any build with tests
// that is not Release) — and compiled out elsewhere, so a release build pays
// nothing. A failed assertion prints the file, line, condition and message
// and aborts: a broken invariant is a bug in tiercache, never bad input
// (bad input is an absl::Status).
//
// Debian's abseil (20220623) has no absl/log, hence this header.

#ifndef TIERCACHE_COMMON_CHECK_H_
#define TIERCACHE_COMMON_CHECK_H_

#include <cstdio>
#include <cstdlib>

#ifdef TIERCACHE_ASSERTS
#define TIERCACHE_ASSERT(condition, message)                                                  \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: tiercache assertion failed: %s: %s\n", __FILE__, __LINE__, \
                   #condition, message);                                                      \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)
#else
#define TIERCACHE_ASSERT(condition, message)   \
  do {                                         \
    if (false && (condition)) (void)(message); \
  } while (false)
#endif

#endif  // TIERCACHE_COMMON_CHECK_H_
