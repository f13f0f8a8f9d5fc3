// tiercache/memcached.h — the L2 client: memcached over its meta protocol.
//
// `MemcachedClient` is thread-safe and meant to be shared: many threads'
// requests are pipelined over a few connections per server, and a calling
// thread reads the responses itself when no other thread is already reading
// (so a lone blocking Get costs one send and one receive, no thread handoff).
//
// Every call has a deadline (`op_timeout`) and no call waits past it. A server
// that refuses connections, or leaves `timeouts_before_down` requests in a
// row unanswered, is marked down: its keys go to the gutter pool if there is
// one, or fail at once with Unavailable naming why. A thread of the client
// probes it in the background, backing off exponentially (with jitter), and
// marks it up when it answers; every transition is counted (ServerStates)
// and reported to `on_server_state`. An idle connection the server has
// closed (a restart) is noticed before a request is sent on it, so the first
// call after a restart works.
//
// Results keep error, miss and hit apart: a call returns a non-OK status only
// when memcached could not answer (timeout, server down, a refused request);
// a miss is `std::nullopt`, `false` or `StoreResult::kNotStored`/`kNotFound`.
//
// Integrity: every request carries an opaque token unique on its connection,
// and gets and counters ask for their key back; a response is used only if
// its token, its key and its kind answer the request. Anything else (a
// duplicated, reordered or unsolicited answer, another key's, garbage) is
// DataLoss naming the server and the mismatch, and the connection is closed
// and replaced: no call ever returns a value that belongs to another key.
// See docs/design.md, "How a response is matched to its request".
//
// Keys: `key_prefix + key` must fit memcached's 250 bytes. Keys holding
// spaces, control or non-ASCII bytes travel base64-encoded (the `b` flag), so
// no key can inject a command; a key that cannot fit is InvalidArgument and
// nothing is sent. Client flags pass through unchanged (pymemcache reads
// 0 as bytes, 2 as int, 16 as text).

#ifndef TIERCACHE_MEMCACHED_H_
#define TIERCACHE_MEMCACHED_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "tiercache/types.h"

namespace tiercache {

// TLS to memcached (memcached -Z), OpenSSL 3: TLS 1.2 at least, the server's
// certificate chain and name verified unless verify_peer is false. A failure
// (unknown CA, expired or mismatched certificate, a plaintext server) is an
// error naming the cause with OpenSSL's reason, never a fallback to
// plaintext and never a miss.
struct TlsOptions {
  bool enable = false;
  std::string ca_file;    // PEM bundle that must have signed the server; empty: system store
  std::string cert_file;  // client certificate for mutual TLS (optional; with key_file)
  std::string key_file;
  std::string server_name;  // SNI and the name checked; empty: the host of the server entry
  bool verify_peer = true;
};

struct MemcachedOptions {
  // "host:port" (IPv4, IPv6 in brackets, or a name) or a unix socket path
  // (anything starting with '/'). Several servers form a pool.
  std::vector<std::string> servers;
  // A namespace for every key; counted in memcached's 250-byte key limit.
  std::string key_prefix;
  absl::Duration connect_timeout = absl::Seconds(1);
  // No call waits longer than this.
  absl::Duration op_timeout = absl::Milliseconds(500);
  // TTL of writes that do not give one. InfiniteDuration: no expiry.
  absl::Duration default_ttl = absl::InfiniteDuration();
  // The server's item size limit (memcached -I, 1 MiB by default): larger
  // values are refused here, before anything is sent.
  size_t max_item_size = 1 << 20;
  // Connections per server. Each thread keeps to one of them; threads that
  // share a connection pipeline their requests on it.
  size_t connections_per_server = 4;
  // Reconnect backoff while a server is down: starts here, doubles per
  // failed attempt up to the maximum, +-50% jitter.
  absl::Duration reconnect_backoff = absl::Milliseconds(20);
  absl::Duration max_reconnect_backoff = absl::Seconds(2);
  // TLS for every connection of the pool (see TlsOptions).
  TlsOptions tls;
  // memcached's ASCII authentication (memcached -Y <authfile>): sent first
  // on every new connection, before anything else. Both or neither; no
  // spaces or control bytes. Refused credentials are PermissionDenied
  // ("authentication failed for user X on memcached Y"), and the next attempt
  // waits max_reconnect_backoff. The password never appears in a message.
  std::string username;
  std::string password;

