// How long L2 requests take, by operation, in fixed buckets: recorded on
// every request, read by Stats() and the metrics (tiercache::metrics).
//
// Why striped cells: a request's record is two relaxed additions to a cell
// of its thread's stripe (a thread keeps its stripe for life), so threads of
// one client do not contend for a lock or a cache line; a snapshot sums the
// stripes. 16 stripes of 8 operations x 18 counters: 18 KiB per client.

#ifndef TIERCACHE_MIRROR_CLIENT_LATENCY_H_
#define TIERCACHE_MIRROR_CLIENT_LATENCY_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tiercache/memcached.h"

namespace tiercache::mirror_internal {

class LatencyRecorder {
 public:
  void Record(L2Op op, absl::Duration took);
  L2Latencies Snapshot() const;

  // The buckets' upper bounds in nanoseconds (LatencyHistogram::Bounds).
  static constexpr std::array<int64_t, 16> kBoundsNs = {
      50'000,      100'000,       250'000,       500'000,      1'000'000,   2'500'000,
      5'000'000,   10'000'000,    25'000'000,    50'000'000,   100'000'000, 250'000'000,
      500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000};
  static constexpr size_t kBuckets = kBoundsNs.size() + 1;

 private:
  static constexpr size_t kStripes = 16;
  struct Cell {
    std::array<std::atomic<uint64_t>, kBuckets> counts{};
    std::atomic<uint64_t> sum_ns{0};
  };
  struct alignas(64) Stripe {
    std::array<Cell, kL2OpCount> ops;
  };
  std::array<Stripe, kStripes> stripes_;
};

// Records the time from `start` to its own destruction, whatever way the
// scope ends (an error is a latency the caller saw too); a null recorder
// records nothing.
class ScopedLatency {
 public:
  ScopedLatency(LatencyRecorder* recorder, L2Op op, absl::Time start)
      : recorder_(recorder), op_(op), start_(start) {}
  ~ScopedLatency() {
    if (recorder_ != nullptr) recorder_->Record(op_, absl::Now() - start_);
  }
  ScopedLatency(const ScopedLatency&) = delete;
  ScopedLatency& operator=(const ScopedLatency&) = delete;

 private:
  LatencyRecorder* const recorder_;
  const L2Op op_;
  const absl::Time start_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_CLIENT_LATENCY_H_
