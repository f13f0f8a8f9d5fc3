// libFuzzer harness for ResponseParser. A response may be split anywhere on
// the wire, so how the stream arrives must not change what is read: the same
// bytes fed whole, in pieces of 1..64 bytes and one byte at a time must give
// the same responses and end the same way (the same error, or waiting for
// more with the same bytes buffered). On top of that: an error is sticky, no
// value exceeds max_value_size, every response obeys what the header promises
// of a well-formed one, and Reset() gives back a fresh parser.
//
// Input: the first 8 bytes seed the piece sizes; the rest is the stream.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "fuzz_support.h"
#include "protocol/meta_protocol.h"

namespace tiercache::mirror_internal {
namespace {

// Small, so that inputs of a few kilobytes reach the limit from both sides.
constexpr size_t kMaxValueSize = 4096;
constexpr size_t kSeedBytes = 8;
constexpr size_t kMaxPiece = 64;

[[noreturn]] void Fail(std::string_view what) { fuzz::FailIn("response_parser_fuzzer", what); }

using fuzz::Escaped;

// splitmix64: a deterministic stream of piece sizes from the input's seed.
class PieceSizes {
 public:
  explicit PieceSizes(uint64_t seed) : state_(seed) {}
  size_t Next() {
    state_ += 0x9e3779b97f4a7c15;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    z ^= z >> 31;
    return 1 + static_cast<size_t>(z % kMaxPiece);
  }

