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
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

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

// Every request carries an opaque token (O<n>) that its answer echoes, and
// may be quiet (q): then a success sends nothing and only failures answer.
// Tokens are written as canonical decimals (no leading zeros), so the echo can
// be compared as a number.
struct RequestTag {
  uint64_t opaque = 0;
  bool quiet = false;
};

// mg <key> [b] [v] f c t k [N<ttl>] [R<ttl>] [T<ttl>] O<n> [q]
// Every get asks for the key back (k): whatever it returns (a value, a CAS, a
// lease) is used only if the echoed key is the one asked for.
struct GetRequest {
  bool value = true;                   // v: return the value (else only metadata)
  std::optional<int64_t> vivify_ttl;   // N: on a miss create a stub, win the lease
  std::optional<int64_t> recache_ttl;  // R: win a recache when remaining TTL < token
  std::optional<int64_t> touch_ttl;    // T: update the TTL
};
void EncodeGet(const WireKey& key, const GetRequest& request, const RequestTag& tag,
               std::string* out);

// ms <key> <datalen> [b] [F<flags>] [T<ttl>] [M<mode>] [C<cas>] [I] [c] O<n> [q]\r\n<data>\r\n
// (F, T and M only when not memcached's defaults 0, 0 and S; c only when
// loud: a quiet store's answers are failures, which carry no CAS)
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

// md <key> [b] [C<cas>] [I T<ttl>] O<n> [q]
struct DeleteRequest {
  std::optional<uint64_t> compare_cas;
  std::optional<int64_t> invalidate_ttl;  // I + T: mark stale instead of deleting
};
void EncodeDelete(const WireKey& key, const DeleteRequest& request, const RequestTag& tag,
                  std::string* out);

// ma <key> [b] v k M<I|D> D<delta> [N<ttl> J<initial>] O<n> [q]
struct ArithmeticRequest {
  bool increment = true;
  uint64_t delta = 1;
  std::optional<int64_t> create_ttl;  // N: create with `initial` on a miss
  uint64_t initial = 0;               // J
};
void EncodeArithmetic(const WireKey& key, const ArithmeticRequest& request, const RequestTag& tag,
                      std::string* out);

// gets <key>*: the classic multi-key get, for plain keys only (no `b` in the
// classic protocol). Answered by `VALUE <key> <flags> <bytes> <cas>` and the
// value for each hit, in the order asked, then `END`. memcached 1.6.18 spends
// less CPU per key on it than on a pipelined `mg` per key (1.2 against 1.6 µs
// in bench/mirror_bench), but it returns no TTL and carries no token: RequestBatch checks each
// VALUE's key against the keys asked, in order, and a batch holding one must end with the tagged
// end marker, which proves that the END it saw was this one's. REQUIRES: keys not empty, none
// base64.
void EncodeMultiGet(absl::Span<const WireKey> keys, std::string* out);

// memcached's `mn` (answered by MN after everything sent before it) is not
// used: MN carries no token (1.6.18 ignores flags on mn), so a duplicated MN
// cannot be told from the real one. Batches end with a tagged marker instead
// (RequestBatch).

struct Response {
  enum class Code {
    kValue,         // VA <len> <flags>: a hit, with the value
    kHit,           // HD: success / a hit without the value
    kMiss,          // EN
    kNotStored,     // NS
    kExists,        // EX: CAS mismatch
    kNotFound,      // NF
    kNoop,          // MN
    kError,         // ERROR: unknown command
    kClientError,   // CLIENT_ERROR <message>
    kServerError,   // SERVER_ERROR <message> (the server may close the connection)
    kClassicValue,  // VALUE <key> <flags> <bytes> [<cas>]: a hit of a classic gets
    kEnd,           // END: the end of a classic gets
    kOk,            // OK: flush_all done
  };
  Code code = Code::kMiss;
  std::string value;    // kValue and kClassicValue only
  std::string message;  // the text of an error line
  // Return flags, when present.
  std::optional<uint32_t> client_flags;  // f
  std::optional<uint64_t> cas;           // c
  std::optional<int64_t> ttl;            // t: remaining seconds, -1 = never expires
  std::optional<uint64_t> opaque;        // O
  std::string key;                       // k: the key echoed, as the server wrote it
  bool key_base64 = false;               // b: `key` is base64
  bool won = false;                      // W: this client should recompute and store
  bool stale = false;                    // X: the item is stale
  bool lost = false;                     // Z: another client already won
  // Set by RequestBatch::Match, not by the parser: the index in its batch of
  // the request this response answers; kUntagged for an error line inside a
  // quiet run (error lines carry no token: the request is unknown) or one
  // that answers the end marker; kEndOfBatch for the end marker's answer.
  static constexpr size_t kUntagged = static_cast<size_t>(-1);
  static constexpr size_t kEndOfBatch = static_cast<size_t>(-2);
  // The END of a classic gets (its request index is of no use to a caller).
  static constexpr size_t kEndOfList = static_cast<size_t>(-3);
  size_t request = kUntagged;
  // For a VALUE of a classic gets: the position of its key in the request's
  // list (set by Match).
  size_t key_index = 0;
};