  // Failure detection. A server is marked down after a connection to it
  // cannot be made (refused, unreachable, a failed TLS handshake) or after
  // this many requests in a row got no answer within op_timeout (a hung
  // server still accepts connections). While down, its keys go to the gutter
  // pool, or without one fail at once (Unavailable, naming why). It is probed
  // in the background, with the reconnect backoff above, and marked up when a
  // probe is answered.
  uint32_t timeouts_before_down = 3;
  // Called on every transition of a server (up = false: marked down, with
  // why; up = true: back, with OK), on the client's monitor thread, never
  // under a lock of the client: it may call the client. Keep it short.
  std::function<void(std::string_view server, bool up, const absl::Status& why)> on_server_state;

  // A gutter pool ("Scaling Memcache at Facebook", NSDI 2013, 3.3): while a
  // server of `servers` is down, the reads, writes, leases and deletes of its
  // keys go to these servers instead (placed by ketama among themselves), so
  // that replicas keep sharing one copy and one lease per key and the data
  // source is not asked once per replica. Every value written to the gutter
  // expires within gutter_ttl. When the server returns, the first client
  // that saw it down flushes what it held from before the outage, and its
  // keys go back to it. The exact guarantee: docs/tiered.md, "Gutter pool".
  // Empty: no gutter.
  std::vector<std::string> gutter_servers;
  absl::Duration gutter_ttl = absl::Seconds(10);

  // Record every request's latency (Latencies()): two clock reads and two
  // relaxed additions per request.
  bool record_latency = true;
};

// How long L2 requests took, by operation (MemcachedClient::Latencies,
// TieredStats::l2_latency), in fixed buckets. Recorded by the client on
// every request in per-thread cells: no lock and no shared cache line on the
// request path (MemcachedOptions::record_latency turns it off).
enum class L2Op : uint8_t {
  kGet,  // a get, a lease's get included
  kSet,  // every store
  kDelete,
  kTouch,
  kArithmetic,    // incr/decr
  kGetMany,       // one GetMany/GetOrLoadMany round trip, all its servers
  kLeaseWait,     // TieredCache: waiting for another replica's load
  kRevalidation,  // TieredCache: a stale L1 copy's check against L2
};
inline constexpr size_t kL2OpCount = 8;
// "get", "set", "delete", "touch", "incr_decr", "get_many", "lease_wait",
// "revalidation".
std::string_view L2OpName(L2Op op);
struct LatencyHistogram {
  // The buckets' upper bounds in seconds (50 µs .. 5 s), the same for every
  // histogram; a last bucket above the largest follows.
  static const std::vector<double>& Bounds();
  std::vector<uint64_t> counts;  // one per bucket (Bounds().size() + 1), not cumulative
  uint64_t count = 0;
  double sum_seconds = 0;
};
struct L2Latencies {
  std::array<LatencyHistogram, kL2OpCount> by_op;
  const LatencyHistogram& operator[](L2Op op) const { return by_op[static_cast<size_t>(op)]; }
};

// One server as the client sees it (MemcachedClient::ServerStates).
struct ServerStatus {
  std::string server;  // as configured
  bool gutter = false;
  bool up = true;
  absl::Time down_since = absl::InfinitePast();  // when down
  absl::Status last_error;                       // why it was last marked down (or a probe failed)
  uint64_t times_down = 0;                       // up -> down transitions
  uint64_t times_up = 0;                         // down -> up transitions
  uint64_t rerouted = 0;                         // requests for its keys sent to the gutter
};

class MemcachedClient;
namespace mirror_internal {
class ClientCore;  // the client layer's internal API (mirror/client/client_core.h)
ClientCore& CoreOf(MemcachedClient& client);
}  // namespace mirror_internal

class MemcachedClient {
 public:
  // Validates the options (servers are not contacted: a server that is down
  // now is an Unavailable later, not an error here).
  static absl::StatusOr<std::unique_ptr<MemcachedClient>> Create(MemcachedOptions options);
  ~MemcachedClient();
  MemcachedClient(const MemcachedClient&) = delete;
  MemcachedClient& operator=(const MemcachedClient&) = delete;

