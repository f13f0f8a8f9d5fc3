// libFuzzer harness for the request encoders. No key, value or number may
// make a request read as anything but the one command it is: the fuzzer picks
// a prefix, a key, a value and every number; the harness encodes every kind of
// request with every combination of its options into one RequestBatch, then
// reads the bytes back as memcached 1.6.18 would and checks
//   - one line per request, ending in \r\n, with no other \r or \n in it, at
//     most 2048 bytes and 24 tokens, tokens separated by single spaces, no
//     flag given twice;
//   - the key token is exactly the WireKey text, and the tokens are exactly
//     those the grammar in meta_protocol.h gives for the request;
//   - after ms, exactly the announced number of bytes (the value) and \r\n;
//   - as many commands as batch.size(), then the end marker
//     (`mg tiercache:end-of-batch O<n>`) when asked for, and nothing after.
// It also checks EncodeKey and EncodeTtl against oracles written from their
// contracts.
//
// Input (missing bytes read as 0):
//   byte 0       bits 0-2: gets, sets, deletes are quiet; bit 3: end with the
//                end marker
//   byte 1       prefix length, then the prefix
//   next byte    key length, then the key
//   then 8 bytes each, little-endian: TTL in milliseconds (EncodeTtl; its
//   refusals are sent raw, to frame any number), CAS, delta, initial value,
//   first opaque token; 4 bytes: client flags
//   the rest     the value

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "fuzz_support.h"
#include "protocol/meta_protocol.h"

namespace tiercache::mirror_internal {
namespace {

// memcached 1.6.18 reads a request line into a 2048-byte buffer and splits
// it into at most 24 tokens (MAX_TOKENS).
constexpr size_t kMaxRequestLine = 2048;
constexpr size_t kMaxTokens = 24;
constexpr int64_t kNowSeconds = 1700000000;

[[noreturn]] void Fail(std::string_view what) { fuzz::FailIn("request_encoding_fuzzer", what); }

using fuzz::Escaped;
using fuzz::Input;

bool IsPlainKeyByte(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte >= 0x21 && byte <= 0x7e;
}

// EncodeKey's contract: `prefix + key` as it is if every byte is printable
// ASCII, else its base64 with `b`; refused when the key is empty or the wire
// form exceeds 250 bytes.
void CheckEncodeKey(std::string_view prefix, std::string_view key,
                    const absl::StatusOr<WireKey>& wire) {
  const std::string raw = std::string(prefix) + std::string(key);
  bool plain = true;
  for (const char c : raw) plain = plain && IsPlainKeyByte(c);
  const size_t wire_size = plain ? raw.size() : (raw.size() + 2) / 3 * 4;
  const bool fits = !key.empty() && wire_size <= kMaxWireKey;
  if (wire.ok() != fits) {
    Fail(absl::StrCat("EncodeKey(\"", Escaped(prefix), "\", \"", Escaped(key), "\") ",
                      wire.ok() ? "accepted" : wire.status().ToString()));
  }
  if (!wire.ok()) {
    if (wire.status().code() != absl::StatusCode::kInvalidArgument) Fail("not InvalidArgument");
    return;
  }
  const std::string expected = plain ? raw : absl::Base64Escape(raw);
  if (wire->text != expected || wire->base64 == plain) {
    Fail(absl::StrCat("EncodeKey(\"", Escaped(raw), "\") gave \"", Escaped(wire->text),
                      "\" base64 ", wire->base64));
  }
}

// EncodeTtl's contract for a positive finite TTL: whole seconds rounded up,
// absolute past 30 days, refused past 2038-01-19T03:14:07Z.
void CheckEncodeTtl(int64_t milliseconds, const absl::StatusOr<int64_t>& token) {
  std::optional<int64_t> expected;
  if (milliseconds > 0) {
    const int64_t seconds = (milliseconds - 1) / 1000 + 1;
    const int64_t wire = seconds <= kMaxRelativeTtlSeconds ? seconds : kNowSeconds + seconds;
    if (wire <= std::numeric_limits<int32_t>::max()) expected = wire;
  }
  const bool same = token.ok() ? expected == *token : !expected.has_value();
  if (!same) {
    Fail(absl::StrCat("EncodeTtl(", milliseconds, "ms) gave ",
                      token.ok() ? absl::StrCat(*token) : token.status().ToString(), ", expected ",
                      expected.has_value() ? absl::StrCat(*expected) : "refusal"));
  }
}

// One request as memcached must read it.
struct Expected {
  std::vector<std::string> tokens;
  std::optional<std::string_view> data;  // ms: the block after the line
};

class Grammar {
 public:
  Grammar(const WireKey& key, uint64_t first_opaque) : key_(key), first_opaque_(first_opaque) {}

