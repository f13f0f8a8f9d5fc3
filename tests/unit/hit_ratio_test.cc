// Hit-ratio conformance: replaying the LIRS traces through a one-stripe cache
// bounded by items reproduces the exact-LRU table in tests/data/traces/README.md
// (copied from shared/traces) to the second decimal.

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "lirs_traces.h"
#include "tiercache/cache.h"

namespace tiercache {
namespace {

using testing::ReadReferenceTable;
using testing::ReadTrace;
const std::vector<size_t>& kCapacities = testing::kReferenceCapacities;

double Replay(const std::vector<std::string>& trace, size_t capacity, size_t stripes) {
  const double ratio = testing::ReplayHitRatio(trace, capacity, stripes);
  EXPECT_GE(ratio, 0) << "the replay failed";
  return ratio;
}

TEST(HitRatioTest, OneStripeIsExactLru) {
  const auto reference = ReadReferenceTable();
  ASSERT_EQ(reference.size(), 9u) << "the README table was not found or changed shape";
  for (const auto& [name, expected] : reference) {
    const std::vector<std::string> trace = ReadTrace(name);
    ASSERT_FALSE(trace.empty()) << name;
    for (size_t i = 0; i < kCapacities.size(); ++i) {
      const double ratio = Replay(trace, kCapacities[i], 1);
      // Equal once printed to the second decimal, as the table was.
      EXPECT_EQ(absl::StrFormat("%.2f", ratio), absl::StrFormat("%.2f", expected[i]))
          << name << " at " << kCapacities[i] << " items";
    }
  }
}

// Not a conformance check: prints how far striping moves the hit ratio (each
// stripe is an LRU over a 1/N share), for docs/performance.md: with the
// automatic count, and with 64 stripes whatever the size. Stripe placement
// follows absl::Hash, which is seeded per process, so figures vary a little
// from run to run.
TEST(HitRatioTest, ReportStripingEffect) {
  const auto reference = ReadReferenceTable();
  std::printf("%-14s %8s %10s %16s %12s\n", "trace", "items", "1 stripe", "automatic (N)",
              "64 stripes");
  for (const auto& [name, expected] : reference) {
    const std::vector<std::string> trace = ReadTrace(name);
    for (size_t i = 0; i < kCapacities.size(); ++i) {
      CacheOptions options;
      options.max_bytes = size_t{1} << 30;
      options.max_items = kCapacities[i];
      const size_t stripes = (*Cache::Create(options))->stripe_count();
      const double automatic = Replay(trace, kCapacities[i], 0);
      const double many = Replay(trace, kCapacities[i], 64);
      std::printf("%-14s %8zu %9.2f%% %10.2f%% (%2zu) %11.2f%%\n", name.c_str(), kCapacities[i],
                  expected[i], automatic, stripes, many);
    }
  }
}

}  // namespace
}  // namespace tiercache

namespace tiercache {
namespace {

// W-TinyLFU (issue 10). The bar: Caffeine's W-TinyLFU on the same replay, from
// the traces' README (shared/traces/README.md), capacity 100 / 1000 items.
struct Bar {
  double caffeine[2];  // Caffeine 2.6.2, fixed 1% window
};
const std::map<std::string, Bar> kCaffeine = {
    {"lirs-2_pools", {{48.54, 54.48}}}, {"lirs-cs", {{2.45, 57.04}}},
    {"lirs-gli", {{3.44, 40.57}}},      {"lirs-loop", {{8.20, 93.62}}},
    {"lirs-multi1", {{42.97, 68.56}}},  {"lirs-multi2", {{29.10, 58.00}}},
    {"lirs-multi3", {{25.90, 50.61}}},  {"lirs-ps", {{28.10, 66.18}}},
    {"lirs-sprite", {{31.04, 83.90}}},
};
constexpr double kCaffeineMean = 44.04;

// The issue's target per cell is max(LRU, Caffeine) - 2 points. These cells
// miss it today (policy_seed 1; the replay is deterministic), by the amounts
// measured: each is held to its measured value minus 0.5 so that a change
// that makes it worse fails here, and the miss stays visible. loop @100 is a
// lottery on the seed: over policy seeds 1..32 it spans 3.6 to 8.2 (mean
// 6.7; before the climber's short first samples 4.0 to 8.2, mean 6.8), and
// seed 1 draws 4.61.
const std::map<std::pair<std::string, size_t>, double> kKnownMisses = {
    {{"lirs-loop", 100}, 4.61},
};

TEST(HitRatioTest, TinyLfuAgainstCaffeineAndLru) {
  const auto lru = ReadReferenceTable();
  ASSERT_EQ(lru.size(), 9u);
  double sum = 0, sum_automatic = 0;
  int cells = 0;
  std::printf("%-14s %8s %8s %9s %9s %12s\n", "trace", "capacity", "LRU", "Caffeine", "TinyLFU",
              "auto stripes");
  for (const auto& [name, bar] : kCaffeine) {
    SCOPED_TRACE(name);
    const std::vector<std::string> trace = ReadTrace(name);
    ASSERT_FALSE(trace.empty());
    for (int i = 0; i < 2; ++i) {
      const size_t capacity = i == 0 ? 100 : 1000;
      const double lru_ratio = lru.at(name)[i == 0 ? 0 : 2];  // the README's @100, @1000
      const double ratio = testing::ReplayHitRatio(trace, capacity, 1, EvictionPolicy::kTinyLfu);
      const double automatic =
          testing::ReplayHitRatio(trace, capacity, 0, EvictionPolicy::kTinyLfu);
      std::printf("%-14s %8zu %8.2f %9.2f %9.2f %12.2f\n", name.c_str(), capacity, lru_ratio,
                  bar.caffeine[i], ratio, automatic);
      const double target = std::max(lru_ratio, bar.caffeine[i]) - 2;
      if (auto miss = kKnownMisses.find({name, capacity}); miss != kKnownMisses.end()) {
        EXPECT_GE(ratio, miss->second - 0.5) << "@" << capacity << " (a known miss got worse)";
        EXPECT_LT(ratio, target) << "@" << capacity << " now meets its target: update kKnownMisses";
      } else {
        EXPECT_GE(ratio, target) << "@" << capacity;
      }
      sum += ratio;
      sum_automatic += automatic;
      ++cells;
    }
  }
  const double mean = sum / cells;
  const double mean_automatic = sum_automatic / cells;
  std::printf("mean over %d cells: TinyLFU %.2f (Caffeine %.2f), automatic stripes %.2f\n", cells,
              mean, kCaffeineMean, mean_automatic);
  EXPECT_GE(mean, kCaffeineMean);
  EXPECT_NEAR(mean_automatic, mean, 1.5);
}

}  // namespace
}  // namespace tiercache
