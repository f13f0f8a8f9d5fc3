#include "protocol/meta_protocol.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <system_error>

#include "absl/container/inlined_vector.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "validate.h"

namespace tiercache::mirror_internal {
namespace {

// Debian's abseil has its own string_view; convert explicitly at its calls.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---------------------------------------------------------------------------
// Requests

// memcached splits request lines on spaces and ends them at \n; 0x21..0x7e is
// the range that can do neither and that classic clients also accept.
bool IsPlainKeyByte(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte >= 0x21 && byte <= 0x7e;
}

size_t Base64Size(size_t raw_size) { return (raw_size + 2) / 3 * 4; }

template <typename Int>
void AppendNumber(Int n, std::string* out) {
  char digits[24];  // enough for any 64-bit integer with its sign
  const auto result = std::to_chars(digits, digits + sizeof(digits), n);
  out->append(digits, result.ptr);
}

void AppendFlag(char flag, std::string* out) {
  out->push_back(' ');
  out->push_back(flag);
}

template <typename Int>
void AppendFlag(char flag, Int token, std::string* out) {
  AppendFlag(flag, out);
  AppendNumber(token, out);
}

// "<command> <key>"; callers add the `b` flag where their line puts it.
void AppendCommandAndKey(std::string_view command, const WireKey& key, std::string* out) {
  out->append(command);
  out->push_back(' ');
  out->append(key.text);
}

void AppendBase64Flag(const WireKey& key, std::string* out) {
  if (key.base64) AppendFlag('b', out);
}

// The flags every request may end with, then the end of the line.
void AppendTagAndEnd(const RequestTag& tag, std::string* out) {
  AppendFlag('O', tag.opaque, out);
  if (tag.quiet) AppendFlag('q', out);
  out->append("\r\n");
}

// ---------------------------------------------------------------------------
// Responses

// memcached's own lines are short (a key, a few numbers); a longer one means
// the stream is not what we think it is, and waiting for its end could buffer
// without bound.
constexpr size_t kMaxLineBytes = 8192;
// How much of a malformed input an error message quotes.
constexpr size_t kQuoteBytes = 40;

std::string Quote(std::string_view bytes) {
  const bool truncated = bytes.size() > kQuoteBytes;
  return absl::StrCat("\"", absl::CEscape(AsAbsl(bytes.substr(0, kQuoteBytes))),
                      truncated ? "...\"" : "\"");
}

absl::Status Malformed(std::string_view problem, std::string_view bytes) {
  return absl::DataLossError(
      absl::StrCat("malformed memcached response: ", AsAbsl(problem), ": ", Quote(bytes)));
}

// Digits only (and a leading '-' for signed types), without leading zeros:
// no spaces, no '+', no overflow, no second spelling of a number. memcached
// writes numbers exactly this way (and echoes our tokens, which we write so).
template <typename Int>
std::optional<Int> ParseNumber(std::string_view text) {
  const std::string_view digits = !text.empty() && text[0] == '-' ? text.substr(1) : text;
  if (digits.empty() || (digits[0] == '0' && text.size() > 1)) return std::nullopt;
  Int value{};
  const char* end = text.data() + text.size();
  const auto result = std::from_chars(text.data(), end, value);
  if (result.ec != std::errc() || result.ptr != end) return std::nullopt;
  return value;
}

// A meta response line has at most a code, a length and a handful of flags:
// no allocation for the split.
using Tokens = absl::InlinedVector<std::string_view, 12>;

Tokens SplitOnSpaces(std::string_view line) {
  Tokens tokens;
  while (!line.empty()) {
    const size_t space = line.find(' ');
    if (space != 0) tokens.push_back(line.substr(0, space));
    if (space == std::string_view::npos) break;
    line.remove_prefix(space + 1);
  }
  return tokens;
}

// The first line of `pending` without its \r\n; nullopt until its \n arrives.
// Only the first kMaxLineBytes + 2 bytes are searched: past that the line is
// too long whatever follows, so the verdict does not depend on how the bytes
// were split.
absl::StatusOr<std::optional<std::string_view>> FirstLine(std::string_view pending) {
  const std::string_view window = pending.substr(0, kMaxLineBytes + 2);
  const size_t newline = window.find('\n');
  if (newline == std::string_view::npos) {
    if (window.size() < kMaxLineBytes + 2) return std::nullopt;
    return Malformed(absl::StrCat("a line longer than ", kMaxLineBytes, " bytes"), window);
  }
  if (newline == 0 || window[newline - 1] != '\r') {
    return Malformed("a line ending in \\n without \\r", window.substr(0, newline + 1));
  }
  return window.substr(0, newline - 1);
}

// The return flags memcached 1.6.18 can send, one bit each, to find repeats:
// a table indexed by the flag's byte, since this runs for every flag of every
// response (a string search here cost GetMany 8% more instructions).
constexpr std::string_view kReturnFlags = "bcfhklOstWXZ";
constexpr std::array<int8_t, 256> kReturnFlagBits = [] {
  std::array<int8_t, 256> bits{};
  bits.fill(-1);
  for (size_t i = 0; i < kReturnFlags.size(); ++i) {
    bits[static_cast<unsigned char>(kReturnFlags[i])] = static_cast<int8_t>(i);
  }
  return bits;
}();
int ReturnFlagBit(char flag) { return kReturnFlagBits[static_cast<unsigned char>(flag)]; }
constexpr uint32_t Bit(char flag) {
  return uint32_t{1} << kReturnFlagBits[static_cast<unsigned char>(flag)];
}
// A miss carries no item: only the request's own token and key come back.
constexpr uint32_t kMissFlags = Bit('O') | Bit('k') | Bit('b');

// Return flags after the code (and VA's length): each known to memcached
// 1.6.18, given once, and well formed.
absl::Status ParseReturnFlags(const Tokens& tokens, size_t first, std::string_view line,
                              Response* response) {
  uint32_t seen = 0;
  for (size_t i = first; i < tokens.size(); ++i) {
    const std::string_view token = tokens[i];
    const std::string_view number = token.substr(1);
    const int bit = ReturnFlagBit(token[0]);
    if (bit < 0)
      return Malformed(absl::StrCat("unknown return flag ", Quote(token), " in line"), line);
    if ((seen & (uint32_t{1} << bit)) != 0) {
      return Malformed(
          absl::StrCat("return flag '", AsAbsl(token.substr(0, 1)), "' given twice in line"), line);
    }
    seen |= uint32_t{1} << bit;
    bool valid = true;
    switch (token[0]) {
      case 'f':
        response->client_flags = ParseNumber<uint32_t>(number);
        valid = response->client_flags.has_value();
        break;
      case 'c':
        response->cas = ParseNumber<uint64_t>(number);
        valid = response->cas.has_value();
        break;
      case 't':
        // -1 is "never expires"; memcached sends nothing below it.
        response->ttl = ParseNumber<int64_t>(number);
        valid = response->ttl.has_value() && *response->ttl >= -1;
        break;
      case 'O':
        response->opaque = ParseNumber<uint64_t>(number);
        valid = response->opaque.has_value();
        break;
      case 'k':
        valid = !number.empty() && number.size() <= kMaxWireKey;
        response->key.assign(number.data(), number.size());
        break;
      case 'h':  // hit before: 0 or 1
        valid = number == "0" || number == "1";
        break;
      case 'l':  // seconds since last access, item size: never requested, still checked
      case 's':
        valid = ParseNumber<uint64_t>(number).has_value();
        break;
      case 'b':
        response->key_base64 = true;
        valid = number.empty();
        break;
      case 'W':
        response->won = true;
        valid = number.empty();
        break;
      case 'X':
        response->stale = true;
        valid = number.empty();
        break;
      case 'Z':
        response->lost = true;
        valid = number.empty();
        break;
    }
    if (!valid) {
      return Malformed(absl::StrCat("bad return flag ", Quote(token), " in line"), line);
    }
  }
  if ((seen & Bit('b')) != 0 && (seen & Bit('k')) == 0) {
    return Malformed("return flag 'b' without a key (k) in line", line);
  }
  if (response->code == Response::Code::kMiss && (seen & ~kMissFlags) != 0) {
    return Malformed("a miss (EN) with flags only a hit can carry in line", line);
  }
  if (response->code == Response::Code::kNoop && seen != 0) {
    return Malformed("flags on MN in line", line);
  }
  return absl::OkStatus();
}

// One response and the bytes it took from the stream.
struct Parsed {
  Response response;
  size_t size = 0;
};

std::optional<Response::Code> MetaCode(std::string_view token) {
  using Code = Response::Code;
  if (token == "VA") return Code::kValue;
  if (token == "HD") return Code::kHit;
  if (token == "EN") return Code::kMiss;
  if (token == "NS") return Code::kNotStored;
  if (token == "EX") return Code::kExists;
  if (token == "NF") return Code::kNotFound;
  if (token == "MN") return Code::kNoop;
  return std::nullopt;
}

std::optional<Response::Code> ErrorCode(std::string_view token) {
  using Code = Response::Code;
  if (token == "ERROR") return Code::kError;
  if (token == "CLIENT_ERROR") return Code::kClientError;
  if (token == "SERVER_ERROR") return Code::kServerError;
  return std::nullopt;
}

// The data block after a value's line: `size` bytes and \r\n. nullopt until
// it has all arrived.
absl::StatusOr<std::optional<std::string_view>> DataBlock(std::string_view pending,
                                                          size_t line_size, size_t size,
                                                          std::string_view line) {
  const std::string_view block = pending.substr(line_size);
  if (block.size() < 2 || block.size() - 2 < size) return std::nullopt;
  const std::string_view terminator = block.substr(size, 2);
  if (terminator != "\r\n") {
    return absl::DataLossError(absl::StrCat("malformed memcached response: the ", size,
                                            "-byte value of line ", Quote(line), " ends in ",
                                            Quote(terminator), ", not \\r\\n"));
  }
  return block.substr(0, size);
}

// VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n (a classic gets' hit).
absl::StatusOr<std::optional<Parsed>> ParseClassicValue(const Tokens& tokens, std::string_view line,
                                                        std::string_view pending,
                                                        size_t max_value_size) {
  if (tokens.size() != 4 && tokens.size() != 5) {
    return Malformed("VALUE without key, flags and length (and at most a CAS) in line", line);
  }
  Parsed parsed;
  Response& response = parsed.response;
  response.code = Response::Code::kClassicValue;
  if (tokens[1].size() > kMaxWireKey) return Malformed("VALUE key over 250 bytes in line", line);
  response.key.assign(tokens[1].data(), tokens[1].size());
  response.client_flags = ParseNumber<uint32_t>(tokens[2]);
  if (!response.client_flags.has_value())
    return Malformed("VALUE flags not a number in line", line);
  const std::optional<uint64_t> length = ParseNumber<uint64_t>(tokens[3]);
  if (!length.has_value()) return Malformed("VALUE length not a number in line", line);
  if (*length > max_value_size) {
    return Malformed(absl::StrCat("VALUE length ", *length, " exceeds the limit of ",
                                  max_value_size, " bytes in line"),
                     line);
  }
  if (tokens.size() == 5) {
    response.cas = ParseNumber<uint64_t>(tokens[4]);
    if (!response.cas.has_value()) return Malformed("VALUE CAS not a number in line", line);
  }
  const size_t line_size = line.size() + 2;
  absl::StatusOr<std::optional<std::string_view>> data =
      DataBlock(pending, line_size, static_cast<size_t>(*length), line);
  if (!data.ok()) return data.status();
  if (!data->has_value()) return std::nullopt;
  response.value = std::string(**data);
  parsed.size = line_size + response.value.size() + 2;
  return parsed;
}

// The next response at the start of `pending`, nullopt if it is incomplete.
absl::StatusOr<std::optional<Parsed>> ParseOne(std::string_view pending, size_t max_value_size) {
  absl::StatusOr<std::optional<std::string_view>> first_line = FirstLine(pending);
  if (!first_line.ok()) return first_line.status();
  if (!first_line->has_value()) return std::nullopt;
  const std::string_view line = **first_line;
  const size_t line_size = line.size() + 2;

  Parsed parsed;
  Response& response = parsed.response;
  const Tokens tokens = SplitOnSpaces(line);
  const std::string_view code = tokens.empty() ? std::string_view() : tokens[0];

  if (std::optional<Response::Code> error = ErrorCode(code)) {
    // Error text is free-form (it may hold any bytes but \n): keep it whole.
    response.code = *error;
    const auto code_end = static_cast<size_t>(code.data() - line.data()) + code.size();
    const size_t text_start = line.find_first_not_of(' ', code_end);
    if (text_start != std::string_view::npos)
      response.message = std::string(line.substr(text_start));
    parsed.size = line_size;
    return parsed;
  }

  if (code == "END") {
    if (tokens.size() != 1) return Malformed("END with more in line", line);
    response.code = Response::Code::kEnd;
    parsed.size = line_size;
    return parsed;
  }
  if (code == "OK") {
    if (tokens.size() != 1) return Malformed("OK with more in line", line);
    response.code = Response::Code::kOk;
    parsed.size = line_size;
    return parsed;
  }
  if (code == "VALUE") return ParseClassicValue(tokens, line, pending, max_value_size);

  std::optional<Response::Code> meta = MetaCode(code);
  if (!meta.has_value()) return Malformed("unknown response code in line", line);
  response.code = *meta;
  if (response.code != Response::Code::kValue) {
    if (absl::Status status = ParseReturnFlags(tokens, 1, line, &response); !status.ok()) {
      return status;
    }
    parsed.size = line_size;
    return parsed;
  }

  // VA <length> <flags>*\r\n<data>\r\n. The length is checked before anything
  // waits for or copies that many bytes.
  std::optional<uint64_t> length =
      tokens.size() > 1 ? ParseNumber<uint64_t>(tokens[1]) : std::nullopt;
  if (!length.has_value())
    return Malformed("VA length is not a number (or has leading zeros) in line", line);
  if (*length > max_value_size) {
    return Malformed(absl::StrCat("VA length ", *length, " exceeds the limit of ", max_value_size,
                                  " bytes in line"),
                     line);
  }
  if (absl::Status status = ParseReturnFlags(tokens, 2, line, &response); !status.ok()) {
    return status;
  }
  const size_t value_size = static_cast<size_t>(*length);
  absl::StatusOr<std::optional<std::string_view>> data =
      DataBlock(pending, line_size, value_size, line);
  if (!data.ok()) return data.status();
  if (!data->has_value()) return std::nullopt;
  response.value = std::string(**data);
  parsed.size = line_size + value_size + 2;
  return parsed;
}

}  // namespace

absl::StatusOr<WireKey> EncodeKey(std::string_view prefix, std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  const size_t raw_size = prefix.size() + key.size();
  const bool plain = std::all_of(prefix.begin(), prefix.end(), IsPlainKeyByte) &&
                     std::all_of(key.begin(), key.end(), IsPlainKeyByte);
  // Sized before encoding, so a huge key costs nothing but this message.
  const size_t wire_size = plain ? raw_size : Base64Size(raw_size);
  if (wire_size > kMaxWireKey) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key is ", raw_size, " bytes",
        prefix.empty() ? "" : absl::StrCat(" with its ", prefix.size(), "-byte prefix"),
        plain ? ""
              : absl::StrCat(" (", wire_size,
                             " bytes in base64 because it holds spaces, control or non-ASCII "
                             "bytes)"),
        "; memcached's limit is ", kMaxWireKey));
  }
  WireKey wire;
  wire.text = absl::StrCat(AsAbsl(prefix), AsAbsl(key));
  if (!plain) {
    wire.text = absl::Base64Escape(wire.text);
    wire.base64 = true;
  }
  return wire;
}