// Turns a byte stream into responses. Feed bytes as they arrive, in any
// pieces (a response may be split anywhere); take complete responses with
// Next(). A malformed stream is an error: the parser then stays failed and the
// connection must be reset, since nothing after it can be trusted.
//
// "Malformed" is anything memcached 1.6.18 does not send: an unknown code or
// return flag, a flag given twice, a number with leading zeros or a sign
// where memcached writes none, a TTL below -1, a key echo that is empty, over
// 250 bytes or a `b` without a `k`, flags on MN, and on EN (a miss) any flag
// but O, k and b. Whether a well-formed response answers the request it is
// read for is RequestBatch::Match's question, not the parser's.
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

// The commands a batch can hold, for matching answers and naming requests.
enum class Command : uint8_t {
  kGet,
  kSet,
  kDelete,
  kArithmetic,
  kEndMarker,
  kMultiGet,
  kFlushAll,
};

// Requests written to one connection in one piece, and the rules their
// answers must meet. The connection that sends a batch hands it every
// response read while the batch is the oldest outstanding one on that
// connection; Match() decides whether the response provably answers one of
// the batch's requests, so that no response is ever used for a request it
// does not answer.
//
// How a response is matched:
//   - request i carries the token first_opaque + i; tokens come from the
//     connection and are never reused on it, so a token names one request;
//   - a tagged response (every code but MN and error lines) must echo the
//     token of the oldest unanswered request, or of a later one when every
//     request in between is quiet (quiet successes send nothing). Anything
//     else — no token, a token of another batch, of a request already
//     answered, or one that skips a request that must answer — is DataLoss;
//   - its code must be one that request can answer (VA or EN for a get with
//     a value, HD/NS/EX/NF for a store, ...; in a quiet request the success
//     codes memcached hides are not expected either);
//   - gets and arithmetic also ask for the key (k): the echoed key, decoded
//     if base64, must be the one requested. memcached echoes a key in the
//     form its item was stored in (base64 if it was stored with `b`), so the
//     comparison is of the raw bytes;
//   - a batch of quiet requests ends with a loud, tagged marker
//     (`mg tiercache:end-of-batch O<n>`, answered EN or HD): its answer
//     proves that every quiet request before it was answered. memcached's
//     own `mn` would do the job but its MN carries no token, so a duplicated
//     MN would end the next batch early and shift the stream for good;
//   - MN is never expected (this client sends no `mn`);
//   - error lines (ERROR, CLIENT_ERROR, SERVER_ERROR) carry no token. One
//     that memcached sends for a well-formed request it refuses
//     (IsInStepError) answers the oldest unanswered request where that one
//     must answer; inside a run of quiet requests it belongs to an unknown
//     one and is marked Response::kUntagged (its batch fails as a whole; if
//     it was in fact the end marker's answer, the batch ends at its deadline).
//     Any other error line means the server did not read a request as it was
//     framed — memcached then reads the rest of it as a new command and
//     answers that too — so it is DataLoss like a mismatch.
// A DataLoss from Match means the stream no longer follows the requests: the
// connection must be closed and nothing more read from it. PermissionDenied
// means the same, for a reason the caller must fix: memcached -Y answered
// CLIENT_ERROR unauthenticated (it then drops the rest of the stream).
class RequestBatch {
 public:
  // Request i carries the token first_opaque + i, and the end marker the
  // one after the last request's: reserve size() + 1 tokens for a batch that
  // ends with it.
  // REQUIRES: first_opaque + (requests + marker) does not pass 2^64 (tokens
  // come from a connection's counter, which starts at 1 and never wraps in
  // practice; Match compares them as unsigned numbers).
  explicit RequestBatch(uint64_t first_opaque = 0) : first_opaque_(first_opaque) {}
  RequestBatch(RequestBatch&&) = default;
  RequestBatch& operator=(RequestBatch&&) = default;

