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
  void Reset(size_t capacity, size_t sample_requests) {
    capacity_ = capacity;
    sample_requests_ = sample_requests == 0 ? 1 : sample_requests;
    hits_ = misses_ = 0;
    previous_hit_ratio_ = 0;
    step_ = -kStepFraction * static_cast<double>(capacity);
  }

  void RecordHit() { ++hits_; }
  void RecordMiss() { ++misses_; }

  // The change to make to the window's target size (positive: grow it), once
  // a sample is complete; 0 in between.
  int64_t TakeAdjustment() {
    const uint64_t requests = hits_ + misses_;
    if (requests < sample_requests_) return 0;
    const double hit_ratio = static_cast<double>(hits_) / static_cast<double>(requests);
    const double change = hit_ratio - previous_hit_ratio_;
    const double amount = change >= 0 ? step_ : -step_;
    const double direction = amount >= 0 ? 1 : -1;
    step_ = std::abs(change) >= kRestartThreshold
                ? kStepFraction * static_cast<double>(capacity_) * direction
                : kStepDecay * amount;
    previous_hit_ratio_ = hit_ratio;
    hits_ = misses_ = 0;
    return static_cast<int64_t>(amount);
  }

  double step() const { return step_; }

 private:
  size_t capacity_ = 0;
  uint64_t sample_requests_ = 1;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  double previous_hit_ratio_ = 0;
  double step_ = 0;
};

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_HILL_CLIMBER_H_