absl::StatusOr<int64_t> EncodeTtl(absl::Duration ttl, absl::Time now) {
  if (ttl == absl::InfiniteDuration()) return 0;
  if (absl::Status s = common_internal::CheckTtl(ttl); !s.ok()) return s;
  // The server clock ticks in whole seconds; rounding down could turn 500ms
  // into 0, which means "never expire".
  const int64_t seconds = absl::ToInt64Seconds(absl::Ceil(ttl, absl::Seconds(1)));
  if (seconds <= kMaxRelativeTtlSeconds) return seconds;
  // Time arithmetic saturates, so an enormous TTL cannot overflow here.
  const int64_t expiry = absl::ToUnixSeconds(now + absl::Seconds(seconds));
  // memcached 1.6.18 keeps expiry times in 32 bits: a later one wraps and the
  // item is stored already expired.
  if (expiry > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl is ", absl::FormatDuration(ttl),
                     "; it ends after 2038-01-19T03:14:07Z, past memcached's 32-bit expiry "
                     "times (InfiniteDuration: never expire)"));
  }
  return expiry;
}

void EncodeGet(const WireKey& key, const GetRequest& request, const RequestTag& tag,
               std::string* out) {
  AppendCommandAndKey("mg", key, out);
  AppendBase64Flag(key, out);
  if (request.value) AppendFlag('v', out);
  // Flags, CAS and remaining TTL are always asked for: L1 fills need all
  // three. The key comes back too, to be checked against the one asked for.
  out->append(" f c t k");
  if (request.vivify_ttl.has_value()) AppendFlag('N', *request.vivify_ttl, out);
  if (request.recache_ttl.has_value()) AppendFlag('R', *request.recache_ttl, out);
  if (request.touch_ttl.has_value()) AppendFlag('T', *request.touch_ttl, out);
  AppendTagAndEnd(tag, out);
}