 private:
  uint64_t state_;
};

// What meta_protocol.h promises of any response the parser returns.
void CheckWellFormed(const Response& r) {
  using Code = Response::Code;
  if (r.value.size() > kMaxValueSize) {
    Fail(absl::StrCat("a ", r.value.size(), "-byte value passed the ", kMaxValueSize,
                      "-byte limit"));
  }
  if (r.code != Code::kValue && r.code != Code::kClassicValue && !r.value.empty()) {
    Fail("a value on a response that is not VA or VALUE");
  }
  if (r.code == Code::kClassicValue && (r.key.empty() || !r.client_flags.has_value())) {
    Fail("a VALUE without its key or flags");
  }
  if (!IsErrorLine(r.code) && !r.message.empty())
    Fail("a message on a response that is not an error");
  if (r.message.find('\n') != std::string::npos) Fail("a message holding \\n");
  const bool any_flag = r.client_flags.has_value() || r.cas.has_value() || r.ttl.has_value() ||
                        r.opaque.has_value() || !r.key.empty() || r.key_base64 || r.won ||
                        r.stale || r.lost;
  if ((IsErrorLine(r.code) || r.code == Code::kNoop || r.code == Code::kEnd ||
       r.code == Code::kOk) &&
      any_flag) {
    Fail("return flags on an error line, MN, END or OK");
  }
  if (r.code == Code::kMiss && (r.client_flags.has_value() || r.cas.has_value() ||
                                r.ttl.has_value() || r.won || r.stale || r.lost)) {
    Fail("an EN with flags only a hit can carry");
  }
  if (r.key.size() > kMaxWireKey) Fail(absl::StrCat("a ", r.key.size(), "-byte key echo"));
  // A token of a line: no space or \n. Any other byte may be in a key another
  // client stored, and memcached echoes it as stored.
  if (r.key.find_first_of(" \n") != std::string::npos) {
    Fail(absl::StrCat("a key echo holding a space or \\n: ", Escaped(r.key)));
  }

  if (r.key_base64 && r.key.empty()) Fail("b without k");
  if (r.ttl.has_value() && *r.ttl < -1) Fail(absl::StrCat("ttl ", *r.ttl, " below -1"));
  if (r.request != Response::kUntagged) Fail("the parser set Response::request");
}

// What one way of feeding the stream read from it.
struct Outcome {
  std::vector<Response> responses;
  absl::Status error;   // OK: the stream ended with the parser waiting for more
  size_t buffered = 0;  // parser.buffered() at the end, when error is OK
};

// Takes every complete response; false once the parser has failed.
bool Drain(ResponseParser& parser, Outcome& outcome) {
  while (true) {
    absl::StatusOr<std::optional<Response>> next = parser.Next();
    if (!next.ok()) {
      if (next.status().code() != absl::StatusCode::kDataLoss) {
        Fail(absl::StrCat("an error that is not DataLoss: ", next.status().ToString()));
      }
      outcome.error = next.status();
      return false;
    }
    if (!next->has_value()) return true;
    CheckWellFormed(**next);
    outcome.responses.push_back(std::move(**next));
  }
}

// Feeds `stream` in pieces of next_piece() bytes, taking every complete
// response after each piece, and stops at the first error as a connection
// would.
template <typename NextPiece>
Outcome Parse(ResponseParser& parser, std::string_view stream, NextPiece next_piece) {
  Outcome outcome;
  while (!stream.empty()) {
    const size_t piece = std::min(next_piece(), stream.size());
    parser.Feed(stream.substr(0, piece));
    stream.remove_prefix(piece);
    if (!Drain(parser, outcome)) return outcome;
  }
  if (Drain(parser, outcome)) outcome.buffered = parser.buffered();
  return outcome;
}

// A description of how `a` and `b` differ, empty if they do not.
std::string Difference(const Response& a, const Response& b) {
  const auto differs = [](const char* field, const auto& x, const auto& y) {
    return x == y ? std::string() : absl::StrCat(field, " differs; ");
  };
  return absl::StrCat(
      differs("code", static_cast<int>(a.code), static_cast<int>(b.code)),
      a.value == b.value
          ? ""
          : absl::StrCat("value \"", Escaped(a.value), "\" vs \"", Escaped(b.value), "\"; "),
      differs("message", a.message, b.message),
      differs("client_flags", a.client_flags, b.client_flags), differs("cas", a.cas, b.cas),
      differs("ttl", a.ttl, b.ttl), differs("opaque", a.opaque, b.opaque),
      differs("key", a.key, b.key), differs("key_base64", a.key_base64, b.key_base64),
      differs("won", a.won, b.won), differs("stale", a.stale, b.stale),
      differs("lost", a.lost, b.lost), differs("request", a.request, b.request));
}

void CheckSame(const char* name, const Outcome& expected, const Outcome& actual) {
  if (actual.responses.size() != expected.responses.size()) {
    Fail(absl::StrCat(name, ": ", actual.responses.size(),
                      " responses, whole: ", expected.responses.size()));
  }
  for (size_t i = 0; i < expected.responses.size(); ++i) {
    const std::string difference = Difference(expected.responses[i], actual.responses[i]);
    if (!difference.empty()) Fail(absl::StrCat(name, ": response ", i, ": ", difference));
  }
  if (actual.error != expected.error) {
    Fail(absl::StrCat(name, " ends in ", actual.error.ToString(), ", whole in ",
                      expected.error.ToString()));
  }
  if (actual.buffered != expected.buffered) {
    Fail(absl::StrCat(name, " ends with ", actual.buffered, " bytes buffered, whole with ",
                      expected.buffered));
  }
}

// A failed parser stays failed, whatever arrives after.
void CheckSticky(ResponseParser& parser, const absl::Status& error, std::string_view more) {
  for (const std::string_view bytes : {std::string_view("HD\r\n"), more}) {
    parser.Feed(bytes);
    absl::StatusOr<std::optional<Response>> next = parser.Next();
    if (next.status() != error) {
      Fail(absl::StrCat("after ", error.ToString(), " and more bytes, Next() gave ",
                        next.ok() ? "a response or nullopt" : next.status().ToString()));
    }
  }
}

void FuzzOneInput(std::string_view input) {
  const std::string_view seed_bytes = input.substr(0, kSeedBytes);
  uint64_t seed = 0;
  for (size_t i = 0; i < seed_bytes.size(); ++i) {
    seed |= uint64_t{static_cast<unsigned char>(seed_bytes[i])} << (8 * i);
  }
  const std::string_view stream = input.substr(seed_bytes.size());

  ResponseParser whole_parser(kMaxValueSize);
  const Outcome whole = Parse(whole_parser, stream, [&] { return stream.size(); });

  ResponseParser pieces_parser(kMaxValueSize);
  PieceSizes sizes(seed);
  const Outcome pieces = Parse(pieces_parser, stream, [&] { return sizes.Next(); });
  CheckSame("in pieces", whole, pieces);

  ResponseParser bytes_parser(kMaxValueSize);
  const Outcome bytes = Parse(bytes_parser, stream, [] { return size_t{1}; });
  CheckSame("byte by byte", whole, bytes);

  if (!whole.error.ok()) {
    CheckSticky(whole_parser, whole.error, stream);
    CheckSticky(pieces_parser, whole.error, stream.substr(stream.size() / 2));
  }

  whole_parser.Reset();
  if (whole_parser.buffered() != 0) Fail("bytes buffered after Reset()");
  CheckSame("after Reset()", whole, Parse(whole_parser, stream, [&] { return stream.size(); }));
}

}  // namespace
}  // namespace tiercache::mirror_internal

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tiercache::mirror_internal::FuzzOneInput(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
