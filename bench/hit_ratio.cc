// bench/hit_ratio.cc — hit ratio against cache size on the LIRS traces
// (tests/data/traces, copied from shared/traces), for the chart in
// docs/performance.md.
//
// Each trace is replayed through a Cache bounded by items (every request a
// Get, and on a miss a Set), at capacities from 25 to 8000 items, for each
// eviction policy (the `policy` column):
//   - lru, one stripe: exact LRU, the baseline; at 100/500/1000/2000 items it
//     must equal the reference table in the traces' README (checked here too);
//   - lru, automatic stripes: what a user gets by default;
//   - lru, 64 stripes: the most the engine uses;
//   - tinylfu, one stripe and automatic stripes: EvictionPolicy::kTinyLfu
//     with the policy seed fixed at 1 (the figures the test asserts).
//
// Usage: hit_ratio [--json=PATH]   (prints a table; exits 1 on a mismatch
// with the reference table)

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lirs_traces.h"
#include "tiercache/cache.h"

namespace {

const std::vector<std::string> kTraces = {"lirs-2_pools", "lirs-cs",     "lirs-gli",
                                          "lirs-loop",    "lirs-multi1", "lirs-multi2",
                                          "lirs-multi3",  "lirs-ps",     "lirs-sprite"};
const std::vector<size_t> kCapacities = {25,   50,   100,  200,  350,  500,  750,
                                         1000, 1500, 2000, 3000, 4000, 6000, 8000};
using tiercache::testing::kReferenceCapacities;
using tiercache::testing::ReadReferenceTable;
using tiercache::testing::ReadTrace;
using tiercache::testing::ReplayHitRatio;

// One curve: a policy at a stripe count (0: automatic). `label` names it in
// the JSON.
struct Series {
  const char* label;
  tiercache::EvictionPolicy policy;
  size_t stripes;
};
const std::vector<Series> kSeries = {
    {"exact_lru", tiercache::EvictionPolicy::kLru, 1},
    {"automatic", tiercache::EvictionPolicy::kLru, 0},
    {"stripes_64", tiercache::EvictionPolicy::kLru, 64},
    {"tinylfu", tiercache::EvictionPolicy::kTinyLfu, 1},
    {"tinylfu_automatic", tiercache::EvictionPolicy::kTinyLfu, 0},
};

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
  const std::map<std::string, std::vector<double>> reference = ReadReferenceTable();
  bool mismatch = false;
  std::string json = "{\n  \"program\": \"hit_ratio\",\n  \"capacities\": [";
  for (size_t i = 0; i < kCapacities.size(); ++i) {
    json += absl::StrFormat("%s%d", i ? ", " : "", kCapacities[i]);
  }
  json += "],\n  \"traces\": {\n";
  std::printf("%-13s %-8s %-10s", "trace", "policy", "stripes");
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
    for (const Series& series : kSeries) {
      std::vector<double>& curve = curves[series.label];
      for (size_t capacity : kCapacities) {
        // 64 stripes need at least one item each.
        curve.push_back(capacity < series.stripes
                            ? std::nan("")
                            : ReplayHitRatio(trace, capacity, series.stripes, series.policy));
      }
      std::printf("%-13s %-8s %-10s", name.c_str(),
                  series.policy == tiercache::EvictionPolicy::kLru ? "lru" : "tinylfu",
                  series.stripes == 0 ? "automatic" : absl::StrCat(series.stripes).c_str());
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