void EncodeSet(const WireKey& key, const SetRequest& request, const RequestTag& tag,
               std::string* out) {
  AppendCommandAndKey("ms", key, out);
  out->push_back(' ');
  AppendNumber(request.value.size(), out);
  AppendBase64Flag(key, out);
  // memcached's defaults (flags 0, TTL 0 = never expires, mode set) are not
  // spelled out: every token is parsed by the server, and a replicated write
  // is mostly tokens.
  if (request.client_flags != 0) AppendFlag('F', request.client_flags, out);
  if (request.ttl != 0) AppendFlag('T', request.ttl, out);
  if (request.mode != StoreMode::kSet) {
    AppendFlag('M', out);
    out->push_back(static_cast<char>(request.mode));
  }
  if (request.compare_cas.has_value()) AppendFlag('C', *request.compare_cas, out);
  if (request.invalidate) AppendFlag('I', out);
  // The new CAS lets the caller keep its L1 copy revalidatable. A quiet store
  // answers only its failures (NS, EX, NF), whose CAS nothing reads: no `c`.
  if (!tag.quiet) AppendFlag('c', out);
  AppendTagAndEnd(tag, out);
  // The data block is length-delimited: its bytes are sent as they are.
  out->append(request.value);
  out->append("\r\n");
}

void EncodeMultiGet(absl::Span<const WireKey> keys, std::string* out) {
  out->append("gets");
  for (const WireKey& key : keys) {
    out->push_back(' ');
    out->append(key.text);
  }
  out->append("\r\n");
}

