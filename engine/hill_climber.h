// How big W-TinyLFU's admission window should be, learned from the hit ratio
// at run time (Einziger, Eytan, Friedman, Manes, "Adaptive Software Cache
// Management", Middleware 2018), with the constants of Caffeine's climber.
//
// Recency-heavy workloads want a large window (an item must be hit again soon
// after it arrives), frequency-heavy ones a small one (the sketch's verdict
// decides). The climber samples the hit ratio over a number of requests (below)
// and moves the window's target size by a step: in the same direction as the
// last move if the hit ratio did not fall, the other way if it did. Steps
// shrink by 2% per sample so the size settles; a change of the hit ratio by 5
// points or more restarts them at full size (6.25% of the capacity), since the
// workload has changed. The first step shrinks the window.
//
// Two departures from Caffeine, both about the start (a third, in the
// stripe: the climber starts once the stripe is full, not half full). The
// first sample only sets the baseline: compared with "0%", any hit ratio is a
// rise, which sent the window the first step's way however the sample went.
// And samples start short, a fifth of the full period (for the baseline and
// the first move), and grow by half per sample until they reach it (3/10,
// 9/20, 27/40, then all of it), so the window moves while the cache is young
// instead of once per full period (~10x the capacity) from the start: the
// speed-up Caffeine's author proposes (scylladb/scylladb#29391, "start with a
// small period ... and grow it to 10x over time"). On the LIRS traces at 1000
// items, sprite's window (recency pays there) otherwise grew too late: 13
// full samples in the trace.
//
// Sizes are in the unit of the capacity (bytes or items). Not thread-safe: a
// stripe uses it under its lock.

#ifndef TIERCACHE_ENGINE_HILL_CLIMBER_H_
#define TIERCACHE_ENGINE_HILL_CLIMBER_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace tiercache::engine_internal {

class HillClimber {
 public:
  static constexpr double kStepFraction = 0.0625;
  static constexpr double kStepDecay = 0.98;
  static constexpr double kRestartThreshold = 0.05;
  // The first sample's share of the full period, and its growth per sample.
  static constexpr double kFirstPeriodFraction = 0.2;
  static constexpr double kPeriodGrowth = 1.5;

  // `capacity`: the cache's size; `sample_requests`: requests per sample (the
  // frequency sketch's aging period, so both see the same stretch of time).
  // The climber keeps no counters of its own: it is handed the stripe's
  // running hit and miss totals, which a hit writes anyway (a counter of its
  // own would be one more cache line written per hit).
  void Reset(size_t capacity, size_t sample_requests, uint64_t hits, uint64_t misses) {
    capacity_ = capacity;
    full_period_ = static_cast<double>(sample_requests == 0 ? 1 : sample_requests);
    period_ = std::max(1.0, kFirstPeriodFraction * full_period_);
    sample_hits_ = hits;
    sample_misses_ = misses;
    previous_hit_ratio_ = -1;  // no baseline yet
    step_ = -kStepFraction * static_cast<double>(capacity);
  }

  // The change to make to the window's target size (positive: grow it), once
  // the requests since the last sample (from the running totals) make a
  // sample; 0 in between.
  int64_t TakeAdjustment(uint64_t hits, uint64_t misses) {
    const uint64_t sample_hits = hits - sample_hits_;
    const uint64_t requests = sample_hits + (misses - sample_misses_);
    if (static_cast<double>(requests) < period_) return 0;
    const double hit_ratio = static_cast<double>(sample_hits) / static_cast<double>(requests);
    sample_hits_ = hits;
    sample_misses_ = misses;
    if (previous_hit_ratio_ < 0) {  // the first sample: the baseline
      previous_hit_ratio_ = hit_ratio;
      return 0;
    }
    period_ = std::min(period_ * kPeriodGrowth, full_period_);
    const double change = hit_ratio - previous_hit_ratio_;
    const double amount = change >= 0 ? step_ : -step_;
    const double direction = amount >= 0 ? 1 : -1;
    step_ = std::abs(change) >= kRestartThreshold
                ? kStepFraction * static_cast<double>(capacity_) * direction
                : kStepDecay * amount;
    previous_hit_ratio_ = hit_ratio;
    return static_cast<int64_t>(amount);
  }

  double step() const { return step_; }

 private:
  size_t capacity_ = 0;
  double full_period_ = 1;    // requests per sample, eventually
  double period_ = 1;         // requests in the current sample
  uint64_t sample_hits_ = 0;  // the totals when the current sample began
  uint64_t sample_misses_ = 0;
  double previous_hit_ratio_ = 0;
  double step_ = 0;
};

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_HILL_CLIMBER_H_
