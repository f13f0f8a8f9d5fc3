#include "client/latency.h"

#include <algorithm>

namespace tiercache::mirror_internal {
namespace {

size_t ThreadStripe() {
  static std::atomic<size_t> next{0};
  thread_local const size_t stripe = next.fetch_add(1, std::memory_order_relaxed);
  return stripe;
}

}  // namespace

void LatencyRecorder::Record(L2Op op, absl::Duration took) {
  const int64_t ns = std::max<int64_t>(0, absl::ToInt64Nanoseconds(took));
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(kBoundsNs.begin(), kBoundsNs.end(), ns) - kBoundsNs.begin());
  Cell& cell = stripes_[ThreadStripe() % kStripes].ops[static_cast<size_t>(op)];
  cell.counts[bucket].fetch_add(1, std::memory_order_relaxed);
  cell.sum_ns.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
}

L2Latencies LatencyRecorder::Snapshot() const {
  L2Latencies latencies;
  for (size_t op = 0; op < kL2OpCount; ++op) {
    LatencyHistogram& h = latencies.by_op[op];
    h.counts.assign(kBuckets, 0);
    uint64_t sum_ns = 0;
    for (const Stripe& stripe : stripes_) {
      const Cell& cell = stripe.ops[op];
      for (size_t b = 0; b < kBuckets; ++b) {
        h.counts[b] += cell.counts[b].load(std::memory_order_relaxed);
      }
      sum_ns += cell.sum_ns.load(std::memory_order_relaxed);
    }
    for (uint64_t c : h.counts) h.count += c;
    h.sum_seconds = static_cast<double>(sum_ns) * 1e-9;
  }
  return latencies;
}

}  // namespace tiercache::mirror_internal