void EncodeDelete(const WireKey& key, const DeleteRequest& request, const RequestTag& tag,
                  std::string* out) {
  AppendCommandAndKey("md", key, out);
  AppendBase64Flag(key, out);
  if (request.compare_cas.has_value()) AppendFlag('C', *request.compare_cas, out);
  if (request.invalidate_ttl.has_value()) {
    AppendFlag('I', out);
    AppendFlag('T', *request.invalidate_ttl, out);
  }
  AppendTagAndEnd(tag, out);
}

void EncodeArithmetic(const WireKey& key, const ArithmeticRequest& request, const RequestTag& tag,
                      std::string* out) {
  AppendCommandAndKey("ma", key, out);
  AppendBase64Flag(key, out);
  out->append(" v k");
  out->append(request.increment ? " MI" : " MD");
  AppendFlag('D', request.delta, out);
  if (request.create_ttl.has_value()) {
    AppendFlag('N', *request.create_ttl, out);
    AppendFlag('J', request.initial, out);
  }
  AppendTagAndEnd(tag, out);
}

void ResponseParser::Feed(std::string_view bytes) {
  // Nothing after a malformed response can be trusted; keep no more of it.
  if (!failed_.ok()) return;
  // Dropping the consumed front only once it is the larger half keeps the
  // cost per byte constant and the buffer within twice what is pending.
  if (consumed_ > buffer_.size() / 2) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

absl::StatusOr<std::optional<Response>> ResponseParser::Next() {
  if (!failed_.ok()) return failed_;
  const std::string_view pending = std::string_view(buffer_).substr(consumed_);
  absl::StatusOr<std::optional<Parsed>> parsed = ParseOne(pending, max_value_size_);
  if (!parsed.ok()) {
    failed_ = parsed.status();
    return failed_;
  }
  if (!parsed->has_value()) return std::nullopt;
  consumed_ += (*parsed)->size;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  }
  return std::move((*parsed)->response);
}

