// The W-TinyLFU window's hill climber (engine/hill_climber.h).

#include "hill_climber.h"

#include <cstdint>
#include <cstdlib>

#include "gtest/gtest.h"

namespace tiercache::engine_internal {
namespace {

// The running totals a stripe hands the climber.
struct Totals {
  uint64_t hits = 0;
  uint64_t misses = 0;
};

// Feeds one sample of `requests` requests, `hits` of them hits, and returns
// the adjustment it produced.
int64_t Sample(HillClimber& climber, Totals& totals, int hits, int requests) {
  for (int i = 0; i < requests; ++i) {
    EXPECT_EQ(climber.TakeAdjustment(totals.hits, totals.misses), 0)
        << "before the sample is complete";
    if (i < hits) {
      ++totals.hits;
    } else {
      ++totals.misses;
    }
  }
  return climber.TakeAdjustment(totals.hits, totals.misses);
}

TEST(HillClimberTest, ClimbsWhileTheHitRatioHoldsAndTurnsWhenItFalls) {
  HillClimber climber;
  Totals totals{7, 3};  // whatever the stripe counted before
  climber.Reset(/*capacity=*/1000, /*sample_requests=*/100, totals.hits, totals.misses);
  EXPECT_DOUBLE_EQ(climber.step(), -62.5);  // the first move shrinks the window
  // The first sample, a fifth of the full period, only sets the baseline: 50%.
  EXPECT_EQ(Sample(climber, totals, 10, 20), 0);
  // Unchanged: keep going (the first move), the step decays by 2%.
  EXPECT_EQ(Sample(climber, totals, 10, 20), -62);
  EXPECT_DOUBLE_EQ(climber.step(), -61.25);
  // Samples grow by half from here. A fall of 10 points: turn around, and
  // restart at a full step.
  EXPECT_EQ(Sample(climber, totals, 12, 30), 61);
  EXPECT_DOUBLE_EQ(climber.step(), 62.5);
  // A small rise (40% -> 42.2%): keep going, decaying.
  EXPECT_EQ(Sample(climber, totals, 19, 45), 62);
  EXPECT_DOUBLE_EQ(climber.step(), 61.25);
  // A small fall (-> 41.2%, over 67.5 requests, so 68): turn around, decaying.
  EXPECT_EQ(Sample(climber, totals, 28, 68), -61);
  EXPECT_DOUBLE_EQ(climber.step(), -60.025);
  // Then the full period; a small rise (-> 42%): keep going.
  EXPECT_EQ(Sample(climber, totals, 42, 100), -60);
}

TEST(HillClimberTest, StepsSettleUnderASteadyWorkload) {
  HillClimber climber;
  Totals totals;
  climber.Reset(1000, 10, 0, 0);
  int64_t total = 0;
  int moves = 0;
  while (moves < 200) {
    ++totals.hits;  // every request a hit: the hit ratio never changes
    const int64_t adjustment = climber.TakeAdjustment(totals.hits, totals.misses);
    total += adjustment;
    if (adjustment != 0) ++moves;
  }
  EXPECT_LT(std::abs(climber.step()), 62.5 * 0.02);  // 0.98^200 of a full step
  EXPECT_LT(total, 0);                               // always the same way
}

TEST(HillClimberTest, ResetStartsOver) {
  HillClimber climber;
  Totals totals;
  climber.Reset(1000, 10, 0, 0);
  EXPECT_EQ(Sample(climber, totals, 1, 2), 0);  // the baseline
  EXPECT_NE(Sample(climber, totals, 2, 2), 0);
  for (int i = 0; i < 5; ++i) ++totals.hits;
  climber.Reset(2000, 10, totals.hits, totals.misses);
  EXPECT_DOUBLE_EQ(climber.step(), -125);
  ++totals.hits;
  // Requests before the Reset do not count toward the new sample.
  EXPECT_EQ(climber.TakeAdjustment(totals.hits, totals.misses), 0);
}

}  // namespace
}  // namespace tiercache::engine_internal
