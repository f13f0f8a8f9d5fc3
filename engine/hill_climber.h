// How big W-TinyLFU's admission window should be, learned from the hit ratio
// at run time (Einziger, Eytan, Friedman, Manes, "Adaptive Software Cache
// Management", Middleware 2018), with the constants of Caffeine's climber.
//
// Recency-heavy workloads want a large window (an item must be hit again soon
// after it arrives), frequency-heavy ones a small one (the sketch's verdict
// decides). The climber samples the hit ratio over a fixed number of requests
// and moves the window's target size by a step: in the same direction as the
// last move if the hit ratio did not fall, the other way if it did. Steps
// shrink by 2% per sample so the size settles; a change of the hit ratio by 5
// points or more restarts them at full size (6.25% of the capacity), since the
// workload has changed. The first step shrinks the window.
//
// Sizes are in the unit of the capacity (bytes or items). Not thread-safe: a
// stripe uses it under its lock.

#ifndef TIERCACHE_ENGINE_HILL_CLIMBER_H_
#define TIERCACHE_ENGINE_HILL_CLIMBER_H_

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace tiercache::engine_internal {

class HillClimber {
 public:
  static constexpr double kStepFraction = 0.0625;
  static constexpr double kStepDecay = 0.98;
  static constexpr double kRestartThreshold = 0.05;

  // `capacity`: the cache's size; `sample_requests`: requests per sample (the
  // frequency sketch's aging period, so both see the same stretch of time).
  // The climber keeps no counters of its own: it is handed the stripe's
  // running hit and miss totals, which a hit writes anyway (a counter of its
  // own would be one more cache line written per hit).
  void Reset(size_t capacity, size_t sample_requests, uint64_t hits, uint64_t misses) {
    capacity_ = capacity;
    sample_requests_ = sample_requests == 0 ? 1 : sample_requests;
    sample_hits_ = hits;
    sample_misses_ = misses;
    previous_hit_ratio_ = 0;
    step_ = -kStepFraction * static_cast<double>(capacity);
  }

  // The change to make to the window's target size (positive: grow it), once
  // the requests since the last sample (from the running totals) make a
  // sample; 0 in between.
  int64_t TakeAdjustment(uint64_t hits, uint64_t misses) {
    const uint64_t sample_hits = hits - sample_hits_;
    const uint64_t requests = sample_hits + (misses - sample_misses_);
    if (requests < sample_requests_) return 0;
    const double hit_ratio = static_cast<double>(sample_hits) / static_cast<double>(requests);
    const double change = hit_ratio - previous_hit_ratio_;
    const double amount = change >= 0 ? step_ : -step_;
    const double direction = amount >= 0 ? 1 : -1;
    step_ = std::abs(change) >= kRestartThreshold
                ? kStepFraction * static_cast<double>(capacity_) * direction
                : kStepDecay * amount;
    previous_hit_ratio_ = hit_ratio;
    sample_hits_ = hits;
    sample_misses_ = misses;
    return static_cast<int64_t>(amount);
  }

  double step() const { return step_; }

 private:
  size_t capacity_ = 0;
  uint64_t sample_requests_ = 1;
  uint64_t sample_hits_ = 0;  // the totals when the current sample began
  uint64_t sample_misses_ = 0;
  double previous_hit_ratio_ = 0;
  double step_ = 0;
};

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_HILL_CLIMBER_H_
