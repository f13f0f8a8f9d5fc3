// Hit-ratio conformance: replaying the LIRS traces through a one-stripe cache
// bounded by items reproduces the exact-LRU table in tests/data/traces/README.md
// (copied from shared/traces) to the second decimal.

#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tiercache/cache.h"

namespace tiercache {
namespace {

const std::vector<size_t> kCapacities = {100, 500, 1000, 2000};

std::vector<std::string> ReadTrace(const std::string& name) {
  const std::string path = absl::StrFormat("%s/%s.trace.gz", TIERCACHE_TRACES_DIR, name);
  gzFile file = gzopen(path.c_str(), "rb");
  EXPECT_NE(file, nullptr) << "cannot open " << path;
  std::vector<std::string> keys;
  if (file == nullptr) return keys;
  char line[256];
  while (gzgets(file, line, sizeof(line)) != nullptr) {
    std::string key(line);
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) {
      key.pop_back();
    }
    if (!key.empty()) keys.push_back(std::move(key));
  }
  gzclose(file);
  return keys;
}

// trace name -> LRU hit ratio (percent) per capacity, parsed from the README.
std::map<std::string, std::vector<double>> ReadReferenceTable() {
  std::ifstream readme(absl::StrFormat("%s/README.md", TIERCACHE_TRACES_DIR));
  std::map<std::string, std::vector<double>> table;
  std::string line;
  while (std::getline(readme, line)) {
    if (!absl::StartsWith(line, "| lirs-")) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|', absl::SkipWhitespace());
    for (std::string& cell : cells) absl::StripAsciiWhitespace(&cell);
    // name, requests, unique keys, LRU@100, @500, @1000, @2000
    if (cells.size() != 7) continue;
    std::vector<double> ratios;
    for (size_t i = 3; i < 7; ++i) {
      double value = 0;
      EXPECT_TRUE(absl::SimpleAtod(cells[i], &value)) << line;
      ratios.push_back(value);
    }
    table[cells[0]] = ratios;
  }
  return table;
}

// Every request is a Get and, on a miss, a Set; returns hits in percent.
double Replay(const std::vector<std::string>& trace, size_t capacity, size_t stripes) {
  CacheOptions options;
  options.max_bytes = size_t{1} << 30;
  options.max_items = capacity;
  options.stripes = stripes;
  auto cache = Cache::Create(options);
  EXPECT_TRUE(cache.ok()) << cache.status();
  size_t hits = 0;
  std::string value;
  for (const std::string& key : trace) {
    if ((*cache)->Get(key, &value)) {
      ++hits;
    } else {
      EXPECT_TRUE((*cache)->Set(key, "v").ok());
    }
  }
  return 100.0 * static_cast<double>(hits) / static_cast<double>(trace.size());
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
