// The client layer's internal API: the only code in mirror/ that encodes a
// request, picks a connection or reads a response. Everything above it —
// the public MemcachedClient, the Mirror (replication/) and TieredCache
// (tiered/) — speaks to memcached through the typed calls below and never
// sees a wire key being written, a token or a socket.
//
// Shape. Every call is one of two kinds:
//   - a single request (Fetch, Store, Delete, Touch, Arithmetic) that
//     returns its answer, typed: a miss is `found == false` or a
//     StoreResult, never a status; a status is returned only when memcached
//     could not answer (timeout, down, refused, desync);
//   - a pipelined batch: FetchMany sends one batch per server (or several on
//     a long list) before awaiting any; the Mirror fills WriteBatches, sends
//     each with Send() (which returns a WriteTicket at once) and collects its
//     outcome with Await(). A non-blocking public API can be a thin layer over
//     Send/Await.
//
// Validation. The memcached limits are checked here and only here: the wire
// key (prefix + key, base64 when needed, at most 250 bytes), the item size
// (key + value + header under max_item_size) and the TTL (positive, and
// before memcached's 2038 horizon). The rules shared with the L1 (an empty
// key, a non-positive TTL) come from common/validate.h, so every layer says
// the same thing about the same input.
//
// Thread-safe: a ClientCore is shared by every thread of the process.

#ifndef TIERCACHE_MIRROR_CLIENT_CLIENT_CORE_H_
#define TIERCACHE_MIRROR_CLIENT_CLIENT_CORE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/connection.h"
#include "client/health.h"
#include "client/ketama.h"
#include "client/latency.h"
#include "mutex.h"
#include "protocol/meta_protocol.h"
#include "tiercache/memcached.h"
#include "tiercache/types.h"

namespace tiercache::mirror_internal {

// What one get asks memcached for (`mg <key> k ...`: the key is always
// echoed and checked).
struct FetchOptions {
  bool value = true;  // false: flags, CAS and TTL only (a revalidation)
  // N: on a miss, create an empty stub living this long and win its lease.
  std::optional<absl::Duration> lease_ttl;
  // R: win the right to recache when the remaining TTL is below this.
  std::optional<absl::Duration> recache_below;
  // t: the remaining TTL. FetchMany without it (and without a lease or a
  // recache) sends one classic multi-key `gets` per part instead of an `mg`
  // per key: memcached spends less CPU per key on it (docs/performance.md,
  // "Issue 12"). Its answers
  // carry no TTL (Fetched::ttl_known is false); keys that need base64 still
  // go as `mg`.
  bool ttl = true;
};

// memcached's answer to a get.
struct Fetched {
  bool found = false;  // EN: false, and nothing else is set
  std::string value;   // with FetchOptions::value
  uint32_t flags = 0;
  uint64_t cas = 0;
  // The item's remaining TTL as memcached counts it (whole seconds);
  // InfiniteDuration when it does not expire, or when it is not known.
  absl::Duration remaining = absl::InfiniteDuration();
  bool ttl_known = true;  // false: a classic gets answered (see FetchOptions::ttl)
  bool won = false;       // W: this client should (re)compute and store
  bool lost = false;      // Z: another client already won
  bool stale = false;     // X: the item was marked stale
  // The empty item `lease_ttl` creates, which answers W to its first reader
  // and Z to the others until a value is stored over it. (A real empty value
  // inside a recache window looks the same; treating it as a stub only makes
  // its readers wait for the refresh.)
  bool IsLeaseStub() const { return found && value.empty() && (won || lost); }
  // As the public Item, with its expiry measured from `now`.
  Item ToItem(absl::Time now) &&;
};

// A store's answer: kStored with the item's new CAS, or why not.
struct Stored {
  StoreResult result = StoreResult::kNotStored;
  uint64_t cas = 0;  // kStored only
};

// A write the Mirror queues: checked and in wire form (PrepareWrite), not yet
// encoded. `value` is the caller's; it must live until WriteBatch::Add.
struct PreparedWrite {
  enum class Kind : uint8_t { kSet, kDelete, kTouch };
  Kind kind = Kind::kSet;
  WireKey key;
  std::string_view value;
  uint32_t flags = 0;
  int64_t ttl_token = 0;    // kSet, kTouch
  size_t server = 0;        // where it goes: the key's primary, or the gutter
  size_t encoded_size = 0;  // about what it adds to a batch (for queue bounds)
  // The routing it was prepared under (ClientCore::RoutingEpoch): a batch
  // holds writes of one epoch, and is not sent once the epoch has moved on.
  uint64_t epoch = 0;
  // The pool it was placed in (ClientCore::topology_version): the Mirror
  // places a queued batch of an older pool again (ClientCore::Replace)
  // before it sends it.
  uint64_t version = 0;
};

// Quiet writes for one server, encoded as they are added and sent in one
// piece: memcached answers only the writes it refuses, and the end marker.
// Made by ClientCore::NewWriteBatch; its tokens are reserved on the
// connection that will send it.
class WriteBatch {
 public:
  WriteBatch(WriteBatch&&) = default;
  WriteBatch& operator=(WriteBatch&&) = default;

