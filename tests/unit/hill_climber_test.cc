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
  // 0 -> 50%: a rise (of 50 points, a restart): keep going, full step.
  EXPECT_EQ(Sample(climber, totals, 50, 100), -62);
  EXPECT_DOUBLE_EQ(climber.step(), -62.5);
  // Unchanged: keep going, the step decays by 2%.
  EXPECT_EQ(Sample(climber, totals, 50, 100), -62);
  EXPECT_DOUBLE_EQ(climber.step(), -61.25);
  // A fall of 10 points: turn around, and restart at a full step.
  EXPECT_EQ(Sample(climber, totals, 40, 100), 61);
  EXPECT_DOUBLE_EQ(climber.step(), 62.5);
  // A small rise: keep going, decaying.
  EXPECT_EQ(Sample(climber, totals, 42, 100), 62);
  EXPECT_DOUBLE_EQ(climber.step(), 61.25);
  // A small fall: turn around, decaying.
  EXPECT_EQ(Sample(climber, totals, 41, 100), -61);
  EXPECT_DOUBLE_EQ(climber.step(), -60.025);
}

TEST(HillClimberTest, StepsSettleUnderASteadyWorkload) {
  HillClimber climber;
  Totals totals;
  climber.Reset(1000, 10, 0, 0);
  Sample(climber, totals, 5, 10);  // the first sample restarts (0 -> 50%)
  int64_t total = 0;
  for (int n = 0; n < 200; ++n) total += Sample(climber, totals, 5, 10);
  EXPECT_LT(std::abs(climber.step()), 62.5 * 0.02);  // 0.98^200 of a full step
  EXPECT_LT(total, 0);                               // always the same way
}

TEST(HillClimberTest, ResetStartsOver) {
  HillClimber climber;
  Totals totals;
  climber.Reset(1000, 10, 0, 0);
  Sample(climber, totals, 9, 10);
  for (int i = 0; i < 5; ++i) ++totals.hits;
  climber.Reset(2000, 10, totals.hits, totals.misses);
  EXPECT_DOUBLE_EQ(climber.step(), -125);
  ++totals.hits;
  // Requests before the Reset do not count toward the new sample.
  EXPECT_EQ(climber.TakeAdjustment(totals.hits, totals.misses), 0);
}

}  // namespace
}  // namespace tiercache::engine_internal
