// The L2 as the tiered layer sees it: the shared memcached pool, the old pool
// of a warm-up, and the replication queue in front of them — as typed calls,
// with no wire format and no connection in sight.
//
// TieredCache talks to L2 only through this interface. Production uses
// MemcachedTier (the ClientCore of each pool plus a Mirror); unit tests use
// tests/unit/fake_l2.h, which keeps memcached's semantics for the calls below
// (CAS, leases, recache windows, TTLs) in a map on a FakeClock and fails on
// demand, so every state transition of docs/tiered.md is tested without a
// server and without sleeping.
//
// Every call returns memcached's answer or, when it could not answer, a
// status (Unavailable, DeadlineExceeded, DataLoss, ...). Bad input is
// InvalidArgument from the Check* calls, before anything is sent.

#ifndef TIERCACHE_MIRROR_TIERED_L2_TIER_H_
#define TIERCACHE_MIRROR_TIERED_L2_TIER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client_core.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"
#include "tiercache/types.h"

namespace tiercache::mirror_internal {

class L2Tier {
 public:
  virtual ~L2Tier() = default;

  // --- memcached's limits --------------------------------------------------
  // The key's wire form fits (prefix + key, base64 when needed, <= 250 bytes).
  virtual absl::Status CheckKey(std::string_view key) const = 0;
  // A write of `value_size` bytes with `ttl` (nullopt: default_ttl) fits.
  virtual absl::Status CheckWrite(std::string_view key, size_t value_size,
                                  std::optional<absl::Duration> ttl) const = 0;
  virtual absl::Duration default_ttl() const = 0;
  virtual absl::Duration op_timeout() const = 0;

  // --- The primary pool, directly ------------------------------------------
  virtual absl::StatusOr<Fetched> Fetch(std::string_view key, const FetchOptions& options) = 0;
  // The answers for `keys`, in order, in one round trip per server (and one
  // more for the keys of a server found down, as ClientCore::FetchMany).
  virtual absl::StatusOr<std::vector<Fetched>> FetchMany(absl::Span<const std::string_view> keys,
                                                         const FetchOptions& options) = 0;
  virtual absl::StatusOr<Stored> Store(std::string_view key, std::string_view value,
                                       const WriteOptions& options, StoreMode mode,
                                       std::optional<uint64_t> cas) = 0;
  // True if the key was there (with `cas`, at that CAS) and is now gone.
  virtual absl::StatusOr<bool> Delete(std::string_view key, std::optional<uint64_t> cas) = 0;
  virtual absl::StatusOr<uint64_t> Arithmetic(std::string_view key, uint64_t delta,
                                              bool increment) = 0;

  // --- The old pool of a warm-up (absent: has_fallback() is false) --------
  virtual bool has_fallback() const = 0;
  virtual absl::StatusOr<Fetched> FetchFallback(std::string_view key) = 0;
  virtual absl::StatusOr<bool> DeleteFallback(std::string_view key) = 0;

  // --- Replication (the Mirror) --------------------------------------------
  // Queues (kAsync) or sends (kSync) the key's new value; see mirror.h.
  virtual absl::Status Replicate(std::string_view key, std::string_view value,
                                 const WriteOptions& options) = 0;
  virtual bool replicates_async() const = 0;
  // Writes accepted, and how many of the first ones have finished: the n-th
  // write accepted has reached memcached (or failed) once finished >= n.
  virtual uint64_t accepted_writes() const = 0;
  virtual uint64_t finished_writes() const = 0;
  virtual absl::Status Flush(absl::Duration timeout) = 0;
  virtual MirrorStats mirror_stats() const = 0;
  // The L2 servers and their health (MemcachedClient::ServerStates).
  virtual std::vector<ServerStatus> server_states() const = 0;
  // The primary pool's request latencies, and a latency measured above it
  // (lease waits).
  virtual L2Latencies latencies() const = 0;
  virtual void RecordLatency(L2Op op, absl::Duration took) = 0;
  // MemcachedClient::SetServers of the primary pool.
  virtual absl::Status SetServers(const std::vector<std::string>& servers) = 0;
};

// The real L2: memcached pools through their ClientCores, replication
// through a Mirror on the primary's client.
struct MemcachedTierOptions {
  MemcachedOptions pool;
  std::vector<std::string> fallback_servers;  // empty: no old pool
  MirrorOptions mirror;
};
absl::StatusOr<std::unique_ptr<L2Tier>> MakeMemcachedTier(MemcachedTierOptions options);

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_L2_TIER_H_
