// tiercache/clock.h — where a cache gets the time.
//
// Every expiry decision in tiercache reads time through a `Clock`, and every
// timed wait that is not a wait for the network (TieredCache's lease polls)
// sleeps through it. Production code leaves `CacheOptions::clock` null and
// gets the process's real clock; tests inject a `FakeClock` and move it by
// hand, so a test of a 30-day TTL or a 2-second lease wait takes microseconds
// and never sleeps.
//
// Thread safety: `Now()` and `SleepFor()` may be called from any thread at
// any time.

#ifndef TIERCACHE_CLOCK_H_
#define TIERCACHE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace tiercache {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // Returns once `d` has passed on this clock (at once for d <= 0).
  virtual void SleepFor(absl::Duration d);

  // The real clock (absl::Now). The returned object lives forever.
  static Clock* Real();
};

// A clock that only moves when told to. Starts at the Unix epoch + 1 day so
// that "now minus a little" is never before the epoch.
class FakeClock final : public Clock {
 public:
  FakeClock() = default;
  explicit FakeClock(absl::Time start) : nanos_(absl::ToUnixNanos(start)) {}

  absl::Time Now() const override {
    return absl::FromUnixNanos(nanos_.load(std::memory_order_acquire));
  }
  // REQUIRES: d >= 0 (time never runs backwards).
  void Advance(absl::Duration d) {
    nanos_.fetch_add(absl::ToInt64Nanoseconds(d), std::memory_order_acq_rel);
  }
  // A sleeper is the only thing running in its world: the time it sleeps
  // passes at once (the clock advances by `d`), and the sleep is counted.
  void SleepFor(absl::Duration d) override {
    if (d <= absl::ZeroDuration()) return;
    sleeps_.fetch_add(1, std::memory_order_relaxed);
    Advance(d);
  }
  // Calls to SleepFor that slept.
  uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> nanos_{int64_t{86400} * 1000 * 1000 * 1000};
  std::atomic<uint64_t> sleeps_{0};
};

}  // namespace tiercache

#endif  // TIERCACHE_CLOCK_H_