  // A hit has the value, client flags, CAS and expiry (from the remaining TTL;
  // InfiniteFuture when the item does not expire).
  absl::StatusOr<std::optional<Item>> Get(std::string_view key);
  // The hits among `keys`, fetched in one pipelined round trip per server:
  // a classic multi-key `gets` (memcached serves it with less CPU per key
  // than a meta get each), whose answers carry no TTL: an Item from GetMany
  // has expiry InfiniteFuture, which here means "not known" (Get returns
  // it). (A key that needs base64 cannot travel in a `gets`; the keys sent on
  // the same connection with one go as meta gets and do carry their expiry.)
  absl::StatusOr<absl::flat_hash_map<std::string, Item>> GetMany(
      absl::Span<const std::string_view> keys);

  absl::StatusOr<StoreResult> Set(std::string_view key, std::string_view value,
                                  WriteOptions options = {});
  absl::StatusOr<StoreResult> Add(std::string_view key, std::string_view value,
                                  WriteOptions options = {});
  absl::StatusOr<StoreResult> Replace(std::string_view key, std::string_view value,
                                      WriteOptions options = {});
  // Append/Prepend leave flags and TTL as they are (options are ignored).
  absl::StatusOr<StoreResult> Append(std::string_view key, std::string_view suffix);
  absl::StatusOr<StoreResult> Prepend(std::string_view key, std::string_view prefix);
  // kStored, kExists (someone wrote since `cas` was read) or kNotFound.
  absl::StatusOr<StoreResult> CompareAndSwap(std::string_view key, std::string_view value,
                                             uint64_t cas, WriteOptions options = {});
  absl::StatusOr<bool> Delete(std::string_view key);
  absl::StatusOr<bool> Touch(std::string_view key, absl::Duration ttl);
  // memcached's counters: NotFound when the key is missing.
  absl::StatusOr<uint64_t> Increment(std::string_view key, uint64_t delta);
  absl::StatusOr<uint64_t> Decrement(std::string_view key, uint64_t delta);

  const MemcachedOptions& options() const;
  // Every server, the primaries in configured order and then the gutter pool.
  std::vector<ServerStatus> ServerStates() const;
  // How long this client's requests took, by operation (zeros with
  // record_latency off).
  L2Latencies Latencies() const;
  // Replaces the pool of servers while the client runs (the gutter pool
  // stays). From the next call on, keys are placed exactly as libmemcached's
  // ketama places them over the new list; calls in flight finish on the
  // servers they started on; connections to removed servers close once idle.
  // A Mirror over this client places its queued writes again before sending
  // them, so none is lost to the change. InvalidArgument (nothing changed)
  // for a list Create would refuse. options().servers stays the first list.
  absl::Status SetServers(const std::vector<std::string>& servers);

 private:
  friend mirror_internal::ClientCore& mirror_internal::CoreOf(MemcachedClient& client);
  explicit MemcachedClient(std::unique_ptr<mirror_internal::ClientCore> core);
  std::unique_ptr<mirror_internal::ClientCore> core_;
};

}  // namespace tiercache

#endif  // TIERCACHE_MEMCACHED_H_
