// tiercache/mirror.h — replicating L1 writes to memcached.
//
// A `Mirror` copies the outcome of every L1 write to L2: the key's new value
// (with its flags and TTL) after a set, add, replace, CAS, append, prepend,
// increment or decrement; a delete after a delete; a touch after a touch.
// Replicating the resulting state, not the operation, keeps L2 equal to the
// L1 that wrote last even where the two disagreed before (an L1 `Add` that
// succeeded is a plain set in L2).
//
// Order: writes reach memcached in the order they were handed to the mirror,
// so writes to one key are applied in order.
//
// Asynchronous mode (the default): a write is queued and the call returns at
// once. A background thread sends the queue in pipelined batches of quiet
// requests (memcached answers only failures) ended by a no-op, so a batch of
// hundreds of writes costs one round trip. The queue is bounded: when it is
// full, a set is dropped and counted (the next read falls back to L1 or the
// loader), but a delete — an invalidation — is never dropped silently: the
// caller waits for room up to op_timeout and then gets ResourceExhausted.
// Every failed or dropped write is counted in `Stats()` and reported to
// `on_error`. `Flush(deadline)` returns once everything queued before it has
// been acknowledged by memcached.
//
// Synchronous mode: each call sends its write and returns memcached's answer.

#ifndef TIERCACHE_MIRROR_H_
#define TIERCACHE_MIRROR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tiercache/memcached.h"
#include "tiercache/types.h"

namespace tiercache {

enum class MirrorMode { kAsync, kSync };

struct MirrorOptions {
  MirrorMode mode = MirrorMode::kAsync;
  // Bounds on what waits to be sent: writes, and bytes of keys and values.
  // Either one full makes the queue full.
  size_t max_queued_writes = 1000000;
  size_t max_queued_bytes = 64 << 20;
  // Writes per pipelined batch.
  size_t max_batch = 2048;
  // Called, from the mirror's thread or the caller's, for every write that
  // failed or was dropped. Must not block for long.
  std::function<void(std::string_view key, const absl::Status& why)> on_error;
};

struct MirrorStats {
  uint64_t queued = 0;      // writes accepted
  uint64_t replicated = 0;  // acknowledged by memcached
  uint64_t failed = 0;      // refused by memcached or lost with a connection
  uint64_t dropped = 0;     // not queued: the queue was full
  uint64_t queue_depth = 0;
  uint64_t rerouted = 0;  // queued writes placed again after the pool changed (SetServers)
};

class Mirror {
 public:
  // `l2` is not owned and must outlive the mirror.
  static absl::StatusOr<std::unique_ptr<Mirror>> Create(MemcachedClient* l2,
                                                        MirrorOptions options = {});
  // Sends what is queued (up to op_timeout), then stops its thread.
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  // The key now holds `value` (flags and TTL from `options`).
  absl::Status ReplicateValue(std::string_view key, std::string_view value,
                              WriteOptions options = {});
  absl::Status ReplicateDelete(std::string_view key);
  absl::Status ReplicateTouch(std::string_view key, absl::Duration ttl);

  // Waits until every write queued before the call is acknowledged (or has
  // failed and been counted). DeadlineExceeded if that takes longer.
  absl::Status Flush(absl::Duration timeout);

  MirrorStats Stats() const;

  // Writes accepted so far, and how many of the first ones have all finished
  // (acknowledged or failed): the n-th write accepted has reached memcached,
  // or failed, once finished_writes() >= n, even in a pool whose servers
  // answer out of order. Cheap (no lock). TieredCache uses this to tell a
  // copy whose write is still queued from one that memcached has.
  uint64_t accepted_writes() const;
  uint64_t finished_writes() const;

  class Impl;

 private:
  explicit Mirror(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache

#endif  // TIERCACHE_MIRROR_H_
