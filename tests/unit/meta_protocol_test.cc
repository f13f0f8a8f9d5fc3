#include "protocol/meta_protocol.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace tiercache::mirror_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

using ::tiercache::testing::IsOkAndHolds;

MATCHER_P2(StatusIs, code, message, "") {
  const absl::Status& status = arg.status();
  *result_listener << "status is " << status;
  return status.code() == code && std::string(status.message()) == std::string(message);
}

const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}
// The code, and a message that holds `part`.
MATCHER_P2(FailsWith, code, part, "") {
  const absl::Status& status = StatusOf(arg);
  *result_listener << "status is " << status;
  return status.code() == code && std::string(status.message()).find(part) != std::string::npos;
}

MATCHER_P2(IsWireKey, text, base64, "") {
  *result_listener << "text \"" << absl::CEscape(arg.text) << "\", base64 " << arg.base64;
  return arg.text == text && arg.base64 == base64;
}

WireKey Key(std::string_view key, std::string_view prefix = "") {
  absl::StatusOr<WireKey> wire = EncodeKey(prefix, key);
  EXPECT_TRUE(wire.ok()) << wire.status();
  return wire.ok() ? *wire : WireKey{};
}

std::string Escaped(std::string_view bytes) {
  return absl::CEscape(absl::string_view(bytes.data(), bytes.size()));
}

// ---------------------------------------------------------------------------
// EncodeKey

TEST(EncodeKeyTest, PrintableKeyIsSentAsIs) {
  EXPECT_THAT(EncodeKey("", "user:42"), IsOkAndHolds(IsWireKey("user:42", false)));
  EXPECT_THAT(EncodeKey("", "!~"), IsOkAndHolds(IsWireKey("!~", false)));  // 0x21, 0x7e
}

TEST(EncodeKeyTest, PrefixComesFirst) {
  EXPECT_THAT(EncodeKey("app1:", "user:42"), IsOkAndHolds(IsWireKey("app1:user:42", false)));
}

TEST(EncodeKeyTest, SpaceMakesBase64) {
  EXPECT_THAT(EncodeKey("", "a b"), IsOkAndHolds(IsWireKey("YSBi", true)));
}

TEST(EncodeKeyTest, PrefixIsEncodedWithTheKey) {
  EXPECT_THAT(EncodeKey("my app:", "k"), IsOkAndHolds(IsWireKey("bXkgYXBwOms=", true)));
  EXPECT_THAT(EncodeKey("app:", "a b"),
              IsOkAndHolds(IsWireKey(absl::Base64Escape("app:a b"), true)));
}

TEST(EncodeKeyTest, EveryUnsafeByteMakesBase64) {
  const std::vector<std::string> keys = {
      "a b",      "a\r\nb",    std::string("a\0b", 3), "a\x7f", "caf\xc3\xa9", "\t", " ", "a\x1f",
      "\x80\xff", "trailing ",
  };
  for (const std::string& key : keys) {
    SCOPED_TRACE(Escaped(key));
    absl::StatusOr<WireKey> wire = EncodeKey("", key);
    ASSERT_TRUE(wire.ok()) << wire.status();
    EXPECT_TRUE(wire->base64);
    EXPECT_EQ(wire->text, absl::Base64Escape(key));
    std::string decoded;
    ASSERT_TRUE(absl::Base64Unescape(wire->text, &decoded));
    EXPECT_EQ(decoded, key);
  }
  EXPECT_THAT(EncodeKey("", std::string("a\0b", 3)), IsOkAndHolds(IsWireKey("YQBi", true)));
  EXPECT_THAT(EncodeKey("", "a\x7f"), IsOkAndHolds(IsWireKey("YX8=", true)));
  EXPECT_THAT(EncodeKey("", "caf\xc3\xa9"), IsOkAndHolds(IsWireKey("Y2Fmw6k=", true)));
}

TEST(EncodeKeyTest, CommandInKeyBecomesBase64) {
  EXPECT_THAT(EncodeKey("", "a\r\nflush_all"), IsOkAndHolds(IsWireKey("YQ0KZmx1c2hfYWxs", true)));
}

TEST(EncodeKeyTest, EmptyKeyIsRejected) {
  EXPECT_THAT(EncodeKey("", ""), StatusIs(absl::StatusCode::kInvalidArgument, "key is empty"));
  EXPECT_THAT(EncodeKey("app:", ""), StatusIs(absl::StatusCode::kInvalidArgument, "key is empty"));
}

TEST(EncodeKeyTest, PlainLimitIs250Bytes) {
  EXPECT_THAT(EncodeKey("", std::string(250, 'a')),
              IsOkAndHolds(IsWireKey(std::string(250, 'a'), false)));
  EXPECT_THAT(
      EncodeKey("", std::string(251, 'a')),
      StatusIs(absl::StatusCode::kInvalidArgument, "key is 251 bytes; memcached's limit is 250"));
}

