// bench/hit_ratio.cc — hit ratio against cache size on the LIRS traces
// (tests/data/traces, copied from shared/traces), for the chart in
// docs/performance.md.
//
// Each trace is replayed through a Cache bounded by items (every request a
// Get, and on a miss a Set), at capacities from 25 to 8000 items:
//   - one stripe: exact LRU, the baseline; at 100/500/1000/2000 items it must
//     equal the reference table in the traces' README (checked here too);
//   - automatic stripes: what a user gets by default;
//   - 64 stripes: the most the engine uses.
//
// Usage: hit_ratio [--json=PATH]   (prints a table; exits 1 on a mismatch
// with the reference table)

#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tiercache/cache.h"

namespace {

const std::vector<std::string> kTraces = {"lirs-2_pools", "lirs-cs",     "lirs-gli",
                                          "lirs-loop",    "lirs-multi1", "lirs-multi2",
                                          "lirs-multi3",  "lirs-ps",     "lirs-sprite"};
const std::vector<size_t> kCapacities = {25,   50,   100,  200,  350,  500,  750,
                                         1000, 1500, 2000, 3000, 4000, 6000, 8000};
const std::vector<size_t> kReferenceCapacities = {100, 500, 1000, 2000};

std::vector<std::string> ReadTrace(const std::string& name) {
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

// trace -> exact-LRU hit ratio (percent) at kReferenceCapacities.
std::map<std::string, std::vector<double>> ReadReference() {
  std::ifstream readme(absl::StrFormat("%s/README.md", TIERCACHE_TRACES_DIR));
  std::map<std::string, std::vector<double>> table;
  std::string line;
  while (std::getline(readme, line)) {
    if (!absl::StartsWith(line, "| lirs-")) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|', absl::SkipWhitespace());
    for (std::string& cell : cells) absl::StripAsciiWhitespace(&cell);
    if (cells.size() != 7) continue;
    std::vector<double> ratios;
    for (size_t i = 3; i < 7; ++i) {
      double value = 0;
      if (absl::SimpleAtod(cells[i], &value)) ratios.push_back(value);
    }
    table[cells[0]] = ratios;
  }
  return table;
}

double HitRatio(const std::vector<std::string>& trace, size_t capacity, size_t stripes) {
  tiercache::CacheOptions options;
  options.max_bytes = size_t{1} << 30;
  options.max_items = capacity;
  options.stripes = stripes;
  auto cache = *tiercache::Cache::Create(options);
  size_t hits = 0;
  std::string value;
  for (const std::string& key : trace) {
    if (cache->Get(key, &value)) {
      ++hits;
    } else {
      (void)cache->Set(key, "v");
    }
  }
  return 100.0 * static_cast<double>(hits) / static_cast<double>(trace.size());
}

std::string JsonList(const std::vector<double>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    out += absl::StrFormat("%s%.4f", i ? ", " : "", values[i]);
  }
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.substr(0, 7) == "--json=") {
      json_path = std::string(arg.substr(7));
    } else {
      std::fprintf(stderr, "usage: hit_ratio [--json=PATH]\n");
      return 2;
    }
  }
  const std::map<std::string, std::vector<double>> reference = ReadReference();
  bool mismatch = false;
  std::string json = "{\n  \"program\": \"hit_ratio\",\n  \"capacities\": [";
  for (size_t i = 0; i < kCapacities.size(); ++i) {
    json += absl::StrFormat("%s%d", i ? ", " : "", kCapacities[i]);
  }
  json += "],\n  \"traces\": {\n";
  std::printf("%-13s %-10s", "trace", "stripes");
  for (size_t c : kCapacities) std::printf(" %6zu", c);
  std::printf("\n");
  for (size_t t = 0; t < kTraces.size(); ++t) {
    const std::string& name = kTraces[t];
    const std::vector<std::string> trace = ReadTrace(name);
    if (trace.empty()) {
      std::fprintf(stderr, "cannot read trace %s from %s\n", name.c_str(), TIERCACHE_TRACES_DIR);
      return 1;
    }
    std::map<std::string, std::vector<double>> curves;
    for (const auto& [label, stripes] : std::vector<std::pair<std::string, size_t>>{
             {"exact_lru", 1}, {"automatic", 0}, {"stripes_64", 64}}) {
      std::vector<double>& curve = curves[label];
      for (size_t capacity : kCapacities) {
        // 64 stripes need at least one item each.
        curve.push_back(capacity < stripes ? std::nan("") : HitRatio(trace, capacity, stripes));
      }
      std::printf("%-13s %-10s", name.c_str(), label.c_str());
      for (double v : curve) std::printf(" %6.2f", v);
      std::printf("\n");
    }
    // The exact LRU must reproduce the reference table.
    auto ref = reference.find(name);
    for (size_t r = 0; ref != reference.end() && r < kReferenceCapacities.size(); ++r) {
      for (size_t c = 0; c < kCapacities.size(); ++c) {
        if (kCapacities[c] != kReferenceCapacities[r]) continue;
        if (std::abs(curves["exact_lru"][c] - ref->second[r]) > 0.005 + 1e-9) {
          std::fprintf(stderr, "%s at %zu items: %.4f, the reference says %.2f\n", name.c_str(),
                       kCapacities[c], curves["exact_lru"][c], ref->second[r]);
          mismatch = true;
        }
      }
    }
    json += absl::StrFormat("    \"%s\": {\"requests\": %d", name, trace.size());
    for (const auto& [label, curve] : curves) {
      std::vector<double> finite = curve;
      for (double& v : finite) {
        if (std::isnan(v)) v = -1;  // JSON has no NaN: -1 means "not measured"
      }
      json += absl::StrFormat(", \"%s\": %s", label, JsonList(finite));
    }
    json += t + 1 < kTraces.size() ? "},\n" : "}\n";
  }
  json += "  }\n}\n";
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << json;
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  std::printf("\nexact LRU vs the reference table: %s\n", mismatch ? "MISMATCH" : "equal");
  return mismatch ? 1 : 0;
}
