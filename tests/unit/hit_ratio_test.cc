// Hit-ratio conformance: replaying the LIRS traces through a one-stripe cache
// bounded by items reproduces the exact-LRU table in tests/data/traces/README.md
// (copied from shared/traces) to the second decimal.

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