TEST(EncodeKeyTest, PrefixCountsTowardTheLimit) {
  const std::string prefix(10, 'p');
  EXPECT_THAT(EncodeKey(prefix, std::string(240, 'a')),
              IsOkAndHolds(IsWireKey(prefix + std::string(240, 'a'), false)));
  EXPECT_THAT(EncodeKey(prefix, std::string(241, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "key is 251 bytes with its 10-byte prefix; memcached's limit is 250"));
}

TEST(EncodeKeyTest, Base64LimitIs186RawBytes) {
  // 186 bytes -> 248 base64 characters; 187 -> 252.
  absl::StatusOr<WireKey> fits = EncodeKey("", std::string(186, ' '));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(fits->text.size(), 248u);
  EXPECT_TRUE(fits->base64);
  EXPECT_THAT(EncodeKey("", std::string(187, ' ')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "key is 187 bytes (252 bytes in base64 because it holds spaces, control "
                       "or non-ASCII bytes); memcached's limit is 250"));
}

TEST(EncodeKeyTest, Base64MessageNamesPrefix) {
  EXPECT_THAT(EncodeKey(std::string(10, 'p'), std::string(290, ' ')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "key is 300 bytes with its 10-byte prefix (400 bytes in base64 because it "
                       "holds spaces, control or non-ASCII bytes); memcached's limit is 250"));
}

// ---------------------------------------------------------------------------
// EncodeTtl

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

TEST(EncodeTtlTest, InfiniteIsZero) {
  EXPECT_THAT(EncodeTtl(absl::InfiniteDuration(), kNow), IsOkAndHolds(0));
}

TEST(EncodeTtlTest, SecondsRoundUp) {
  EXPECT_THAT(EncodeTtl(absl::Nanoseconds(1), kNow), IsOkAndHolds(1));
  EXPECT_THAT(EncodeTtl(absl::Milliseconds(1), kNow), IsOkAndHolds(1));
  EXPECT_THAT(EncodeTtl(absl::Seconds(1), kNow), IsOkAndHolds(1));
  EXPECT_THAT(EncodeTtl(absl::Milliseconds(1500), kNow), IsOkAndHolds(2));
  EXPECT_THAT(EncodeTtl(absl::Minutes(5), kNow), IsOkAndHolds(300));
}

TEST(EncodeTtlTest, ThirtyDaysIsStillRelative) {
  EXPECT_THAT(EncodeTtl(absl::Hours(24 * 30), kNow), IsOkAndHolds(2592000));
}

TEST(EncodeTtlTest, LongerIsAbsolute) {
  EXPECT_THAT(EncodeTtl(absl::Hours(24 * 30) + absl::Seconds(1), kNow),
              IsOkAndHolds(1700000000 + 2592001));
  EXPECT_THAT(EncodeTtl(absl::Hours(24 * 30) + absl::Milliseconds(1), kNow),
              IsOkAndHolds(1700000000 + 2592001));
  EXPECT_THAT(EncodeTtl(absl::Hours(24 * 40), kNow), IsOkAndHolds(1700000000 + 3456000));
}

TEST(EncodeTtlTest, ZeroAndNegativeAreRejected) {
  EXPECT_THAT(EncodeTtl(absl::ZeroDuration(), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ttl is 0; it must be positive (InfiniteDuration: never expire)"));
  EXPECT_THAT(EncodeTtl(absl::Seconds(-1), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ttl is -1s; it must be positive (InfiniteDuration: never expire)"));
  EXPECT_THAT(EncodeTtl(-absl::InfiniteDuration(), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ttl is -inf; it must be positive (InfiniteDuration: never expire)"));
}

// memcached 1.6.18 stores T2147483648 and then answers EN: expiry times wrap
// past 32 bits, so such a TTL must not be sent.
TEST(EncodeTtlTest, ExpiryPast2038IsRejected) {
  const int64_t last = std::numeric_limits<int32_t>::max();
  EXPECT_THAT(EncodeTtl(absl::Seconds(last - 1700000000), kNow), IsOkAndHolds(last));
  EXPECT_THAT(EncodeTtl(absl::Seconds(last - 1700000000 + 1), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ttl is 124301h48s; it ends after 2038-01-19T03:14:07Z, past memcached's "
                       "32-bit expiry times (InfiniteDuration: never expire)"));
  EXPECT_FALSE(EncodeTtl(absl::Hours(24 * 365 * 1000), kNow).ok());
  // The largest finite Duration must not overflow the addition.
  EXPECT_FALSE(EncodeTtl(absl::Seconds(std::numeric_limits<int64_t>::max()), kNow).ok());
}

// ---------------------------------------------------------------------------
// Request encoders: exact bytes

TEST(EncodeGetTest, Default) {
  std::string out;
  EncodeGet(Key("user:42"), GetRequest{}, RequestTag{}, &out);
  EXPECT_EQ(out, "mg user:42 v f c t k O0\r\n");
}

TEST(EncodeGetTest, AllOptions) {
  GetRequest request;
  request.value = false;
  request.vivify_ttl = 30;
  request.recache_ttl = 10;
  request.touch_ttl = 1800000000;
  RequestTag tag;
  tag.opaque = 7;
  tag.quiet = true;
  std::string out;
  EncodeGet(Key("a b"), request, tag, &out);
  EXPECT_EQ(out, "mg YSBi b f c t k N30 R10 T1800000000 O7 q\r\n");
}

TEST(EncodeGetTest, Base64KeyWithValue) {
  std::string out;
  EncodeGet(Key("a b"), GetRequest{}, RequestTag{}, &out);
  EXPECT_EQ(out, "mg YSBi b v f c t k O0\r\n");
}

TEST(EncodeGetTest, AppendsToOutput) {
  std::string out = "mn\r\n";
  RequestTag tag;
  tag.opaque = 0;
  EncodeGet(Key("k"), GetRequest{}, tag, &out);
  EXPECT_EQ(out, "mn\r\nmg k v f c t k O0\r\n");
}

TEST(EncodeSetTest, Default) {
  SetRequest request;
  request.value = "hello";
  std::string out;
  EncodeSet(Key("k"), request, RequestTag{}, &out);
  EXPECT_EQ(out, "ms k 5 c O0\r\nhello\r\n");  // memcached's defaults: no F0 T0 MS
}

TEST(EncodeSetTest, AllOptions) {
  SetRequest request;
  request.value = "abc";
  request.client_flags = 4294967295u;
  request.ttl = 300;
  request.mode = StoreMode::kReplace;
  request.compare_cas = 18446744073709551615u;
  request.invalidate = true;
  RequestTag tag;
  tag.opaque = 18446744073709551615u;
  tag.quiet = true;
  std::string out;
  EncodeSet(Key("a b"), request, tag, &out);
  EXPECT_EQ(out,
            "ms YSBi 3 b F4294967295 T300 MR C18446744073709551615 I O18446744073709551615 q\r\n"
            "abc\r\n");
}

TEST(EncodeSetTest, EveryMode) {
  const std::vector<std::pair<StoreMode, std::string>> modes = {
      {StoreMode::kSet, "MS"},    {StoreMode::kAdd, "ME"},     {StoreMode::kReplace, "MR"},
      {StoreMode::kAppend, "MA"}, {StoreMode::kPrepend, "MP"},
  };
  for (const auto& [mode, token] : modes) {
    SetRequest request;
    request.value = "v";
    request.client_flags = 16;
    request.ttl = 60;
    request.mode = mode;
    std::string out;
    EncodeSet(Key("k"), request, RequestTag{}, &out);
    EXPECT_EQ(out, absl::StrCat("ms k 1 F16 T60", mode == StoreMode::kSet ? "" : " " + token,
                                " c O0\r\nv\r\n"));
  }
}

TEST(EncodeSetTest, BinaryValueIsSentAsIs) {
  const std::string value("a\r\nEN\r\n\0\xff", 9);
  SetRequest request;
  request.value = value;
  std::string out;
  EncodeSet(Key("k"), request, RequestTag{}, &out);
  EXPECT_EQ(out, "ms k 9 c O0\r\n" + value + "\r\n");
}

TEST(EncodeSetTest, EmptyValue) {
  std::string out;
  EncodeSet(Key("k"), SetRequest{}, RequestTag{}, &out);
  EXPECT_EQ(out, "ms k 0 c O0\r\n\r\n");
}

TEST(EncodeDeleteTest, Default) {
  std::string out;
  EncodeDelete(Key("k"), DeleteRequest{}, RequestTag{}, &out);
  EXPECT_EQ(out, "md k O0\r\n");
}

TEST(EncodeDeleteTest, AllOptions) {
  DeleteRequest request;
  request.compare_cas = 9;
  request.invalidate_ttl = 30;
  RequestTag tag;
  tag.opaque = 1;
  tag.quiet = true;
  std::string out;
  EncodeDelete(Key("a b"), request, tag, &out);
  EXPECT_EQ(out, "md YSBi b C9 I T30 O1 q\r\n");
}

TEST(EncodeArithmeticTest, Default) {
  std::string out;
  EncodeArithmetic(Key("n"), ArithmeticRequest{}, RequestTag{}, &out);
  EXPECT_EQ(out, "ma n v k MI D1 O0\r\n");
}

TEST(EncodeArithmeticTest, AllOptions) {
  ArithmeticRequest request;
  request.increment = false;
  request.delta = 18446744073709551615u;
  request.create_ttl = 60;
  request.initial = 10;
  RequestTag tag;
  tag.opaque = 2;
  tag.quiet = true;
  std::string out;
  EncodeArithmetic(Key("a b"), request, tag, &out);
  EXPECT_EQ(out, "ma YSBi b v k MD D18446744073709551615 N60 J10 O2 q\r\n");
}

// A key that holds a command, or a space, must stay one token of one line.
TEST(InjectionTest, KeysCannotAddLinesOrTokens) {
  const std::vector<std::string> keys = {"a\r\nflush_all", "a b", "a\nmn", std::string("a\0 b", 4)};
  for (const std::string& key : keys) {
    SCOPED_TRACE(Escaped(key));
    const WireKey wire = Key(key);
    std::string get;
    EncodeGet(wire, GetRequest{}, RequestTag{}, &get);
    EXPECT_EQ(get, "mg " + absl::Base64Escape(key) + " b v f c t k O0\r\n");
    EXPECT_EQ(get.find('\r'), get.size() - 2);
    EXPECT_EQ(get.find('\n'), get.size() - 1);

    std::string set;
    SetRequest request;
    request.value = "x";
    EncodeSet(wire, request, RequestTag{}, &set);
    EXPECT_EQ(set, "ms " + absl::Base64Escape(key) + " 1 b c O0\r\nx\r\n");
  }
}

// ---------------------------------------------------------------------------
// ResponseParser

// A response as one line, for exact comparison: the code, then whatever is
// present, in a fixed order.
std::string Describe(const Response& r) {
  using Code = Response::Code;
  std::string text;
  switch (r.code) {
    case Code::kValue:
      text = "VA";
      break;
    case Code::kHit:
      text = "HD";
      break;
    case Code::kMiss:
      text = "EN";
      break;
    case Code::kNotStored:
      text = "NS";
      break;
    case Code::kExists:
      text = "EX";
      break;
    case Code::kNotFound:
      text = "NF";
      break;
    case Code::kNoop:
      text = "MN";
      break;
    case Code::kError:
      text = "ERROR";
      break;
    case Code::kClientError:
      text = "CLIENT_ERROR";
      break;
    case Code::kServerError:
      text = "SERVER_ERROR";
      break;
    case Code::kClassicValue:
      text = "VALUE";
      break;
    case Code::kEnd:
      text = "END";
      break;
    case Code::kOk:
      text = "OK";
      break;
  }
  if (r.code == Code::kValue || r.code == Code::kClassicValue || !r.value.empty())
    absl::StrAppend(&text, " \"", Escaped(r.value), "\"");
  if (r.client_flags) absl::StrAppend(&text, " f=", *r.client_flags);
  if (r.cas) absl::StrAppend(&text, " c=", *r.cas);
  if (r.ttl) absl::StrAppend(&text, " t=", *r.ttl);
  if (r.opaque) absl::StrAppend(&text, " O=", *r.opaque);
  if (!r.key.empty()) absl::StrAppend(&text, " k=", r.key, r.key_base64 ? " b" : "");
  if (r.won) absl::StrAppend(&text, " W");
  if (r.stale) absl::StrAppend(&text, " X");
  if (r.lost) absl::StrAppend(&text, " Z");
  if (!r.message.empty()) absl::StrAppend(&text, " message=\"", Escaped(r.message), "\"");
  return text;
}

// Takes every complete response; fails the test on an error.
void Drain(ResponseParser& parser, std::vector<std::string>* out) {
  while (true) {
    absl::StatusOr<std::optional<Response>> next = parser.Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) return;
    out->push_back(Describe(**next));
  }
}

std::vector<std::string> ParseAll(std::string_view stream) {
  ResponseParser parser;
  parser.Feed(stream);
  std::vector<std::string> responses;
  Drain(parser, &responses);
  EXPECT_EQ(parser.buffered(), 0u);
  return responses;
}

TEST(ResponseParserTest, EveryCodeWithoutFlags) {
  EXPECT_THAT(ParseAll("VA 2\r\nhi\r\n"), ElementsAre("VA \"hi\""));
  EXPECT_THAT(ParseAll("VA 0\r\n\r\n"), ElementsAre("VA \"\""));
  EXPECT_THAT(ParseAll("HD\r\n"), ElementsAre("HD"));
  EXPECT_THAT(ParseAll("EN\r\n"), ElementsAre("EN"));
  EXPECT_THAT(ParseAll("NS\r\n"), ElementsAre("NS"));
  EXPECT_THAT(ParseAll("EX\r\n"), ElementsAre("EX"));
  EXPECT_THAT(ParseAll("NF\r\n"), ElementsAre("NF"));
  EXPECT_THAT(ParseAll("MN\r\n"), ElementsAre("MN"));
  EXPECT_THAT(ParseAll("ERROR\r\n"), ElementsAre("ERROR"));
  EXPECT_THAT(ParseAll("CLIENT_ERROR\r\n"), ElementsAre("CLIENT_ERROR"));
  EXPECT_THAT(ParseAll("SERVER_ERROR\r\n"), ElementsAre("SERVER_ERROR"));
}

// Lines as memcached 1.6.18 writes them.
TEST(ResponseParserTest, EveryCodeWithFlags) {
  EXPECT_THAT(ParseAll("VA 2 f5 c5 t-1 O9\r\nhi\r\n"), ElementsAre("VA \"hi\" f=5 c=5 t=-1 O=9"));
  EXPECT_THAT(ParseAll("VA 0 f0 c8 t-1 W\r\n\r\n"), ElementsAre("VA \"\" f=0 c=8 t=-1 W"));
  EXPECT_THAT(ParseAll("VA 0 f0 c8 t30 Z\r\n\r\n"), ElementsAre("VA \"\" f=0 c=8 t=30 Z"));
  EXPECT_THAT(ParseAll("VA 4 f0 c14 t30 X W\r\nhihi\r\n"),
              ElementsAre("VA \"hihi\" f=0 c=14 t=30 W X"));
  EXPECT_THAT(ParseAll("VA 4 f0 c14 t30 Z X\r\nhihi\r\n"),
              ElementsAre("VA \"hihi\" f=0 c=14 t=30 X Z"));
  EXPECT_THAT(ParseAll("HD c5 O7\r\n"), ElementsAre("HD c=5 O=7"));
  EXPECT_THAT(ParseAll("HD f3 c2 t100\r\n"), ElementsAre("HD f=3 c=2 t=100"));
  EXPECT_THAT(ParseAll("EN O9\r\n"), ElementsAre("EN O=9"));
  EXPECT_THAT(ParseAll("NS c0\r\n"), ElementsAre("NS c=0"));
  EXPECT_THAT(ParseAll("EX c0 O3\r\n"), ElementsAre("EX c=0 O=3"));
  EXPECT_THAT(ParseAll("NF O4\r\n"), ElementsAre("NF O=4"));
  EXPECT_THAT(ParseAll("VA 2 O4\r\n10\r\n"), ElementsAre("VA \"10\" O=4"));
}

TEST(ResponseParserTest, ErrorLinesKeepTheirText) {
  EXPECT_THAT(ParseAll("CLIENT_ERROR bad command line format\r\n"),
              ElementsAre("CLIENT_ERROR message=\"bad command line format\""));
  EXPECT_THAT(ParseAll("SERVER_ERROR out of memory storing object\r\n"),
              ElementsAre("SERVER_ERROR message=\"out of memory storing object\""));
  EXPECT_THAT(ParseAll("ERROR no such command\r\n"),
              ElementsAre("ERROR message=\"no such command\""));
  EXPECT_THAT(ParseAll("SERVER_ERROR a\x01\r\n"), ElementsAre("SERVER_ERROR message=\"a\\001\""));
}

TEST(ResponseParserTest, FieldsOfAValueResponse) {
  ResponseParser parser;
  parser.Feed("VA 3 f4294967295 c18446744073709551615 t-1 O4294967295 W X Z\r\nabc\r\n");
  absl::StatusOr<std::optional<Response>> next = parser.Next();
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(next->has_value());
  const Response& r = **next;
  EXPECT_EQ(r.code, Response::Code::kValue);
  EXPECT_EQ(r.value, "abc");
  EXPECT_EQ(r.message, "");
  EXPECT_EQ(r.client_flags, std::optional<uint32_t>(4294967295u));
  EXPECT_EQ(r.cas, std::optional<uint64_t>(18446744073709551615u));
  EXPECT_EQ(r.ttl, std::optional<int64_t>(-1));
  EXPECT_EQ(r.opaque, std::optional<uint32_t>(4294967295u));
  EXPECT_TRUE(r.won);
  EXPECT_TRUE(r.stale);
  EXPECT_TRUE(r.lost);
}

TEST(ResponseParserTest, AbsentFlagsStayEmpty) {
  ResponseParser parser;
  parser.Feed("HD\r\n");
  absl::StatusOr<std::optional<Response>> next = parser.Next();
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(next->has_value());
  const Response& r = **next;
  EXPECT_EQ(r.code, Response::Code::kHit);
  EXPECT_EQ(r.client_flags, std::nullopt);
  EXPECT_EQ(r.cas, std::nullopt);
  EXPECT_EQ(r.ttl, std::nullopt);
  EXPECT_EQ(r.opaque, std::nullopt);
  EXPECT_FALSE(r.won || r.stale || r.lost);
}

TEST(ResponseParserTest, IgnoresFlagsItNeverRequests) {
  EXPECT_THAT(ParseAll("VA 2 kazU= b f5 s2 h1 l30 c5 t-1 O9\r\nhi\r\n"),
              ElementsAre("VA \"hi\" f=5 c=5 t=-1 O=9 k=azU= b"));
  EXPECT_THAT(ParseAll("HD kuser:42 h0\r\n"), ElementsAre("HD k=user:42"));
}

TEST(ResponseParserTest, BinaryValueWithLineEndsInside) {
  const std::string value("a\r\nEN\r\n\0b\r\n", 11);
  EXPECT_THAT(ParseAll("VA 11 f0\r\n" + value + "\r\nEN\r\n"),
              ElementsAre("VA \"a\\r\\nEN\\r\\n\\000b\\r\\n\" f=0", "EN"));
}

TEST(ResponseParserTest, ManyResponsesInOneFeed) {
  EXPECT_THAT(ParseAll("HD c1 O1\r\nEN O2\r\nVA 1 O3\r\nx\r\nNF O4\r\nMN\r\n"),
              ElementsAre("HD c=1 O=1", "EN O=2", "VA \"x\" O=3", "NF O=4", "MN"));
}

TEST(ResponseParserTest, WaitsForTheWholeResponse) {
  ResponseParser parser;
  EXPECT_THAT(parser.Next(), IsOkAndHolds(::testing::Eq(std::nullopt)));
  parser.Feed("VA 5 f0\r\nab");
  EXPECT_THAT(parser.Next(), IsOkAndHolds(::testing::Eq(std::nullopt)));
  EXPECT_EQ(parser.buffered(), 11u);
  parser.Feed("cde\r");
  EXPECT_THAT(parser.Next(), IsOkAndHolds(::testing::Eq(std::nullopt)));
  EXPECT_EQ(parser.buffered(), 15u);
  parser.Feed("\nHD");
  std::vector<std::string> responses;
  Drain(parser, &responses);
  EXPECT_THAT(responses, ElementsAre("VA \"abcde\" f=0"));
  EXPECT_EQ(parser.buffered(), 2u);
}

TEST(ResponseParserTest, BufferedCountsUnconsumedBytes) {
  ResponseParser parser;
  EXPECT_EQ(parser.buffered(), 0u);
  parser.Feed("HD\r\nEN");
  EXPECT_EQ(parser.buffered(), 6u);
  EXPECT_TRUE(parser.Next().ok());
  EXPECT_EQ(parser.buffered(), 2u);
  EXPECT_THAT(parser.Next(), IsOkAndHolds(::testing::Eq(std::nullopt)));
  EXPECT_EQ(parser.buffered(), 2u);
  parser.Feed("\r\n");
  EXPECT_TRUE(parser.Next().ok());
  EXPECT_EQ(parser.buffered(), 0u);
}

// Several responses of every shape, including value bytes that look like
// protocol lines.
const std::string& SplitStream() {
  static const std::string* stream = new std::string(
      "VA 11 f1 c2 t-1 O1\r\n" + std::string("a\r\nEN\r\n\0b\r\n", 11) + "\r\n" +
      "HD c3 O2\r\nEN\r\nVA 0 f0 c8 t30 Z\r\n\r\nNS\r\nEX c0\r\nNF O7\r\n"
      "CLIENT_ERROR bad data chunk\r\nSERVER_ERROR out of memory\r\nERROR\r\nMN\r\n");
  return *stream;
}

const std::vector<std::string> kSplitStreamResponses = {
    "VA \"a\\r\\nEN\\r\\n\\000b\\r\\n\" f=1 c=2 t=-1 O=1",
    "HD c=3 O=2",
    "EN",
    "VA \"\" f=0 c=8 t=30 Z",
    "NS",
    "EX c=0",
    "NF O=7",
    "CLIENT_ERROR message=\"bad data chunk\"",
    "SERVER_ERROR message=\"out of memory\"",
    "ERROR",
    "MN",
};

TEST(ResponseParserTest, StreamInOnePiece) {
  EXPECT_EQ(ParseAll(SplitStream()), kSplitStreamResponses);
}

TEST(ResponseParserTest, StreamSplitAtEveryByte) {
  const std::string& stream = SplitStream();
  for (size_t split = 0; split <= stream.size(); ++split) {
    SCOPED_TRACE(split);
    ResponseParser parser;
    std::vector<std::string> responses;
    parser.Feed(std::string_view(stream).substr(0, split));
    Drain(parser, &responses);
    parser.Feed(std::string_view(stream).substr(split));
    Drain(parser, &responses);
    EXPECT_EQ(responses, kSplitStreamResponses);
    EXPECT_EQ(parser.buffered(), 0u);
  }
}

TEST(ResponseParserTest, StreamOneByteAtATime) {
  const std::string& stream = SplitStream();
  ResponseParser parser;
  std::vector<std::string> responses;
  for (char byte : stream) {
    parser.Feed(std::string_view(&byte, 1));
    Drain(parser, &responses);
  }
  EXPECT_EQ(responses, kSplitStreamResponses);
  EXPECT_EQ(parser.buffered(), 0u);
}

// Exercises the buffer compaction with responses that straddle every feed.
TEST(ResponseParserTest, LongStreamInOddPieces) {
  std::string stream;
  for (int i = 0; i < 5000; ++i) absl::StrAppend(&stream, "VA 3 O", i, "\r\nabc\r\nHD\r\n");
  ResponseParser parser;
  size_t values = 0, hits = 0;
  for (size_t at = 0; at < stream.size(); at += 7) {
    parser.Feed(std::string_view(stream).substr(at, 7));
    while (true) {
      absl::StatusOr<std::optional<Response>> next = parser.Next();
      ASSERT_TRUE(next.ok()) << next.status();
      if (!next->has_value()) break;
      if ((*next)->code == Response::Code::kValue) {
        ASSERT_EQ((*next)->opaque, std::optional<uint64_t>(values));
        ASSERT_EQ((*next)->value, "abc");
        ++values;
      } else {
        ASSERT_EQ((*next)->code, Response::Code::kHit);
        ++hits;
      }
    }
  }
  EXPECT_EQ(values, 5000u);
  EXPECT_EQ(hits, 5000u);
  EXPECT_EQ(parser.buffered(), 0u);
}

TEST(ResponseParserTest, LongestLineIsAccepted) {
  // "SERVER_ERROR " + 8179 bytes of text = 8192 bytes before \r\n.
  EXPECT_THAT(ParseAll("SERVER_ERROR " + std::string(8179, 'a') + "\r\n"),
              ElementsAre("SERVER_ERROR message=\"" + std::string(8179, 'a') + "\""));
}

// Feeds `stream`, expects DataLoss with exactly `message`, and checks that
// the error is sticky until Reset().
void ExpectMalformed(std::string_view stream, std::string_view message,
                     size_t max_value_size = 64 << 20) {
  ResponseParser parser(max_value_size);
  parser.Feed(stream);
  absl::StatusOr<std::optional<Response>> next = parser.Next();
  EXPECT_THAT(next, StatusIs(absl::StatusCode::kDataLoss, message));
  parser.Feed("HD\r\n");
  EXPECT_THAT(parser.Next(), StatusIs(absl::StatusCode::kDataLoss, message));
  EXPECT_THAT(parser.Next(), StatusIs(absl::StatusCode::kDataLoss, message));
  parser.Reset();
  EXPECT_EQ(parser.buffered(), 0u);
  parser.Feed("HD c1\r\n");
  std::vector<std::string> responses;
  Drain(parser, &responses);
  EXPECT_THAT(responses, ElementsAre("HD c=1"));
}

TEST(ResponseParserTest, UnknownCode) {
  ExpectMalformed("XYZ\r\n",
                  "malformed memcached response: unknown response code in line: \"XYZ\"");
  ExpectMalformed("ENX\r\n",
                  "malformed memcached response: unknown response code in line: \"ENX\"");
  ExpectMalformed("\r\n", "malformed memcached response: unknown response code in line: \"\"");
  ExpectMalformed("hd\r\n", "malformed memcached response: unknown response code in line: \"hd\"");
}

TEST(ResponseParserTest, UnknownCodeAfterGoodResponses) {
  ResponseParser parser;
  parser.Feed("HD\r\nEN\r\nSTORED\r\nHD\r\n");
  std::vector<std::string> responses;
  while (true) {
    absl::StatusOr<std::optional<Response>> next = parser.Next();
    if (!next.ok()) {
      EXPECT_THAT(next, StatusIs(absl::StatusCode::kDataLoss,
                                 "malformed memcached response: unknown response code in line: "
                                 "\"STORED\""));
      break;
    }
    ASSERT_TRUE(next->has_value());
    responses.push_back(Describe(**next));
  }
  EXPECT_THAT(responses, ElementsAre("HD", "EN"));
}

TEST(ResponseParserTest, BadValueLength) {
  ExpectMalformed("VA abc\r\n",
                  "malformed memcached response: VA length is not a number (or has leading zeros) "
                  "in line: \"VA abc\"");
  ExpectMalformed("VA\r\n",
                  "malformed memcached response: VA length is not a number (or has leading zeros) "
                  "in line: \"VA\"");
  ExpectMalformed("VA -1\r\n",
                  "malformed memcached response: VA length is not a number (or has leading zeros) "
                  "in line: \"VA -1\"");
  ExpectMalformed("VA +1\r\nx\r\n",
                  "malformed memcached response: VA length is not a number (or has leading zeros) "
                  "in line: \"VA +1\"");
  ExpectMalformed(
      "VA 99999999999999999999\r\n",
      "malformed memcached response: VA length is not a number (or has leading zeros) in line: "
      "\"VA 99999999999999999999\"");
}

TEST(ResponseParserTest, ValueLengthOverTheLimit) {
  ExpectMalformed("VA 1025 f0\r\n",
                  "malformed memcached response: VA length 1025 exceeds the limit of 1024 bytes in "
                  "line: \"VA 1025 f0\"",
                  1024);
  ExpectMalformed("VA 18446744073709551615\r\n",
                  "malformed memcached response: VA length 18446744073709551615 exceeds the limit "
                  "of 67108864 bytes in line: \"VA 18446744073709551615\"");
  // Exactly the limit is fine.
  ResponseParser parser(3);
  parser.Feed("VA 3\r\nabc\r\n");
  std::vector<std::string> responses;
  Drain(parser, &responses);
  EXPECT_THAT(responses, ElementsAre("VA \"abc\""));
}

TEST(ResponseParserTest, ValueNotFollowedByCrLf) {
  ExpectMalformed("VA 5\r\nabcdefg\r\n",
                  "malformed memcached response: the 5-byte value of line \"VA 5\" ends in "
                  "\"fg\", not \\r\\n");
  ExpectMalformed("VA 1\r\nx\n\r",
                  "malformed memcached response: the 1-byte value of line \"VA 1\" ends in "
                  "\"\\n\\r\", not \\r\\n");
}

TEST(ResponseParserTest, BadReturnFlags) {
  ExpectMalformed("HD fabc\r\n",
                  "malformed memcached response: bad return flag \"fabc\" in line: \"HD fabc\"");
  ExpectMalformed("VA 1 f4294967296\r\nx\r\n",
                  "malformed memcached response: bad return flag \"f4294967296\" in line: "
                  "\"VA 1 f4294967296\"");
  ExpectMalformed("HD c-1\r\n",
                  "malformed memcached response: bad return flag \"c-1\" in line: \"HD c-1\"");
  ExpectMalformed("HD t\r\n",
                  "malformed memcached response: bad return flag \"t\" in line: \"HD t\"");
  ExpectMalformed("EN Oabc\r\n",
                  "malformed memcached response: bad return flag \"Oabc\" in line: \"EN Oabc\"");
  ExpectMalformed("HD Wx\r\n",
                  "malformed memcached response: bad return flag \"Wx\" in line: \"HD Wx\"");
}

// Anything memcached 1.6.18 never sends is malformed, not guessed at.
TEST(ResponseParserTest, StrictToWhatMemcachedSends) {
  const std::string prefix = "malformed memcached response: ";
  ExpectMalformed("VA 2 f1 f2\r\nhi\r\n",
                  prefix + "return flag 'f' given twice in line: \"VA 2 f1 f2\"");
  ExpectMalformed("HD O1 O1\r\n", prefix + "return flag 'O' given twice in line: \"HD O1 O1\"");
  ExpectMalformed("HD W W\r\n", prefix + "return flag 'W' given twice in line: \"HD W W\"");
  ExpectMalformed("VA 02\r\nhi\r\n",
                  prefix + "VA length is not a number (or has leading zeros) in line: \"VA 02\"");
  ExpectMalformed("VA +2\r\nhi\r\n",
                  prefix + "VA length is not a number (or has leading zeros) in line: \"VA +2\"");
  ExpectMalformed("HD t-2\r\n", prefix + "bad return flag \"t-2\" in line: \"HD t-2\"");
  ExpectMalformed("HD t-0\r\n", prefix + "bad return flag \"t-0\" in line: \"HD t-0\"");
  ExpectMalformed("HD O07\r\n", prefix + "bad return flag \"O07\" in line: \"HD O07\"");
  ExpectMalformed("HD c01\r\n", prefix + "bad return flag \"c01\" in line: \"HD c01\"");
  ExpectMalformed("EN c5\r\n",
                  prefix + "a miss (EN) with flags only a hit can carry in line: \"EN c5\"");
  ExpectMalformed("EN ka O1 W\r\n",
                  prefix + "a miss (EN) with flags only a hit can carry in line: \"EN ka O1 W\"");
  ExpectMalformed("EN t-1\r\n",
                  prefix + "a miss (EN) with flags only a hit can carry in line: \"EN t-1\"");
  ExpectMalformed("HD y1\r\n", prefix + "unknown return flag \"y1\" in line: \"HD y1\"");
  ExpectMalformed("MN O1\r\n", prefix + "flags on MN in line: \"MN O1\"");
  ExpectMalformed("HD b O1\r\n", prefix + "return flag 'b' without a key (k) in line: \"HD b O1\"");
  ExpectMalformed("HD k\r\n", prefix + "bad return flag \"k\" in line: \"HD k\"");
  ExpectMalformed("HD h2\r\n", prefix + "bad return flag \"h2\" in line: \"HD h2\"");
  const std::string long_key = "k" + std::string(251, 'a');
  ExpectMalformed("HD " + long_key + "\r\n", prefix + "bad return flag \"" +
                                                 long_key.substr(0, 40) + "...\" in line: \"HD " +
                                                 long_key.substr(0, 37) + "...\"");
}

// Lines memcached 1.6.18 sent to this client's requests (captured here).
TEST(ResponseParserTest, WhatMemcachedSendsIsAccepted) {
  EXPECT_THAT(ParseAll("EN knope O20\r\n"), ElementsAre("EN O=20 k=nope"));
  EXPECT_THAT(ParseAll("EN kZm9vIGJhcg== b O21\r\n"), ElementsAre("EN O=21 k=Zm9vIGJhcg== b"));
  EXPECT_THAT(ParseAll("VA 2 f5 c4 t-1 kfoo O19\r\nhi\r\n"),
              ElementsAre("VA \"hi\" f=5 c=4 t=-1 O=19 k=foo"));
  EXPECT_THAT(ParseAll("VA 0 f0 c7 t30 klease O31 Z\r\n\r\n"),
              ElementsAre("VA \"\" f=0 c=7 t=30 O=31 k=lease Z"));
  EXPECT_THAT(ParseAll("EX c0 klease O32\r\n"), ElementsAre("EX c=0 O=32 k=lease"));
  EXPECT_THAT(ParseAll("NS c0 knope O1\r\nNF O3\r\nHD c40 O1\r\nMN\r\n"),
              ElementsAre("NS c=0 O=1 k=nope", "NF O=3", "HD c=40 O=1", "MN"));
  EXPECT_THAT(ParseAll("VA 1 kn O27\r\n9\r\n"), ElementsAre("VA \"9\" O=27 k=n"));
  EXPECT_THAT(ParseAll("EN O18446744073709551615\r\n"), ElementsAre("EN O=18446744073709551615"));
}

// ---------------------------------------------------------------------------
// RequestBatch: encoding with tokens, and matching answers to requests

TEST(RequestBatchTest, RequestsCarryConsecutiveTokens) {
  RequestBatch batch(41);
  EXPECT_EQ(batch.Get(Key("a"), GetRequest{}, /*quiet=*/true), 0u);
  SetRequest set;
  set.value = "x";
  EXPECT_EQ(batch.Set(Key("b c"), set), 1u);
  EXPECT_EQ(batch.Delete(Key("d"), DeleteRequest{}, /*quiet=*/true), 2u);
  EXPECT_EQ(batch.Arithmetic(Key("n"), ArithmeticRequest{}), 3u);
  batch.EndWithMarker();
  EXPECT_EQ(batch.bytes(),
            "mg a v f c t k O41 q\r\n"
            "ms YiBj 1 b c O42\r\nx\r\n"
            "md d O43 q\r\n"
            "ma n v k MI D1 O44\r\n"
            "mg tiercache:end-of-batch O45\r\n");
  EXPECT_EQ(batch.size(), 4u);
  EXPECT_EQ(batch.Describe(0), "get \"a\" (O41)");
  EXPECT_EQ(batch.Describe(1), "store \"YiBj\" (base64) (O42)");
  EXPECT_EQ(batch.Describe(3), "incr/decr \"n\" (O44)");
  EXPECT_EQ(batch.Describe(4), "the end of the batch (O45)");
}

// Parses `line` (one complete response) for a Match test.
Response Parse(std::string_view bytes) {
  ResponseParser parser;
  parser.Feed(bytes);
  absl::StatusOr<std::optional<Response>> next = parser.Next();
  EXPECT_TRUE(next.ok() && next->has_value()) << Escaped(bytes);
  return next.ok() && next->has_value() ? **next : Response{};
}

using Progress = RequestBatch::Progress;

absl::StatusOr<Progress> MatchBytes(RequestBatch& batch, std::string_view bytes,
                                    size_t* request = nullptr) {
  Response response = Parse(bytes);
  absl::StatusOr<Progress> progress = batch.Match(&response);
  if (request != nullptr) *request = response.request;
  return progress;
}

TEST(RequestBatchTest, AGetIsAnsweredByItsTokenAndKey) {
  RequestBatch batch(5);
  batch.Get(Key("user:1"), GetRequest{});
  size_t request = 99;
  EXPECT_THAT(MatchBytes(batch, "VA 2 f0 c1 t-1 kuser:1 O5\r\nhi\r\n", &request),
              IsOkAndHolds(Progress::kComplete));
  EXPECT_EQ(request, 0u);

  RequestBatch miss(6);
  miss.Get(Key("user:1"), GetRequest{});
  EXPECT_THAT(MatchBytes(miss, "EN kuser:1 O6\r\n"), IsOkAndHolds(Progress::kComplete));
}

TEST(RequestBatchTest, AnotherRequestsTokenIsDataLoss) {
  RequestBatch batch(5);
  batch.Get(Key("user:2"), GetRequest{});
  // The answer to the previous request, sent twice by the server.
  EXPECT_THAT(MatchBytes(batch, "VA 2 f0 c1 t-1 kuser:1 O4\r\nhi\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "VA O4 answers no outstanding request (get \"user:2\" (O5) was due): a "
                       "duplicated, reordered or foreign answer"));
  RequestBatch later(5);
  later.Get(Key("user:2"), GetRequest{});
  EXPECT_THAT(MatchBytes(later, "EN kuser:2 O6\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "EN O6 answers no outstanding request (get \"user:2\" (O5) was due): a "
                       "duplicated, reordered or foreign answer"));
}

TEST(RequestBatchTest, AnotherKeyIsDataLoss) {
  RequestBatch batch(5);
  batch.Get(Key("user:2"), GetRequest{});
  EXPECT_THAT(MatchBytes(batch, "VA 2 f0 c1 t-1 kuser:1 O5\r\nhi\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the answer to get \"user:2\" (O5) echoes key \"user:1\""));
  RequestBatch no_key(5);
  no_key.Get(Key("user:2"), GetRequest{});
  EXPECT_THAT(MatchBytes(no_key, "VA 2 O5\r\nhi\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the answer to get \"user:2\" (O5) does not echo its key"));
  RequestBatch counter(1);
  counter.Arithmetic(Key("n"), ArithmeticRequest{});
  EXPECT_THAT(
      MatchBytes(counter, "VA 1 km O1\r\n5\r\n"),
      StatusIs(absl::StatusCode::kDataLoss, "the answer to incr/decr \"n\" (O1) echoes key \"m\""));
}

// memcached echoes a key in the form its item was stored in: compare raw bytes.
TEST(RequestBatchTest, KeysCompareDecoded) {
  RequestBatch plain(1);
  plain.Get(Key("bar"), GetRequest{});
  EXPECT_THAT(MatchBytes(plain, "VA 2 c37 kYmFy b O1\r\nhi\r\n"),
              IsOkAndHolds(Progress::kComplete));
  RequestBatch binary(1);
  binary.Get(Key("a b"), GetRequest{});
  EXPECT_THAT(MatchBytes(binary, "EN kYSBi b O1\r\n"), IsOkAndHolds(Progress::kComplete));
  RequestBatch other(1);
  other.Get(Key("a b"), GetRequest{});
  EXPECT_THAT(MatchBytes(other, "EN kYSBj b O1\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the answer to get \"YSBi\" (base64) (O1) echoes key \"YSBj\" (base64)"));
  RequestBatch undecodable(1);
  undecodable.Get(Key("bar"), GetRequest{});
  EXPECT_EQ(MatchBytes(undecodable, "EN k!!! b O1\r\n").status().code(),
            absl::StatusCode::kDataLoss);
  RequestBatch prefixed(1);
  prefixed.Get(Key("bar", "app:"), GetRequest{});
  EXPECT_EQ(MatchBytes(prefixed, "EN kbar O1\r\n").status().code(), absl::StatusCode::kDataLoss);
}

TEST(RequestBatchTest, TheWrongKindOfAnswerIsDataLoss) {
  RequestBatch get(1);
  get.Get(Key("k"), GetRequest{});
  EXPECT_THAT(MatchBytes(get, "HD kk O1\r\n"),
              StatusIs(absl::StatusCode::kDataLoss, "HD is not an answer to get \"k\" (O1)"));
  RequestBatch store(1);
  SetRequest set;
  set.value = "v";
  store.Set(Key("k"), set);
  EXPECT_THAT(MatchBytes(store, "VA 1 kk O1\r\nv\r\n"),
              StatusIs(absl::StatusCode::kDataLoss, "VA is not an answer to store \"k\" (O1)"));
  RequestBatch quiet(1);
  quiet.Get(Key("k"), GetRequest{}, /*quiet=*/true);
  quiet.EndWithMarker();
  EXPECT_THAT(
      MatchBytes(quiet, "EN kk O1\r\n"),
      StatusIs(absl::StatusCode::kDataLoss, "EN is not an answer to get \"k\" (O1) (quiet)"));
  for (std::string_view answer : {"HD O1\r\n", "NS O1\r\n", "EX O1\r\n", "NF O1\r\n"}) {
    RequestBatch ok(1);
    ok.Set(Key("k"), set);
    EXPECT_THAT(MatchBytes(ok, answer), IsOkAndHolds(Progress::kComplete)) << answer;
  }
}

TEST(RequestBatchTest, QuietRunsSkipOnlyQuietRequests) {
  RequestBatch batch(10);
  for (const char* key : {"k0", "k1", "k2", "k3"}) batch.Get(Key(key), GetRequest{}, true);
  batch.EndWithMarker();
  size_t request = 99;
  EXPECT_THAT(MatchBytes(batch, "VA 1 kk1 O11\r\na\r\n", &request), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(request, 1u);
  EXPECT_THAT(MatchBytes(batch, "VA 1 kk3 O13\r\nb\r\n", &request), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(request, 3u);
  EXPECT_THAT(MatchBytes(batch, "EN O14\r\n", &request), IsOkAndHolds(Progress::kComplete));
  EXPECT_EQ(request, Response::kEndOfBatch);

  // A loud request cannot be skipped.
  RequestBatch loud(1);
  loud.Get(Key("a"), GetRequest{});
  loud.Get(Key("b"), GetRequest{});
  EXPECT_THAT(MatchBytes(loud, "EN kb O2\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the answer to get \"b\" (O2) came before the answer to get \"a\" (O1): "
                       "answers out of order"));
}

TEST(RequestBatchTest, SwappedOrderAndSwappedTokensAreDataLoss) {
  RequestBatch swapped(10);
  for (const char* key : {"k0", "k1", "k2", "k3"}) swapped.Get(Key(key), GetRequest{}, true);
  swapped.EndWithMarker();
  EXPECT_THAT(MatchBytes(swapped, "VA 1 kk1 O11\r\na\r\n"), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(MatchBytes(swapped, "VA 1 kk0 O10\r\nb\r\n").status().code(),
            absl::StatusCode::kDataLoss);

  // Tokens exchanged between k0's and k1's answers: k0's value under k1's token.
  RequestBatch tokens(10);
  for (const char* key : {"k0", "k1", "k2", "k3"}) tokens.Get(Key(key), GetRequest{}, true);
  tokens.EndWithMarker();
  EXPECT_THAT(
      MatchBytes(tokens, "VA 1 kk0 O11\r\na\r\n"),
      StatusIs(absl::StatusCode::kDataLoss, "the answer to get \"k1\" (O11) echoes key \"k0\""));
}

// memcached's MN carries no token: a duplicated one would end the next batch
// early. This client never sends mn; its batches end with a tagged marker.
TEST(RequestBatchTest, OnlyTheTaggedMarkerEndsABatch) {
  RequestBatch mn(1);
  mn.Get(Key("a"), GetRequest{}, /*quiet=*/true);
  mn.EndWithMarker();
  EXPECT_THAT(MatchBytes(mn, "MN\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "MN, but this client sends no mn (the answer to get \"a\" (O1) was due)"));
  RequestBatch early(1);
  early.Get(Key("a"), GetRequest{});
  early.EndWithMarker();
  EXPECT_THAT(MatchBytes(early, "EN O2\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the answer to the end of the batch (O2) came before the answer to get "
                       "\"a\" (O1): answers out of order"));
  RequestBatch marker_value(1);
  marker_value.Get(Key("a"), GetRequest{}, /*quiet=*/true);
  marker_value.EndWithMarker();
  EXPECT_THAT(
      MatchBytes(marker_value, "VA 1 O2\r\nx\r\n"),
      StatusIs(absl::StatusCode::kDataLoss, "VA is not an answer to the end of the batch (O2)"));
}

TEST(RequestBatchTest, UntaggedAnswersAreDataLoss) {
  RequestBatch batch(1);
  batch.Get(Key("a"), GetRequest{});
  EXPECT_THAT(MatchBytes(batch, "VA 1 ka\r\nx\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "VA without an opaque token where the answer to get \"a\" (O1) was due"));
}

TEST(RequestBatchTest, ErrorLinesAnswerALoudRequestOrFailAQuietRun) {
  RequestBatch loud(1);
  loud.Arithmetic(Key("n"), ArithmeticRequest{});
  size_t request = 99;
  EXPECT_THAT(MatchBytes(loud, "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                         &request),
              IsOkAndHolds(Progress::kComplete));
  EXPECT_EQ(request, 0u);

  RequestBatch quiet(1);
  SetRequest set;
  quiet.Set(Key("a"), set, true);
  quiet.Set(Key("b"), set, true);
  quiet.EndWithMarker();
  EXPECT_THAT(MatchBytes(quiet, "SERVER_ERROR out of memory storing object\r\n", &request),
              IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(request, Response::kUntagged);
  EXPECT_THAT(MatchBytes(quiet, "NS O2\r\n", &request), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(request, 1u);
  EXPECT_THAT(MatchBytes(quiet, "HD O3\r\n"), IsOkAndHolds(Progress::kComplete));
}

// memcached answers a request it could not frame twice (CLIENT_ERROR bad
// data chunk, then ERROR for the rest read as a command): such an error is a
// desync wherever it comes, never one request's answer.
TEST(RequestBatchTest, AnErrorThatShowsAMisreadRequestIsDataLoss) {
  RequestBatch single(1);
  SetRequest set;
  set.value = "v";
  single.Set(Key("k"), set);
  EXPECT_THAT(MatchBytes(single, "CLIENT_ERROR bad data chunk\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the server answered \"CLIENT_ERROR bad data chunk\" where the answer to "
                       "store \"k\" (O1) was due: it did not read a request as it was sent"));
  RequestBatch quiet(1);
  quiet.Get(Key("a"), GetRequest{}, /*quiet=*/true);
  quiet.EndWithMarker();
  EXPECT_THAT(MatchBytes(quiet, "ERROR\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "the server answered \"ERROR\" where the answer to get \"a\" (O1) was "
                       "due: it did not read a request as it was sent"));
}

// memcached -Y answers the first request of an unauthenticated connection
// with this line and drops the rest: not in step, and not the wire's fault.
TEST(RequestBatchTest, UnauthenticatedIsPermissionDenied) {
  RequestBatch batch(1);
  batch.Get(Key("a"), GetRequest{}, /*quiet=*/true);
  batch.EndWithMarker();
  EXPECT_THAT(MatchBytes(batch, "CLIENT_ERROR unauthenticated\r\n"),
              FailsWith(absl::StatusCode::kPermissionDenied, "requires authentication"));
  EXPECT_FALSE(IsInStepError(Parse("CLIENT_ERROR unauthenticated\r\n")));
}

TEST(RequestBatchTest, InStepErrors) {
  EXPECT_TRUE(
      IsInStepError(Parse("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")));
  EXPECT_TRUE(IsInStepError(Parse("SERVER_ERROR out of memory storing object\r\n")));
  EXPECT_TRUE(IsInStepError(Parse("SERVER_ERROR object too large for cache\r\n")));
  EXPECT_FALSE(IsInStepError(Parse("CLIENT_ERROR bad data chunk\r\n")));
  EXPECT_FALSE(IsInStepError(Parse("CLIENT_ERROR bad command line format\r\n")));
  EXPECT_FALSE(IsInStepError(Parse("ERROR\r\n")));
  EXPECT_FALSE(IsInStepError(Parse("HD O1\r\n")));
}

// --- The classic multi-key gets ------------------------------------------------

TEST(ResponseParserTest, ClassicValuesAndEnd) {
  EXPECT_THAT(ParseAll("VALUE user:1 5 2 77\r\nhi\r\nVALUE k 0 0\r\n\r\nEND\r\n"),
              ElementsAre("VALUE \"hi\" f=5 c=77 k=user:1", "VALUE \"\" f=0 k=k", "END"));
  // Split at every byte, as any response.
  const std::string stream = "VALUE a 1 3 9\r\nabc\r\nEND\r\n";
  for (size_t cut = 1; cut < stream.size(); ++cut) {
    ResponseParser parser;
    std::vector<std::string> out;
    parser.Feed(std::string_view(stream).substr(0, cut));
    Drain(parser, &out);
    parser.Feed(std::string_view(stream).substr(cut));
    Drain(parser, &out);
    EXPECT_THAT(out, ElementsAre("VALUE \"abc\" f=1 c=9 k=a", "END")) << cut;
  }
}

TEST(ResponseParserTest, MalformedClassicLines) {
  const auto error = [](std::string_view bytes) {
    ResponseParser parser;
    parser.Feed(bytes);
    return parser.Next().status();
  };
  EXPECT_THAT(error("VALUE k 0\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("VALUE without key, flags")));
  EXPECT_THAT(error("VALUE k 0 1 2 3\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("VALUE without key, flags")));
  EXPECT_THAT(error("VALUE k -1 1\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("VALUE flags not a number")));
  EXPECT_THAT(error("VALUE k 0 01\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("VALUE length not a number")));
  EXPECT_THAT(error("VALUE k 0 1 x\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("VALUE CAS not a number")));
  EXPECT_THAT(
      error("VALUE k 0 4294967296\r\n"),
      FailsWith(absl::StatusCode::kDataLoss, ("VALUE length 4294967296 exceeds the limit")));
  EXPECT_THAT(error("VALUE k 0 1\r\nxy\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("ends in \"y\\r\", not")));
  EXPECT_THAT(error("END 1\r\n"), FailsWith(absl::StatusCode::kDataLoss, ("END with")));
  EXPECT_THAT(error(absl::StrCat("VALUE ", std::string(251, 'k'), " 0 1\r\nx\r\n")),
              FailsWith(absl::StatusCode::kDataLoss, ("VALUE key over 250 bytes")));
}

TEST(RequestBatchTest, AMultiGetIsOneLineAnsweredInOrder) {
  RequestBatch batch(7);
  const std::vector<WireKey> keys = {Key("a"), Key("bb"), Key("c")};
  EXPECT_EQ(batch.MultiGet(keys), 0u);
  batch.EndWithMarker();
  EXPECT_EQ(batch.bytes(), "gets a bb c\r\nmg tiercache:end-of-batch O8\r\n");
  EXPECT_EQ(batch.Describe(0), "gets \"a bb c\"");
  // a missed; bb and c hit, in the order asked; then END and the marker.
  Response bb = Parse("VALUE bb 0 1 5\r\nx\r\n");
  EXPECT_THAT(batch.Match(&bb), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(bb.request, 0u);
  EXPECT_EQ(bb.key_index, 1u);
  Response c = Parse("VALUE c 0 1 6\r\ny\r\n");
  EXPECT_THAT(batch.Match(&c), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(c.key_index, 2u);
  Response end = Parse("END\r\n");
  EXPECT_THAT(batch.Match(&end), IsOkAndHolds(Progress::kMore));
  EXPECT_EQ(end.request, Response::kEndOfList);
  EXPECT_THAT(MatchBytes(batch, "EN O8\r\n"), IsOkAndHolds(Progress::kComplete));
}

TEST(RequestBatchTest, AFlushIsAnsweredByOkOnlyWhenItIsDue) {
  RequestBatch batch(3);
  const WireKey marker = Key("tiercache:rejoined");
  GetRequest get;
  EXPECT_EQ(batch.Get(marker, get), 0u);
  EXPECT_EQ(batch.FlushAll(), 1u);
  EXPECT_EQ(batch.Describe(1), "flush_all");
  EXPECT_EQ(batch.bytes(), "mg tiercache:rejoined v f c t k O3\r\nflush_all\r\n");
  // OK carries no token: before the get is answered it answers nothing.
  Response early = Parse("OK\r\n");
  EXPECT_THAT(batch.Match(&early),
              FailsWith(absl::StatusCode::kDataLoss, "OK where the answer to get"));
  RequestBatch in_order(3);
  in_order.Get(marker, get);
  in_order.FlushAll();
  EXPECT_THAT(MatchBytes(in_order, "EN O3 ktiercache:rejoined\r\n"), IsOkAndHolds(Progress::kMore));
  Response ok = Parse("OK\r\n");
  EXPECT_THAT(in_order.Match(&ok), IsOkAndHolds(Progress::kComplete));
  EXPECT_EQ(ok.request, 1u);
  // A flush is never answered by a meta code, and OK never answers a get.
  RequestBatch flush_only(9);
  flush_only.FlushAll();
  EXPECT_THAT(MatchBytes(flush_only, "HD O9\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, "HD is not an answer to flush_all"));
  EXPECT_THAT(ParseAll("OK\r\n"), ElementsAre("OK"));
}

TEST(RequestBatchTest, AMultiGetRefusesWhatItDidNotAskForOrNotInOrder) {
  const std::vector<WireKey> keys = {Key("a"), Key("b")};
  RequestBatch foreign(1);
  foreign.MultiGet(keys);
  foreign.EndWithMarker();
  EXPECT_THAT(MatchBytes(foreign, "VALUE other 0 1 5\r\nx\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "VALUE for key \"other\" answers gets \"a b\" out of order or for a key it "
                       "did not ask for"));
  RequestBatch reordered(1);
  reordered.MultiGet(keys);
  reordered.EndWithMarker();
  EXPECT_THAT(MatchBytes(reordered, "VALUE b 0 1 5\r\nx\r\n"), IsOkAndHolds(Progress::kMore));
  EXPECT_THAT(MatchBytes(reordered, "VALUE a 0 1 5\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("out of order")));
  RequestBatch twice(1);
  twice.MultiGet(keys);
  twice.EndWithMarker();
  EXPECT_THAT(MatchBytes(twice, "VALUE a 0 1 5\r\nx\r\n"), IsOkAndHolds(Progress::kMore));
  EXPECT_THAT(MatchBytes(twice, "VALUE a 0 1 5\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("out of order")));
  // A gets always sends the CAS: a VALUE without it answers some other get.
  RequestBatch no_cas(1);
  no_cas.MultiGet(keys);
  no_cas.EndWithMarker();
  EXPECT_THAT(MatchBytes(no_cas, "VALUE a 0 1\r\nx\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "VALUE for key \"a\" without a CAS answers gets \"a b\""));
  // A duplicated answer: after END only the marker's answer may come.
  RequestBatch duplicated(1);
  duplicated.MultiGet(keys);
  duplicated.EndWithMarker();
  EXPECT_THAT(MatchBytes(duplicated, "END\r\n"), IsOkAndHolds(Progress::kMore));
  EXPECT_THAT(MatchBytes(duplicated, "END\r\n"),
              StatusIs(absl::StatusCode::kDataLoss,
                       "END where the answer to the end of the batch (O2) was due"));
  // The marker's answer before END: the gets' answer is missing.
  RequestBatch early(1);
  early.MultiGet(keys);
  early.EndWithMarker();
  EXPECT_THAT(MatchBytes(early, "EN O2\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("answers out of order")));
  // Classic answers where a meta request is due, and a meta value where a
  // gets is due.
  RequestBatch meta(1);
  meta.Get(Key("a"), GetRequest{});
  EXPECT_THAT(
      MatchBytes(meta, "VALUE a 0 1 5\r\nx\r\n"),
      StatusIs(absl::StatusCode::kDataLoss, "VALUE where the answer to get \"a\" (O1) was due"));
  RequestBatch classic(1);
  classic.MultiGet(keys);
  EXPECT_THAT(MatchBytes(classic, "VA 1 ka O1\r\nx\r\n"),
              FailsWith(absl::StatusCode::kDataLoss, ("VA is not an answer to gets")));
}

TEST(ResponseParserTest, OverlongLine) {
  const std::string quoted = "\"" + std::string(40, 'a') + "...\"";
  ExpectMalformed(std::string(9000, 'a'),
                  "malformed memcached response: a line longer than 8192 bytes: " + quoted);
  // The verdict does not wait for a newline, and does not change when one comes.
  ExpectMalformed("HD k" + std::string(8189, 'a') + "\r\n",
                  "malformed memcached response: a line longer than 8192 bytes: \"HD k" +
                      std::string(36, 'a') + "...\"");
  ResponseParser parser;
  parser.Feed(std::string(8193, 'a'));
  EXPECT_THAT(parser.Next(), IsOkAndHolds(::testing::Eq(std::nullopt)));  // may still be 8192 + \r
  parser.Feed("a");
  EXPECT_EQ(parser.Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST(ResponseParserTest, BareLineFeed) {
  ExpectMalformed("HD\n",
                  "malformed memcached response: a line ending in \\n without \\r: \"HD\\n\"");
  ExpectMalformed("\n", "malformed memcached response: a line ending in \\n without \\r: \"\\n\"");
}

TEST(ResponseParserTest, MessageEscapesAndTruncatesBadBytes) {
  ExpectMalformed(std::string("\x01\xff\0 ", 4) + std::string(50, 'z') + "\r\n",
                  "malformed memcached response: unknown response code in line: "
                  "\"\\001\\377\\000 " +
                      std::string(36, 'z') + "...\"");
}

TEST(ResponseParserTest, ResetDropsPendingBytes) {
  ResponseParser parser;
  parser.Feed("HD\r\nVA 3\r\nab");
  EXPECT_TRUE(parser.Next().ok());
  parser.Reset();
  EXPECT_EQ(parser.buffered(), 0u);
  EXPECT_THAT(parser.Next(), IsOkAndHolds(::testing::Eq(std::nullopt)));
  parser.Feed("EN\r\n");
  std::vector<std::string> responses;
  Drain(parser, &responses);
  EXPECT_THAT(responses, ElementsAre("EN"));
  EXPECT_THAT(ParseAll(""), IsEmpty());
}

}  // namespace
}  // namespace tiercache::mirror_internal
