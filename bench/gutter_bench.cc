// bench/gutter_bench.cc — what one dead memcached server costs the database,
// with and without a gutter pool (issue 14).
//
// Two primaries and one gutter server, private memcached processes on
// loopback. Four replicas (TieredCache instances, each with its own L1 and
// its own client, as separate processes would have) of four threads each ask
// for the same fresh keys, every thread from its own starting point; a load
// is a 2 ms "query" counted per key. One primary is out for the whole run:
//
//   killed   SIGKILL before the run: connections are refused;
//   hung     SIGSTOP before the run: connections are accepted, nothing is
//            answered (each replica needs timeouts_before_down timeouts to
//            know);
//
// and, for reference, the same with both primaries up. Each scenario runs
// with no gutter and with one; the figure is database loads per key (1.0:
// each key loaded once across all replicas), with the wall time of the run.
//
//   gutter_bench [--keys=N] [--json=FILE]

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "memcached_server.h"
#include "tiercache/tiered_cache.h"

namespace {

using tiercache::TieredCache;
using tiercache::TieredOptions;
using tiercache::testing::MemcachedServer;

constexpr int kReplicas = 4;
constexpr int kThreadsPerReplica = 4;
constexpr absl::Duration kLoadTime = absl::Milliseconds(2);

struct Result {
  std::string outage;
  bool gutter = false;
  int keys = 0;
  int loads = 0;
  int errors = 0;
  double seconds = 0;
};

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind(prefix, 0) == 0) return arg.substr(prefix.size());
  }
  return fallback;
}

Result Run(const std::string& outage, bool gutter, int keys, int round) {
  MemcachedServer a, b, spare;
  if (!a.running() || !b.running() || !spare.running()) {
    std::fprintf(stderr, "memcached did not start\n");
    std::exit(1);
  }
  if (outage == "killed") a.Stop();
  if (outage == "hung") a.Pause();
  std::vector<std::unique_ptr<TieredCache>> replicas;
  for (int r = 0; r < kReplicas; ++r) {
    TieredOptions options;
    options.l1.max_bytes = 64 << 20;
    options.l2.servers = {a.address(), b.address()};
    if (gutter) options.l2.gutter_servers = {spare.address()};
    options.l2.op_timeout = absl::Milliseconds(100);
    options.lease_wait = absl::Seconds(5);
    absl::StatusOr<std::unique_ptr<TieredCache>> cache = TieredCache::Create(options);
    if (!cache.ok()) {
      std::fprintf(stderr, "TieredCache::Create: %s\n", cache.status().ToString().c_str());
      std::exit(1);
    }
    replicas.push_back(*std::move(cache));
  }
  std::atomic<int> loads{0};
  std::atomic<int> errors{0};
  const std::string prefix = absl::StrCat("fresh", round, ":");
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int r = 0; r < kReplicas; ++r) {
    for (int t = 0; t < kThreadsPerReplica; ++t) {
      threads.emplace_back([&, r, t] {
        const int first = (r * kThreadsPerReplica + t) * keys / (kReplicas * kThreadsPerReplica);
        for (int n = 0; n < keys; ++n) {
          const std::string key = absl::StrCat(prefix, (first + n) % keys);
          absl::StatusOr<std::string> value =
              replicas[r]->GetOrLoad(key, [&](std::string_view k) -> absl::StatusOr<std::string> {
                loads.fetch_add(1);
                absl::SleepFor(kLoadTime);
                return absl::StrCat("row of ", std::string(k));
              });
          if (!value.ok() || *value != absl::StrCat("row of ", key)) errors.fetch_add(1);
        }
      });
    }
  }
  for (std::thread& thread : threads) thread.join();
  Result result;
  result.outage = outage;
  result.gutter = gutter;
  result.keys = keys;
  result.loads = loads.load();
  result.errors = errors.load();
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  replicas.clear();
  if (outage == "hung") a.Resume();
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const int keys = std::max(1, std::atoi(Flag(argc, argv, "keys", "1000").c_str()));
  const std::string json = Flag(argc, argv, "json", "");
  std::printf(
      "gutter_bench: 2 primaries (+1 gutter), %d replicas x %d threads, %d fresh keys, "
      "a load takes %s\n\n",
      kReplicas, kThreadsPerReplica, keys, absl::FormatDuration(kLoadTime).c_str());
  std::printf("%-10s %-8s %8s %10s %8s %8s\n", "outage", "gutter", "loads", "loads/key", "errors",
              "seconds");
  std::vector<Result> results;
  int round = 0;
  for (const char* outage : {"none", "killed", "hung"}) {
    for (bool gutter : {false, true}) {
      const Result r = Run(outage, gutter, keys, round++);
      std::printf("%-10s %-8s %8d %10.2f %8d %8.2f\n", r.outage.c_str(), r.gutter ? "yes" : "no",
                  r.loads, static_cast<double>(r.loads) / r.keys, r.errors, r.seconds);
      results.push_back(r);
    }
  }
  if (!json.empty()) {
    FILE* out = std::fopen(json.c_str(), "w");
    if (out == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(out, "{\"replicas\": %d, \"threads_per_replica\": %d, \"results\": [\n", kReplicas,
                 kThreadsPerReplica);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(out,
                   "  {\"outage\": \"%s\", \"gutter\": %s, \"keys\": %d, \"loads\": %d, "
                   "\"errors\": %d, \"seconds\": %.3f}%s\n",
                   r.outage.c_str(), r.gutter ? "true" : "false", r.keys, r.loads, r.errors,
                   r.seconds, i + 1 < results.size() ? "," : "");
    }
    std::fprintf(out, "]}\n");
    std::fclose(out);
  }
  return 0;
}