  Expected Get(const GetRequest& get, bool quiet) {
    Expected e = Start("mg");
    if (get.value) e.tokens.push_back("v");
    for (const char* flag : {"f", "c", "t", "k"}) e.tokens.push_back(flag);
    if (get.vivify_ttl) e.tokens.push_back(absl::StrCat("N", *get.vivify_ttl));
    if (get.recache_ttl) e.tokens.push_back(absl::StrCat("R", *get.recache_ttl));
    if (get.touch_ttl) e.tokens.push_back(absl::StrCat("T", *get.touch_ttl));
    return End(std::move(e), quiet);
  }

  Expected Set(const SetRequest& set, bool quiet) {
    Expected e;
    e.tokens = {"ms", key_.text, absl::StrCat(set.value.size())};
    if (key_.base64) e.tokens.push_back("b");
    // memcached's defaults (flags 0, TTL 0, mode S) are left out; a quiet
    // store asks for no CAS.
    if (set.client_flags != 0) e.tokens.push_back(absl::StrCat("F", set.client_flags));
    if (set.ttl != 0) e.tokens.push_back(absl::StrCat("T", set.ttl));
    if (set.mode != StoreMode::kSet) {
      e.tokens.push_back(std::string("M") + static_cast<char>(set.mode));
    }
    if (set.compare_cas) e.tokens.push_back(absl::StrCat("C", *set.compare_cas));
    if (set.invalidate) e.tokens.push_back("I");
    if (!quiet) e.tokens.push_back("c");
    e.data = set.value;
    return End(std::move(e), quiet);
  }

  Expected Delete(const DeleteRequest& del, bool quiet) {
    Expected e = Start("md");
    if (del.compare_cas) e.tokens.push_back(absl::StrCat("C", *del.compare_cas));
    if (del.invalidate_ttl) {
      e.tokens.push_back("I");
      e.tokens.push_back(absl::StrCat("T", *del.invalidate_ttl));
    }
    return End(std::move(e), quiet);
  }

  Expected Arithmetic(const ArithmeticRequest& arithmetic) {
    Expected e = Start("ma");
    e.tokens.push_back("v");
    e.tokens.push_back("k");
    e.tokens.push_back(arithmetic.increment ? "MI" : "MD");
    e.tokens.push_back(absl::StrCat("D", arithmetic.delta));
    if (arithmetic.create_ttl) {
      e.tokens.push_back(absl::StrCat("N", *arithmetic.create_ttl));
      e.tokens.push_back(absl::StrCat("J", arithmetic.initial));
    }
    return End(std::move(e), /*quiet=*/false);
  }

 private:
  Expected Start(std::string command) const {
    Expected e;
    e.tokens = {std::move(command), key_.text};
    if (key_.base64) e.tokens.push_back("b");
    return e;
  }
  Expected End(Expected e, bool quiet) {
    e.tokens.push_back(absl::StrCat("O", first_opaque_ + count_++));
    if (quiet) e.tokens.push_back("q");
    return e;
  }