void ResponseParser::Reset() {
  buffer_.clear();
  consumed_ = 0;
  failed_ = absl::OkStatus();
}

// ---------------------------------------------------------------------------
// RequestBatch

size_t RequestBatch::Add(const WireKey& key, Command command, bool value, bool quiet) {
  // Every request starts "<cm> <key>": the key's bytes are kept where they
  // are, in the encoded batch.
  requests_.push_back(Request{bytes_.size() + 3, static_cast<uint8_t>(key.text.size()),
                              static_cast<uint32_t>(key.text.size()), key.base64, command, value,
                              quiet});
  return requests_.size() - 1;
}

size_t RequestBatch::Get(const WireKey& key, const GetRequest& request, bool quiet) {
  const size_t i = Add(key, Command::kGet, request.value, quiet);
  EncodeGet(key, request, {first_opaque_ + i, quiet}, &bytes_);
  return i;
}

size_t RequestBatch::Set(const WireKey& key, const SetRequest& request, bool quiet) {
  const size_t i = Add(key, Command::kSet, /*value=*/false, quiet);
  EncodeSet(key, request, {first_opaque_ + i, quiet}, &bytes_);
  return i;
}

size_t RequestBatch::Delete(const WireKey& key, const DeleteRequest& request, bool quiet) {
  const size_t i = Add(key, Command::kDelete, /*value=*/false, quiet);
  EncodeDelete(key, request, {first_opaque_ + i, quiet}, &bytes_);
  return i;
}

