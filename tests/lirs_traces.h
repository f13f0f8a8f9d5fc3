// The LIRS access traces in tests/data/traces (copied from shared/traces) and
// their exact-LRU reference table, for the hit-ratio test and the hit_ratio
// benchmark. TIERCACHE_TRACES_DIR is defined by the build.

#ifndef TIERCACHE_TESTS_LIRS_TRACES_H_
#define TIERCACHE_TESTS_LIRS_TRACES_H_

#include <zlib.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tiercache/cache.h"

namespace tiercache::testing {

// The README table's capacities, in items.
inline const std::vector<size_t> kReferenceCapacities = {100, 500, 1000, 2000};

// One key per request; empty if the trace cannot be read.
inline std::vector<std::string> ReadTrace(const std::string& name) {
  const std::string path = absl::StrFormat("%s/%s.trace.gz", TIERCACHE_TRACES_DIR, name);
  std::vector<std::string> keys;
  gzFile file = gzopen(path.c_str(), "rb");
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

// trace name -> exact-LRU hit ratio (percent) at kReferenceCapacities, parsed
// from the traces' README. Rows that do not parse are left out.
inline std::map<std::string, std::vector<double>> ReadReferenceTable() {
  std::ifstream readme(absl::StrFormat("%s/README.md", TIERCACHE_TRACES_DIR));
  std::map<std::string, std::vector<double>> table;
  std::string line;
  while (std::getline(readme, line)) {
    if (!absl::StartsWith(line, "| lirs-")) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|', absl::SkipWhitespace());
    for (std::string& cell : cells) absl::StripAsciiWhitespace(&cell);
    // name, requests, unique keys, LRU@100, @500, @1000, @2000
    if (cells.size() != 3 + kReferenceCapacities.size()) continue;
    std::vector<double> ratios;
    for (size_t i = 3; i < cells.size(); ++i) {
      double value = 0;
      if (!absl::SimpleAtod(cells[i], &value)) break;
      ratios.push_back(value);
    }
    if (ratios.size() == kReferenceCapacities.size()) table[cells[0]] = ratios;
  }
  return table;
}

// Replays `trace` through a cache of `capacity` items and `stripes` stripes
// (0: automatic): every request a Get and, on a miss, a Set. Hits in percent.
inline double ReplayHitRatio(const std::vector<std::string>& trace, size_t capacity, size_t stripes,
                             EvictionPolicy policy = EvictionPolicy::kLru,
                             uint64_t policy_seed = 1) {
  CacheOptions options;
  options.max_bytes = size_t{1} << 30;
  options.max_items = capacity;
  options.stripes = stripes;
  options.policy = policy;
  options.policy_seed = policy_seed;
  absl::StatusOr<std::unique_ptr<Cache>> cache = Cache::Create(options);
  if (!cache.ok() || trace.empty()) return -1;
  size_t hits = 0;
  std::string value;
  for (const std::string& key : trace) {
    if ((*cache)->Get(key, &value)) {
      ++hits;
    } else if (!(*cache)->Set(key, "v").ok()) {
      return -1;
    }
  }
  return 100.0 * static_cast<double>(hits) / static_cast<double>(trace.size());
}

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_LIRS_TRACES_H_