  const WireKey& key_;
  uint64_t first_opaque_;
  uint64_t count_ = 0;
};

// An optional '-', then digits without a leading zero.
bool IsCanonicalNumber(std::string_view text) {
  if (!text.empty() && text.front() == '-') text.remove_prefix(1);
  if (text.empty() || (text.front() == '0' && text.size() > 1)) return false;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Takes one request line off the front of `stream` as memcached reads it and
// returns its tokens.
std::vector<std::string> ReadLine(std::string_view& stream, size_t n) {
  const size_t newline = stream.find('\n');
  if (newline == std::string_view::npos) {
    Fail(absl::StrCat("command ", n, " has no \\n: \"", Escaped(stream.substr(0, 80)), "\""));
  }
  const std::string_view line = stream.substr(0, newline + 1);
  stream.remove_prefix(line.size());
  const auto where = [&] { return absl::StrCat(" in command ", n, ": \"", Escaped(line), "\""); };
  if (line.size() > kMaxRequestLine) Fail(absl::StrCat(line.size(), " bytes", where()));
  if (line.size() < 3 || line[line.size() - 2] != '\r') Fail(absl::StrCat("no \\r\\n", where()));
  const std::string_view text = line.substr(0, line.size() - 2);
  if (text.find('\r') != std::string_view::npos) Fail(absl::StrCat("a stray \\r", where()));
  std::vector<std::string> tokens;
  size_t start = 0;
  while (true) {
    const size_t space = text.find(' ', start);
    const std::string_view token = text.substr(start, space - start);
    if (token.empty()) Fail(absl::StrCat("an empty token", where()));
    tokens.emplace_back(token);
    if (space == std::string_view::npos) break;
    start = space + 1;
  }
  if (tokens.size() > kMaxTokens) Fail(absl::StrCat(tokens.size(), " tokens", where()));
  return tokens;
}

// The flags of a meta command: one letter each, given once, with an optional
// number.
void CheckFlags(const std::vector<std::string>& tokens, size_t first, size_t n) {
  bool seen[128] = {};
  for (size_t i = first; i < tokens.size(); ++i) {
    const std::string_view token = tokens[i];
    const auto letter = static_cast<unsigned char>(token.front());
    if (letter >= 128 || !((letter >= 'a' && letter <= 'z') || (letter >= 'A' && letter <= 'Z'))) {
      Fail(absl::StrCat("flag \"", Escaped(token), "\" in command ", n));
    }
    if (seen[letter])
      Fail(absl::StrCat("flag ", std::string(token.substr(0, 1)), " twice in command ", n));
    seen[letter] = true;
    // M takes a mode letter, every other flag a number or nothing.
    const std::string_view argument = token.substr(1);
    const bool valid =
        letter == 'M' ? argument.size() == 1 : argument.empty() || IsCanonicalNumber(argument);
    if (!valid) Fail(absl::StrCat("flag \"", Escaped(token), "\" in command ", n));
  }
}

void CheckBytes(std::string_view stream, const WireKey& key, const std::vector<Expected>& requests,
                std::optional<uint64_t> marker_opaque) {
  size_t n = 0;
  for (const Expected& expected : requests) {
    const std::vector<std::string> tokens = ReadLine(stream, n);
    if (tokens.size() < 2 || tokens[1] != key.text) {
      Fail(absl::StrCat("command ", n, " does not have the key as its second token"));
    }
    const bool store = tokens[0] == "ms";
    if (store && (tokens.size() < 3 || !expected.data.has_value() ||
                  tokens[2] != absl::StrCat(expected.data->size()))) {
      Fail(absl::StrCat("ms ", n, " does not announce the value's size"));
    }
    CheckFlags(tokens, store ? 3 : 2, n);
    if (tokens != expected.tokens) {
      Fail(absl::StrCat("command ", n, " is \"", Escaped(absl::StrJoin(tokens, " ")),
                        "\", the grammar gives \"", Escaped(absl::StrJoin(expected.tokens, " ")),
                        "\""));
    }
    if (expected.data.has_value()) {
      const std::string_view data = *expected.data;
      if (stream.substr(0, data.size()) != data || stream.substr(data.size(), 2) != "\r\n") {
        Fail(absl::StrCat("the data block of command ", n, " is not the value and \\r\\n"));
      }
      stream.remove_prefix(data.size() + 2);
    }
    ++n;
  }
  if (marker_opaque.has_value()) {
    const std::vector<std::string> tokens = ReadLine(stream, n);
    const std::vector<std::string> marker = {"mg", std::string(RequestBatch::kEndMarkerKey),
                                             absl::StrCat("O", *marker_opaque)};
    if (tokens != marker) {
      Fail(absl::StrCat("the batch ends in \"", Escaped(absl::StrJoin(tokens, " ")),
                        "\", not the end marker"));
    }
  }
  if (!stream.empty()) {
    Fail(absl::StrCat(stream.size(), " bytes after the last command: \"",
                      Escaped(stream.substr(0, 80)), "\""));
  }
}

void FuzzOneInput(std::string_view bytes) {
  Input input(bytes);
  const uint8_t options = input.Byte();
  const bool quiet_get = (options & 1) != 0;
  const bool quiet_set = (options & 2) != 0;
  const bool quiet_delete = (options & 4) != 0;
  const bool end_with_marker = (options & 8) != 0;
  const std::string_view prefix = input.Bytes(input.Byte());
  const std::string_view key = input.Bytes(input.Byte());
  const auto ttl_milliseconds = static_cast<int64_t>(input.Little(8));
  const uint64_t cas = input.Little(8);
  const uint64_t delta = input.Little(8);
  const uint64_t initial = input.Little(8);
  const uint64_t first_opaque = input.Little(8);
  const auto client_flags = static_cast<uint32_t>(input.Little(4));
  const std::string_view value = input.rest();

  const absl::StatusOr<int64_t> encoded_ttl =
      EncodeTtl(absl::Milliseconds(ttl_milliseconds), absl::FromUnixSeconds(kNowSeconds));
  CheckEncodeTtl(ttl_milliseconds, encoded_ttl);
  const int64_t ttl = encoded_ttl.ok() ? *encoded_ttl : ttl_milliseconds;

  const absl::StatusOr<WireKey> wire = EncodeKey(prefix, key);
  CheckEncodeKey(prefix, key, wire);
  if (!wire.ok()) return;

  RequestBatch batch(first_opaque);
  Grammar grammar(*wire, first_opaque);
  std::vector<Expected> expected;
  for (int options_mask = 0; options_mask < 16; ++options_mask) {
    GetRequest get;
    get.value = (options_mask & 1) != 0;
    if ((options_mask & 2) != 0) get.vivify_ttl = ttl;
    if ((options_mask & 4) != 0) get.recache_ttl = ttl;
    if ((options_mask & 8) != 0) get.touch_ttl = ttl;
    batch.Get(*wire, get, quiet_get);
    expected.push_back(grammar.Get(get, quiet_get));
  }
  for (const StoreMode mode : {StoreMode::kSet, StoreMode::kAdd, StoreMode::kReplace,
                               StoreMode::kAppend, StoreMode::kPrepend}) {
    for (int options_mask = 0; options_mask < 4; ++options_mask) {
      SetRequest set;
      set.value = value;
      set.client_flags = client_flags;
      set.ttl = ttl;
      set.mode = mode;
      if ((options_mask & 1) != 0) set.compare_cas = cas;
      set.invalidate = (options_mask & 2) != 0;
      batch.Set(*wire, set, quiet_set);
      expected.push_back(grammar.Set(set, quiet_set));
    }
  }
  for (int options_mask = 0; options_mask < 4; ++options_mask) {
    DeleteRequest del;
    if ((options_mask & 1) != 0) del.compare_cas = cas;
    if ((options_mask & 2) != 0) del.invalidate_ttl = ttl;
    batch.Delete(*wire, del, quiet_delete);
    expected.push_back(grammar.Delete(del, quiet_delete));
  }
  for (int options_mask = 0; options_mask < 4; ++options_mask) {
    ArithmeticRequest arithmetic;
    arithmetic.increment = (options_mask & 1) != 0;
    arithmetic.delta = delta;
    if ((options_mask & 2) != 0) arithmetic.create_ttl = ttl;
    arithmetic.initial = initial;
    batch.Arithmetic(*wire, arithmetic);
    expected.push_back(grammar.Arithmetic(arithmetic));
  }
  if (end_with_marker) batch.EndWithMarker();

  if (batch.size() != expected.size()) Fail("batch.size() is not the number of requests added");
  std::optional<uint64_t> marker_opaque;
  if (end_with_marker) marker_opaque = first_opaque + expected.size();
  CheckBytes(batch.bytes(), *wire, expected, marker_opaque);
  for (size_t i = 0; i < batch.size() + (end_with_marker ? 1 : 0); ++i) {
    if (batch.Describe(i).empty()) Fail("an empty Describe()");
  }
}

}  // namespace
}  // namespace tiercache::mirror_internal

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tiercache::mirror_internal::FuzzOneInput(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