size_t RequestBatch::Arithmetic(const WireKey& key, const ArithmeticRequest& request) {
  const size_t i = Add(key, Command::kArithmetic, /*value=*/true, /*quiet=*/false);
  EncodeArithmetic(key, request, {first_opaque_ + i, false}, &bytes_);
  return i;
}

size_t RequestBatch::MultiGet(absl::Span<const WireKey> keys) {
  // "gets " is 5 bytes; the list is the keys with a space between each two.
  size_t list_size = keys.size() - 1;
  for (const WireKey& key : keys) list_size += key.text.size();
  requests_.push_back(Request{bytes_.size() + 5, static_cast<uint8_t>(keys[0].text.size()),
                              static_cast<uint32_t>(list_size), false, Command::kMultiGet,
                              /*value=*/true, /*quiet=*/false});
  EncodeMultiGet(keys, &bytes_);
  return requests_.size() - 1;
}

size_t RequestBatch::FlushAll() {
  requests_.push_back(Request{bytes_.size(), 0, 0, false, Command::kFlushAll, /*value=*/false,
                              /*quiet=*/false});
  bytes_ += "flush_all\r\n";
  return requests_.size() - 1;
}

void RequestBatch::EndWithMarker() {
  const size_t i = Add(WireKey{std::string(kEndMarkerKey), false}, Command::kEndMarker,
                       /*value=*/false, /*quiet=*/false);
  // No flags but the token: the shortest loud request there is.
  AppendCommandAndKey("mg", WireKey{std::string(kEndMarkerKey), false}, &bytes_);
  AppendTagAndEnd({first_opaque_ + i, false}, &bytes_);
  marked_ = true;
}

std::string RequestBatch::Describe(size_t i) const {
  static constexpr std::string_view kNames[] = {"get", "store", "delete", "incr/decr"};
  const Request& r = requests_[i];
  if (r.command == Command::kEndMarker)
    return absl::StrCat("the end of the batch (O", first_opaque_ + i, ")");
  if (r.command == Command::kFlushAll) return "flush_all";
  if (r.command == Command::kMultiGet) {
    return absl::StrCat("gets ", Quote(std::string_view(bytes_).substr(r.key_offset, r.list_size)));
  }
  return absl::StrCat(AsAbsl(kNames[static_cast<int>(r.command)]), " ", Quote(WireKeyOf(r)),
                      r.key_base64 ? " (base64)" : "", " (O", first_opaque_ + i, ")");
}

namespace {

using Code = Response::Code;

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kValue:
      return "VA";
    case Code::kHit:
      return "HD";
    case Code::kMiss:
      return "EN";
    case Code::kNotStored:
      return "NS";
    case Code::kExists:
      return "EX";
    case Code::kNotFound:
      return "NF";
    case Code::kNoop:
      return "MN";
    case Code::kError:
      return "ERROR";
    case Code::kClientError:
      return "CLIENT_ERROR";
    case Code::kServerError:
      return "SERVER_ERROR";
    case Code::kClassicValue:
      return "VALUE";
    case Code::kEnd:
      return "END";
    case Code::kOk:
      return "OK";
  }
  return "?";
}

// The raw bytes of a key as sent or echoed; nullopt if base64 that does not
// decode.
std::optional<std::string> RawKey(std::string_view text, bool base64) {
  if (!base64) return std::string(text);
  std::string raw;
  if (!absl::Base64Unescape(AsAbsl(text), &raw)) return std::nullopt;
  return raw;
}

}  // namespace

