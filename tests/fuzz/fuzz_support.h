// What the libFuzzer harnesses share: reading the fuzzer's bytes as a stream
// of choices, escaping bytes for a report, and stopping on a violated
// property (libFuzzer then saves the input; see docs/fuzzing.md).

#ifndef TIERCACHE_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define TIERCACHE_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "absl/strings/escaping.h"

namespace tiercache::fuzz {

// Prints which property `harness` found violated, and traps.
[[noreturn]] inline void FailIn(const char* harness, std::string_view what) {
  std::fprintf(stderr, "%s: %.*s\n", harness, static_cast<int>(what.size()), what.data());
  __builtin_trap();
}

inline std::string Escaped(std::string_view bytes) {
  return absl::CEscape(absl::string_view(bytes.data(), bytes.size()));
}

// Reads the input front to back; past its end every byte is 0.
class Input {
 public:
  explicit Input(std::string_view bytes) : rest_(bytes) {}
  uint8_t Byte() {
    if (rest_.empty()) return 0;
    const auto byte = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return byte;
  }
  std::string_view Bytes(size_t n) {
    const std::string_view bytes = rest_.substr(0, n);
    rest_.remove_prefix(bytes.size());
    return bytes;
  }
  // The next n bytes as a little-endian number.
  uint64_t Little(size_t n) {
    uint64_t value = 0;
    for (size_t i = 0; i < n; ++i) value |= uint64_t{Byte()} << (8 * i);
    return value;
  }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
};

}  // namespace tiercache::fuzz

#endif  // TIERCACHE_TESTS_FUZZ_FUZZ_SUPPORT_H_