  // REQUIRES: size() < capacity(), write.server == server() and
  // write.epoch == epoch().
  void Add(const PreparedWrite& write);
  size_t server() const { return server_; }
  uint64_t epoch() const { return epoch_; }
  uint64_t version() const { return version_; }
  size_t size() const { return requests_.size(); }
  size_t capacity() const { return capacity_; }
  size_t bytes() const { return requests_.bytes().size(); }

 private:
  friend class ClientCore;
  WriteBatch(size_t server, uint64_t epoch, uint64_t version, Connection* connection,
             size_t capacity)
      : server_(server),
        epoch_(epoch),
        version_(version),
        connection_(connection),
        capacity_(capacity),
        requests_(connection->ReserveOpaque(capacity + 1)) {}
  // What Replace needs to prepare write i again: its value is in the
  // encoded bytes.
  struct Entry {
    PreparedWrite::Kind kind;
    uint32_t flags;
    int64_t ttl_token;
    size_t value_offset;
    size_t value_size;
  };
  size_t server_;
  uint64_t epoch_;
  uint64_t version_;
  std::vector<Entry> entries_;
  Connection* connection_;
  size_t capacity_;
  RequestBatch requests_;
};

// A sent WriteBatch, to be awaited once.
class WriteTicket {
 public:
  WriteTicket() = default;
  size_t size() const { return size_; }

 private:
  friend class ClientCore;
  Connection* connection_ = nullptr;
  Connection::Ticket exchange_;  // null if it could not be sent
  absl::Status send_status_;     // why not
  size_t size_ = 0;
};

// What became of a batch's writes.
struct BatchOutcome {
  // Not OK: the batch as a whole failed (not sent, timed out, the connection
  // broke, or an error line that names no write); every write not listed in
  // `refused` failed with this.
  absl::Status status;
  // Writes memcached refused one by one: the index in the batch, and why.
  std::vector<std::pair<size_t, absl::Status>> refused;
};

class ClientCore {
 public:
  // InvalidArgument naming the option that is wrong; servers are not
  // contacted.
  static absl::StatusOr<std::unique_ptr<ClientCore>> Create(const MemcachedOptions& options);

  ~ClientCore();
  // As given to Create (`servers` is the first pool: ServerStates() has the
  // current one).
  const MemcachedOptions& options() const { return options_; }
  // Every server this client has had, by id (0, 1, ...: ids are never
  // reused): the primaries, the gutter pool, and servers SetServers removed.
  size_t server_count() const { return Current().by_id.size(); }
  // The place in the current primary list of the server a key lives on:
  // libmemcached's ketama over the pool, by the key without the prefix (as
  // libmemcached hashes a namespaced key).
  size_t ServerIndexFor(std::string_view key) const { return Current().PrimaryFor(key); }
  // Its name, as configured.
  const std::string& ServerNameFor(std::string_view key) const {
    const Topology& t = Current();
    return t.by_id[t.primaries[t.PrimaryFor(key)]]->name;
  }
  // Where a request for `key` goes now: the id of its primary, or while that
  // is down of the gutter server for the key (`gutter`: every TTL written
  // there is capped at gutter_ttl). Unavailable, naming why, when the
  // primary is down and there is no gutter pool. `write`: a store, delete,
  // touch or counter (refused while the primary's rejoin step runs; see
  // Rejoin in client_core.cc).
  struct Route {
    size_t server = 0;
    bool gutter = false;
  };
  absl::StatusOr<Route> RouteFor(std::string_view key, bool write) const;
  // The routing epoch a write to server `id` is prepared under: that
  // server's transitions for a primary; every transition of the pool for the
  // gutter (its writes belong to whichever primaries are down).
  uint64_t RoutingEpoch(size_t id) const;
  // Bumped by every SetServers.
  uint64_t topology_version() const { return Current().version; }
  // The primaries, then the gutter pool, in configured order.
  std::vector<ServerStatus> ServerStates() const;
  L2Latencies Latencies() const { return latency_.Snapshot(); }
  // Records a latency measured above the client (TieredCache's lease waits).
  void RecordLatency(L2Op op, absl::Duration took) {
    if (LatencyRecorder* recorder = LatencyRecorderIfOn()) recorder->Record(op, took);
  }
  // Replaces the primary pool (the gutter pool stays). Keys are placed by
  // ketama over the new list from the next call on; calls in flight finish
  // on the servers they started on; connections to removed servers close
  // once idle and are not reopened. InvalidArgument for a list Create would
  // refuse, with nothing changed.
  absl::Status SetServers(const std::vector<std::string>& servers);
  // --- Validation (memcached's limits) -------------------------------------
  absl::StatusOr<WireKey> Key(std::string_view key) const;
  absl::Status CheckValue(const WireKey& key, size_t value_size) const;
  // The TTL token for `ttl` (nullopt: default_ttl), read against the real
  // clock: memcached's clock is the wall clock. `gutter`: capped at
  // gutter_ttl.
  absl::StatusOr<int64_t> TtlToken(std::optional<absl::Duration> ttl, bool gutter = false) const;
  // Everything a write of `value_size` bytes under `key` with `ttl` must meet.
  absl::Status CheckWrite(std::string_view key, size_t value_size,
                          std::optional<absl::Duration> ttl) const;