absl::Status RequestBatch::CheckCode(size_t i, const Response& response) const {
  const Request& r = requests_[i];
  const Code code = response.code;
  // memcached 1.6.18's answers to each request; a quiet request hides its
  // success (EN for a get, HD for a store or delete, the result of `ma`).
  bool allowed = false;
  switch (r.command) {
    case Command::kGet:
      allowed =
          (code == (r.value ? Code::kValue : Code::kHit)) || (!r.quiet && code == Code::kMiss);
      break;
    case Command::kSet:
      allowed = code == Code::kNotStored || code == Code::kExists || code == Code::kNotFound ||
                (!r.quiet && code == Code::kHit);
      break;
    case Command::kDelete:
      allowed =
          code == Code::kNotFound || code == Code::kExists || (!r.quiet && code == Code::kHit);
      break;
    case Command::kArithmetic:
      allowed = code == Code::kValue || code == Code::kNotFound || code == Code::kNotStored ||
                code == Code::kExists;
      break;
    case Command::kEndMarker:
      allowed = code == Code::kMiss || code == Code::kHit;
      break;
    case Command::kMultiGet:  // answered by VALUE and END only (MatchClassic)
    case Command::kFlushAll:  // answered by OK only (Match)
      allowed = false;
      break;
  }
  if (allowed) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(AsAbsl(CodeName(code)), " is not an answer to ",
                                          Describe(i), r.quiet ? " (quiet)" : ""));
}

absl::Status RequestBatch::CheckKey(size_t i, const Response& response) const {
  const Request& r = requests_[i];
  if (r.command != Command::kGet && r.command != Command::kArithmetic) return absl::OkStatus();
  if (response.key.empty()) {
    return absl::DataLossError(
        absl::StrCat("the answer to ", Describe(i), " does not echo its key"));
  }
  const std::string_view sent = WireKeyOf(r);
  // The common case, both plain or both base64 (memcached's base64 is the
  // standard padded one, as ours): the texts must be equal. Otherwise the item
  // was stored in the other form by some client; compare the raw bytes.
  bool same = false;
  if (response.key_base64 == r.key_base64) {
    same = response.key == sent;
  } else {
    const std::optional<std::string> echoed = RawKey(response.key, response.key_base64);
    const std::optional<std::string> asked = RawKey(sent, r.key_base64);
    same = echoed.has_value() && asked.has_value() && *echoed == *asked;
  }
  if (same) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("the answer to ", Describe(i), " echoes key ",
                                          Quote(response.key),
                                          response.key_base64 ? " (base64)" : ""));
}

absl::StatusOr<RequestBatch::Progress> RequestBatch::Match(Response* response) {
  const auto first_loud = [this](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      if (!requests_[i].quiet) return i;
    }
    return to;
  };
  const auto progress = [this] {
    return next_ == requests_.size() ? Progress::kComplete : Progress::kMore;
  };
  // Only for error messages: not built on the path of a matching answer.
  const auto due = [this] {
    return next_ < requests_.size() ? Describe(next_) : std::string("nothing");
  };
  if (response->code == Code::kNoop) {
    return absl::DataLossError(
        absl::StrCat("MN, but this client sends no mn (the answer to ", due(), " was due)"));
  }
  if (response->code == Code::kClassicValue || response->code == Code::kEnd) {
    return MatchClassic(response);
  }
  if (response->code == Code::kOk) {
    // No token: it can only answer the oldest unanswered request, and only
    // if that is a flush_all.
    if (next_ >= requests_.size() || requests_[next_].command != Command::kFlushAll) {
      return absl::DataLossError(absl::StrCat("OK where the answer to ", due(), " was due"));
    }
    response->request = next_++;
    return progress();
  }
  if (IsErrorLine(response->code)) {
    if (response->code == Code::kClientError && response->message == "unauthenticated") {
      // memcached -Y refuses the first request of a connection that has not
      // authenticated and drops everything sent after it: the stream cannot
      // go on, and it is the credentials, not the wire, that are wrong.
      return absl::PermissionDeniedError(
          "memcached requires authentication (MemcachedOptions::username and password); the "
          "connection is closed");
    }
    if (!IsInStepError(*response)) {
      const std::string line =
          absl::StrCat(AsAbsl(CodeName(response->code)), response->message.empty() ? "" : " ",
                       response->message);
      return absl::DataLossError(
          absl::StrCat("the server answered ", Quote(line), " where the answer to ", due(),
                       " was due: it did not read a request as it was sent"));
    }
    const bool loud = next_ < requests_.size() && !requests_[next_].quiet;
    if (loud && requests_[next_].command != Command::kEndMarker) {
      response->request = next_++;
    } else {
      // Inside a quiet run nobody knows which request it answers; at the end
      // marker, it answers the marker: either way the batch fails as a whole.
      response->request = Response::kUntagged;
      if (loud) ++next_;
    }
    return progress();
  }
  if (!response->opaque.has_value()) {
    return absl::DataLossError(absl::StrCat(AsAbsl(CodeName(response->code)),
                                            " without an opaque token where the answer to ", due(),
                                            " was due"));
  }
  const uint64_t token = *response->opaque;
  if (token < first_opaque_ + next_ || token - first_opaque_ >= requests_.size()) {
    return absl::DataLossError(absl::StrCat(
        AsAbsl(CodeName(response->code)), " O", token, " answers no outstanding request (", due(),
        " was due): a duplicated, reordered or foreign answer"));
  }
  const size_t i = static_cast<size_t>(token - first_opaque_);
  if (const size_t loud = first_loud(next_, i); loud < i) {
    return absl::DataLossError(absl::StrCat("the answer to ", Describe(i),
                                            " came before the answer to ", Describe(loud),
                                            ": answers out of order"));
  }
  if (absl::Status s = CheckCode(i, *response); !s.ok()) return s;
  if (absl::Status s = CheckKey(i, *response); !s.ok()) return s;
  response->request = requests_[i].command == Command::kEndMarker ? Response::kEndOfBatch : i;
  next_ = i + 1;
  return progress();
}

