// The W-TinyLFU admission filter's sketch (engine/frequency_sketch.h).

#include "frequency_sketch.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tiercache::engine_internal {
namespace {

constexpr uint64_t kSeed = 0x5eed;

TEST(FrequencySketchTest, CountsUpToFifteen) {
  FrequencySketch sketch(kSeed);
  EXPECT_EQ(sketch.Frequency(42), 0);
  for (int i = 1; i <= 20; ++i) {
    sketch.Increment(42);
    EXPECT_EQ(sketch.Frequency(42), std::min(i, FrequencySketch::kMaxFrequency)) << i;
  }
}

// A count-min sketch over-counts (collisions) but never under-counts before
// it ages.
TEST(FrequencySketchTest, NeverUnderCountsBeforeAging) {
  FrequencySketch sketch(kSeed);
  sketch.Resize(1024);
  std::mt19937_64 random(1);
  std::vector<uint64_t> keys(512);
  for (uint64_t& key : keys) key = random();
  std::vector<int> counts(keys.size());
  size_t increments = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    counts[i] = static_cast<int>(i % 7);
    for (int n = 0; n < counts[i]; ++n, ++increments) sketch.Increment(keys[i]);
  }
  ASSERT_LT(increments, sketch.sample_size());
  int exact = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_GE(sketch.Frequency(keys[i]), counts[i]);
    exact += sketch.Frequency(keys[i]) == counts[i];
  }
  // Four rows of 16K counters for 512 keys: collisions in all four rows at
  // once are rare.
  EXPECT_GE(exact, 500);
}

TEST(FrequencySketchTest, HalvesEveryCounterAfterTheSampleSize) {
  FrequencySketch sketch(kSeed);
  sketch.Resize(64);
  ASSERT_EQ(sketch.sample_size(), 640u);
  for (int n = 0; n < 9; ++n) sketch.Increment(7);
  EXPECT_EQ(sketch.Frequency(7), 9);
  // Other keys until one increment short of the sample (they collide with
  // key 7 in a sketch this small: only its own estimate is known exactly).
  for (uint64_t key = 1000; sketch.additions() + 1 < sketch.sample_size(); ++key) {
    sketch.Increment(key);
  }
  const int before = sketch.Frequency(7);
  ASSERT_LT(before, FrequencySketch::kMaxFrequency);
  sketch.Increment(7);  // the 640th: raises each of its counters, then halves all
  EXPECT_EQ(sketch.Frequency(7), (before + 1) / 2);
  EXPECT_LE(sketch.additions(), sketch.sample_size() / 2);
}

TEST(FrequencySketchTest, SaturatedCountersDoNotHurryTheAging) {
  FrequencySketch sketch(kSeed);
  for (int n = 0; n < 15; ++n) sketch.Increment(3);
  const size_t additions = sketch.additions();
  for (int n = 0; n < 1000; ++n) sketch.Increment(3);
  EXPECT_EQ(sketch.additions(), additions);
  EXPECT_EQ(sketch.Frequency(3), FrequencySketch::kMaxFrequency);
}

TEST(FrequencySketchTest, ResizeClearsAndSizesToAPowerOfTwo) {
  FrequencySketch sketch(kSeed);
  sketch.Increment(9);
  sketch.Resize(1000);
  EXPECT_EQ(sketch.capacity(), 1024u);
  EXPECT_EQ(sketch.bytes(), 1024u * 8);
  EXPECT_EQ(sketch.sample_size(), 10240u);
  EXPECT_EQ(sketch.Frequency(9), 0);
  sketch.Resize(1);
  EXPECT_EQ(sketch.capacity(), FrequencySketch::kMinEntries);
}

// Which keys share counters depends on the seed: knowing the keys is not
// enough to make a cold key look hot.
TEST(FrequencySketchTest, TheSeedChangesWhichKeysCollide) {
  FrequencySketch a(1), b(2);
  a.Resize(64);
  b.Resize(64);
  for (uint64_t key = 0; key < 200; ++key) {
    for (int n = 0; n < 3; ++n) {
      a.Increment(key);
      b.Increment(key);
    }
  }
  int differ = 0;
  for (uint64_t key = 1000; key < 1200; ++key) differ += a.Frequency(key) != b.Frequency(key);
  EXPECT_GT(differ, 20);
}

}  // namespace
}  // namespace tiercache::engine_internal