  // --- Single requests -----------------------------------------------------
  absl::StatusOr<Fetched> Fetch(std::string_view key, const FetchOptions& options = {});
  // A store in `mode`; with `cas`, only if the item's CAS is still that.
  absl::StatusOr<Stored> Store(std::string_view key, std::string_view value,
                               const WriteOptions& options, StoreMode mode,
                               std::optional<uint64_t> cas = std::nullopt);
  // True if the key was there (and, with `cas`, had that CAS) and is gone.
  absl::StatusOr<bool> Delete(std::string_view key, std::optional<uint64_t> cas = std::nullopt);
  absl::StatusOr<bool> Touch(std::string_view key, absl::Duration ttl);
  // NotFound when the key is missing; FailedPrecondition for a non-number.
  absl::StatusOr<uint64_t> Arithmetic(std::string_view key, uint64_t delta, bool increment);

  // --- Pipelined batches ---------------------------------------------------
  // The answers to gets of `keys`, in their order (a miss is found == false),
  // in one pipelined round trip per server; and, for the keys of a primary
  // found refusing connections (so marked down) or removed by SetServers
  // meanwhile, one more where they are placed now, as a single call is
  // retried once (within the same deadline).
  absl::StatusOr<std::vector<Fetched>> FetchMany(absl::Span<const std::string_view> keys,
                                                 const FetchOptions& options = {});

  // Checks a write and puts it in wire form, or says why it cannot be sent.
  absl::StatusOr<PreparedWrite> PrepareWrite(PreparedWrite::Kind kind, std::string_view key,
                                             std::string_view value = {},
                                             const WriteOptions& options = {}) const;
  // An empty batch for `server`, for up to `capacity` writes. Every batch of
  // a server goes on the same connection, so they reach memcached in the
  // order they are sent.
  // `expected_bytes`: room reserved for the encoded writes (a guess from
  // earlier batches saves regrowing a large buffer while filling it).
  // `server`, `epoch` and `version` as a PreparedWrite has them.
  WriteBatch NewWriteBatch(size_t server, uint64_t epoch, uint64_t version, size_t capacity,
                           size_t expected_bytes = 0);
  // Write `i` of a batch of an older pool (topology_version), prepared again
  // for the current one: routed anew, its TTL capped if it now goes to the
  // gutter, its value a view into `batch` (valid while `batch` lives).
  // `user_key` is the key it was prepared from.
  absl::StatusOr<PreparedWrite> Replace(const WriteBatch& batch, size_t i,
                                        std::string_view user_key) const;
  // Puts the batch on the wire (ended by its marker) and returns at once; a
  // failure to send is reported by Await. A batch whose routing epoch has
  // moved on (its server, or with a gutter pool any server, went down or
  // came back since its writes were prepared) is not sent: its writes might
  // land where the key is no longer read, or on a primary after its rejoin
  // flush, and fail as a whole (Unavailable).
  WriteTicket Send(WriteBatch batch);
  // Unavailable if Send would drop `batch` for its routing epoch (above).
  absl::Status CheckEpoch(const WriteBatch& batch) const;
  // Waits (up to op_timeout) for the batch's answers.
  BatchOutcome Await(WriteTicket& ticket);