absl::StatusOr<RequestBatch::Progress> RequestBatch::MatchClassic(Response* response) {
  // No token: a VALUE or END can only answer the oldest unanswered request,
  // and only if that is a gets.
  if (next_ >= requests_.size() || requests_[next_].command != Command::kMultiGet) {
    return absl::DataLossError(absl::StrCat(
        AsAbsl(CodeName(response->code)), " where the answer to ",
        next_ < requests_.size() ? Describe(next_) : std::string("nothing"), " was due"));
  }
  const Request& r = requests_[next_];
  if (list_request_ != next_) {
    list_request_ = next_;
    list_cursor_ = r.key_offset;
    list_index_ = 0;
  }
  if (response->code == Code::kEnd) {
    response->request = Response::kEndOfList;
    ++next_;
    return next_ == requests_.size() ? Progress::kComplete : Progress::kMore;
  }
  // memcached answers in the order asked and skips misses: the key must be
  // at or after the cursor. Every key of the list is plain text, one space
  // between each two.
  const size_t list_end = r.key_offset + r.list_size;
  const std::string_view list = std::string_view(bytes_).substr(0, list_end);
  while (list_cursor_ < list_end) {
    size_t key_end = list.find(' ', list_cursor_);
    if (key_end == std::string_view::npos) key_end = list_end;
    const std::string_view key = list.substr(list_cursor_, key_end - list_cursor_);
    const size_t index = list_index_;
    list_cursor_ = key_end + 1;
    ++list_index_;
    if (key == response->key) {
      // A gets always answers with the CAS; a VALUE without one answers
      // some other command (a plain get), not this one.
      if (!response->cas.has_value()) {
        return absl::DataLossError(absl::StrCat("VALUE for key ", Quote(response->key),
                                                " without a CAS answers ", Describe(next_)));
      }
      response->request = next_;
      response->key_index = index;
      return Progress::kMore;
    }
  }
  return absl::DataLossError(absl::StrCat("VALUE for key ", Quote(response->key), " answers ",
                                          Describe(next_),
                                          " out of order or for a key it did not ask for"));
}

bool IsErrorLine(Response::Code code) {
  return code == Code::kError || code == Code::kClientError || code == Code::kServerError;
}

bool IsInStepError(const Response& response) {
  switch (response.code) {
    case Code::kClientError:
      return response.message == "cannot increment or decrement non-numeric value" ||
             response.message == "flush_all not allowed";  // memcached -F
    case Code::kServerError:
      return absl::StartsWith(response.message, "out of memory") ||
             response.message == "object too large for cache";
    default:
      return false;
  }
}

}  // namespace tiercache::mirror_internal
