// memcached's meta protocol, without sockets: requests become bytes, bytes
// become responses. Everything here is pure and tested from byte strings
// (tests/unit/meta_protocol_test.cc). The facts it relies on are in
// shared/memcached-protocol.md; it sends only flags memcached 1.6.18 knows.
//
// Encoding never fails on a key or value that passed `EncodeKey` and the size
// checks of its caller; a key that cannot be sent safely never reaches it.

#ifndef TIERCACHE_MIRROR_PROTOCOL_META_PROTOCOL_H_
#define TIERCACHE_MIRROR_PROTOCOL_META_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tiercache::mirror_internal {

inline constexpr size_t kMaxWireKey = 250;
// TTLs above this many seconds are absolute Unix times on the wire.
inline constexpr int64_t kMaxRelativeTtlSeconds = 30 * 24 * 3600;

// A key as it goes on the wire: `prefix + key`, or its base64 with the `b`
// flag when it holds a byte outside printable ASCII (0x21..0x7e: spaces,
// control bytes, non-ASCII). Nothing in a WireKey can end a line or split a
// token, so no key can inject a command.
struct WireKey {
  std::string text;
  bool base64 = false;
};

// InvalidArgument when the key is empty or its wire form exceeds 250 bytes
// (the message gives both sizes and says whether base64 was needed).
absl::StatusOr<WireKey> EncodeKey(std::string_view prefix, std::string_view key);

// The TTL token: 0 for InfiniteDuration (never expires); whole seconds,
// rounded up, up to 30 days; beyond that an absolute Unix time from `now`.
// InvalidArgument for a TTL <= 0, or one ending after 2038-01-19T03:14:07Z
// (memcached 1.6.18 stores expiry times in 32 bits and would wrap it).
absl::StatusOr<int64_t> EncodeTtl(absl::Duration ttl, absl::Time now);

enum class StoreMode : char {
  kSet = 'S',
  kAdd = 'E',
  kReplace = 'R',
  kAppend = 'A',
  kPrepend = 'P',
};

// Every request may carry an opaque token (O<n>) echoed in its response, and
// may be quiet (q): then a success sends nothing and only failures answer.
struct RequestTag {
  std::optional<uint32_t> opaque;
  bool quiet = false;
};

// mg <key> [b] [v] f c t [N<ttl>] [R<ttl>] [T<ttl>] [O<n>] [q]
struct GetRequest {
  bool value = true;                   // v: return the value (else only metadata)
  std::optional<int64_t> vivify_ttl;   // N: on a miss create a stub, win the lease
  std::optional<int64_t> recache_ttl;  // R: win a recache when remaining TTL < token
  std::optional<int64_t> touch_ttl;    // T: update the TTL
};
void EncodeGet(const WireKey& key, const GetRequest& request, const RequestTag& tag,
               std::string* out);

// ms <key> <datalen> [b] F<flags> T<ttl> M<mode> [C<cas>] [I] c [O<n>] [q]\r\n<data>\r\n
struct SetRequest {
  std::string_view value;
  uint32_t client_flags = 0;
  int64_t ttl = 0;  // a token from EncodeTtl
  StoreMode mode = StoreMode::kSet;
  std::optional<uint64_t> compare_cas;  // C: store only if the CAS matches
  bool invalidate = false;              // I (with C): store but stay stale if the CAS is older
};
void EncodeSet(const WireKey& key, const SetRequest& request, const RequestTag& tag,
               std::string* out);

// md <key> [b] [C<cas>] [I T<ttl>] [O<n>] [q]
struct DeleteRequest {
  std::optional<uint64_t> compare_cas;
  std::optional<int64_t> invalidate_ttl;  // I + T: mark stale instead of deleting
};
void EncodeDelete(const WireKey& key, const DeleteRequest& request, const RequestTag& tag,
                  std::string* out);

// ma <key> [b] v M<I|D> D<delta> [N<ttl> J<initial>] [O<n>] [q]
struct ArithmeticRequest {
  bool increment = true;
  uint64_t delta = 1;
  std::optional<int64_t> create_ttl;  // N: create with `initial` on a miss
  uint64_t initial = 0;               // J
};
void EncodeArithmetic(const WireKey& key, const ArithmeticRequest& request, const RequestTag& tag,
                      std::string* out);

// mn: answered by MN after everything sent before it.
void EncodeNoop(std::string* out);

struct Response {
  enum class Code {
    kValue,        // VA <len> <flags>: a hit, with the value
    kHit,          // HD: success / a hit without the value
    kMiss,         // EN
    kNotStored,    // NS
    kExists,       // EX: CAS mismatch
    kNotFound,     // NF
    kNoop,         // MN
    kError,        // ERROR: unknown command
    kClientError,  // CLIENT_ERROR <message>
    kServerError,  // SERVER_ERROR <message> (the server may close the connection)
  };
  Code code = Code::kMiss;
  std::string value;    // kValue only
  std::string message;  // the text of an error line
  // Return flags, when present.
  std::optional<uint32_t> client_flags;  // f
  std::optional<uint64_t> cas;           // c
  std::optional<int64_t> ttl;            // t: remaining seconds, -1 = never expires
  std::optional<uint32_t> opaque;        // O
  bool won = false;                      // W: this client should recompute and store
  bool stale = false;                    // X: the item is stale
  bool lost = false;                     // Z: another client already won
};

// Turns a byte stream into responses. Feed bytes as they arrive, in any
// pieces (a response may be split anywhere); take complete responses with
// Next(). A malformed stream is an error: the parser then stays failed and the
// connection must be reset, since nothing after it can be trusted.
class ResponseParser {
 public:
  // REQUIRES: max_value_size bounds the VA lengths accepted (a larger length
  // is malformed, not an allocation).
  explicit ResponseParser(size_t max_value_size = 64 << 20) : max_value_size_(max_value_size) {}

  void Feed(std::string_view bytes);
  // The next complete response, nullopt if more bytes are needed, or
  // DataLoss naming what was malformed (sticky).
  absl::StatusOr<std::optional<Response>> Next();
  // Bytes received but not yet consumed.
  size_t buffered() const { return buffer_.size() - consumed_; }
  void Reset();

 private:
  std::string buffer_;
  size_t consumed_ = 0;
  size_t max_value_size_;
  absl::Status failed_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_PROTOCOL_META_PROTOCOL_H_