 private:
  struct Server {
    std::string name;  // as configured
    Endpoint endpoint;
    bool gutter = false;
    size_t id = 0;
    ServerHealth* health = nullptr;  // the monitor's
    std::vector<std::unique_ptr<Connection>> connections;
    // Each thread keeps to one connection (threads are dealt out round-robin
    // on first use): a thread alone on its connection reads its own answers
    // with no handoff, and threads that share one pipeline their requests.
    Connection& Pick() {
      thread_local const size_t slot = next_thread.fetch_add(1, std::memory_order_relaxed);
      return *connections[slot % connections.size()];
    }
    static inline std::atomic<size_t> next_thread{0};
  };
  // The pool as one immutable snapshot: the request path reads it with one
  // atomic load and no reference count. SetServers publishes a new one.
  struct Topology {
    uint64_t version = 0;
    std::vector<std::shared_ptr<Server>> by_id;  // every server ever, by id
    std::vector<size_t> primaries;               // ids, in configured order
    std::vector<size_t> gutters;
    std::unique_ptr<Ketama> ketama;         // null with one primary
    std::unique_ptr<Ketama> gutter_ketama;  // null with fewer than two gutter servers
    size_t PrimaryFor(std::string_view key) const {
      return ketama == nullptr ? 0 : ketama->ServerFor(key);
    }
  };

  explicit ClientCore(const MemcachedOptions& options) : options_(options) {}
  const Topology& Current() const { return *topology_.load(std::memory_order_acquire); }
  // The recorder, or null with MemcachedOptions::record_latency off.
  LatencyRecorder* LatencyRecorderIfOn() const {
    return options_.record_latency ? &latency_ : nullptr;
  }
  // RouteFor in the topology `t` (a call keeps to one snapshot).
  absl::StatusOr<Route> RouteIn(const Topology& t, std::string_view key, bool write) const;
  absl::Status CheckTlsTarget(const Endpoint& endpoint) const;
  // Sets a queued write's server, routing epoch and pool version; returns
  // its route (gutter or not).
  absl::StatusOr<Route> PlaceWrite(std::string_view key, PreparedWrite* write) const;
  absl::Time Deadline() const { return absl::Now() + options_.op_timeout; }
  // A Server for `name` (checked), with its connections and a health entry.
  absl::StatusOr<std::shared_ptr<Server>> NewServer(const std::string& name, bool gutter,
                                                    size_t id);
  // One request for `key`, added to a batch by `encode(wire_key, gutter,
  // &batch)`, and the response that provably answers it. A request that
  // fails because its primary just went down is sent again to the gutter.
  template <typename EncodeFn>
  absl::StatusOr<Response> Exchange(L2Op op, std::string_view key, bool write, EncodeFn&& encode);
  // The keys of FetchMany's first round to be asked again, and the first
  // failure that sent them there (the call's error if there is no time left
  // to ask them).
  struct FetchAgain {
    std::vector<size_t> keys;  // indexes into FetchMany's `keys`
    absl::Status why;
  };
  // One round of FetchMany in the topology `t`: the keys at `only`'s
  // indexes (all of `keys` if null), their answers put in `found` at the
  // same indexes. With `again`, a part whose server just went down or was
  // removed (see FetchMany) does not fail the round: its keys are added to
  // `again`.
  absl::Status FetchOnce(const Topology& t, absl::Span<const std::string_view> keys,
                         const std::vector<size_t>* only, const FetchOptions& options,
                         absl::Time deadline, std::vector<Fetched>* found, FetchAgain* again);
  // The monitor's probe of server `id`: a round trip on a connection of its
  // own, and for a primary with a gutter pool the rejoin step (see Rejoin in
  // client_core.cc).
  absl::Status Probe(size_t id, absl::Time down_since);
  absl::Status Rejoin(Connection& connection, const Server& server, absl::Time down_since);
  absl::Status FlushRefused(const Server& server) const;

  const MemcachedOptions options_;
  ConnectionOptions connection_options_;
  mutable LatencyRecorder latency_;  // its cells are atomics: recording is not a change
  // Declared before the topologies: destroyed after them (the connections
  // point at its ServerHealth entries).
  std::unique_ptr<HealthMonitor> monitor_;
  // SetServers, one at a time.
  common_internal::Mutex topology_mu_;
  // Every topology ever published, kept for the client's life so that a
  // call still reading an old one never races its destruction (per change:
  // the id list and a ketama ring, about 2.5 KB per server; removed
  // servers' sockets are closed; the same list again is a no-op).
  std::vector<std::unique_ptr<Topology>> topologies_ ABSL_GUARDED_BY(topology_mu_);
  std::atomic<const Topology*> topology_{nullptr};
};

// The core under a public client (for the Mirror and TieredCache).
ClientCore& CoreOf(MemcachedClient& client);

// A response that is not one of the request's normal answers, as a status
// naming `what` was asked (CLIENT_ERROR, SERVER_ERROR, ERROR, ...).
absl::Status UnexpectedResponse(const Response& r, std::string_view what);

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_CLIENT_CLIENT_CORE_H_