  // Room for `requests` requests and `bytes` encoded bytes, when the caller
  // knows (a GetMany part, a Mirror batch): no regrowth while encoding.
  void Reserve(size_t requests, size_t bytes) {
    requests_.reserve(requests + 1);  // and the end marker
    bytes_.reserve(bytes);
  }

  // Each appends one request and returns its index in the batch.
  size_t Get(const WireKey& key, const GetRequest& request, bool quiet = false);
  size_t Set(const WireKey& key, const SetRequest& request, bool quiet = false);
  size_t Delete(const WireKey& key, const DeleteRequest& request, bool quiet = false);
  // Never quiet: a quiet `ma` hides its result.
  size_t Arithmetic(const WireKey& key, const ArithmeticRequest& request);
  // A classic `gets` of `keys` (see EncodeMultiGet): its answers are VALUEs
  // for keys of the list, in its order (a miss is skipped), then END.
  // REQUIRES: keys not empty, none base64; no quiet request before it in the
  // batch (a VALUE carries no token, so it can answer only the oldest
  // unanswered request); the batch ends with its marker.
  size_t MultiGet(absl::Span<const WireKey> keys);
  // memcached's `flush_all`: every item stored before it is gone (memcached
  // 1.6 compares CAS values, so nothing stored after it is lost). Answered
  // OK, which carries no token: like a gets' answers, it is accepted only
  // while the flush is the oldest unanswered request. Used once per outage,
  // when a server that was down rejoins (docs/tiered.md, "Gutter pool").
  size_t FlushAll();
  // Appends the end marker, after which the batch is complete when its
  // answer arrives. REQUIRES: at least one request; nothing added after it.
  // Costs memcached one lookup of a key that does not exist (counted in its
  // get_misses).
  void EndWithMarker();
  static constexpr std::string_view kEndMarkerKey = "tiercache:end-of-batch";

  const std::string& bytes() const { return bytes_; }
  // Requests added, not counting the end marker.
  size_t size() const { return requests_.size() - (marked_ ? 1 : 0); }
  uint64_t first_opaque() const { return first_opaque_; }
  // "get 'user:42'": request i as an error message names it.
  std::string Describe(size_t i) const;

  enum class Progress { kMore, kComplete };
  // The next response read for this batch. Sets `response->request`; kComplete
  // once every request (and the end marker) has been answered. DataLoss naming
  // what did not match. REQUIRES: the batch was not complete yet.
  absl::StatusOr<Progress> Match(Response* response);

 private:
  // What request i promised about its answer; its key is in `bytes_`.
  struct Request {
    size_t key_offset;   // a Mirror batch of large values may pass 4 GiB
    uint8_t key_size;    // wire keys are at most 250 bytes; a gets: its first key's
    uint32_t list_size;  // a gets: the bytes of its space-separated key list
    bool key_base64;
    Command command;
    bool value;  // v: a hit carries the value
    bool quiet;
  };
  size_t Add(const WireKey& key, Command command, bool value, bool quiet);
  std::string_view WireKeyOf(const Request& r) const {
    return std::string_view(bytes_).substr(r.key_offset, r.key_size);
  }
  absl::Status CheckCode(size_t i, const Response& response) const;
  absl::Status CheckKey(size_t i, const Response& response) const;

  uint64_t first_opaque_;
  std::string bytes_;
  std::vector<Request> requests_;
  bool marked_ = false;
  size_t next_ = 0;  // requests before this one are answered (or skipped quietly)
  // Within the gets being answered (request list_request_): where in `bytes_`
  // the next key it may answer starts, and that key's index in its list.
  size_t list_request_ = static_cast<size_t>(-1);
  size_t list_cursor_ = 0;
  size_t list_index_ = 0;
  absl::StatusOr<Progress> MatchClassic(Response* response);
};

// ERROR, CLIENT_ERROR or SERVER_ERROR: a line with no token.
bool IsErrorLine(Response::Code code);
// True for the error lines memcached 1.6.18 sends for well-formed requests it
// refuses (a non-numeric counter, out of memory, an item too large), after
// which the stream is still in step. Any other error line (ERROR, a
// CLIENT_ERROR about the request's format) means the server did not read the
// request as it was framed: nothing after it on the connection is trusted.
bool IsInStepError(const Response& response);

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_PROTOCOL_META_PROTOCOL_H_
