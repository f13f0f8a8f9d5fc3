// bench/tiered_bench.cc — what TieredCache costs and saves, each figure next
// to its baseline measured in the same run, on a private memcached that this
// program starts (the integration tests' helper, memcached_server.h).
//
//   1. L1 hit        TieredCache::Get of a fresh L1 copy vs Cache::Get on an
//                    identically configured bare engine: the price of the
//                    copy's header and the staleness check. 1 and 2 threads,
//                    uniform keys over 10,000 cached keys, 100-byte values.
//   2. revalidation  TieredCache::Get with max_staleness = 0 (every read asks
//                    memcached for the CAS, `mg k c`, and restamps the copy)
//                    vs MemcachedClient::Get (the value each time): what a
//                    coherence check costs against refetching, for 100-byte
//                    and 16 KiB values. One thread, mean latency.
//   3. stampede      2 TieredCache instances (two replicas) x 4 threads ask
//                    for the same 20 missing keys at once, loader 5 ms;
//                    loader calls per key. Baseline: the classic cache-aside
//                    with the same client (get; on a miss load and set),
//                    same threads and keys.
//
// Throughput and latency figures are the median of 5 repetitions; in each,
// the two sides run back to back, in alternating order.
//
// Flags: --quick (short runs: a smoke test), --only=hit|revalidation|stampede,
// --json=PATH.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench_support.h"
#include "memcached_server.h"
#include "tiercache/cache.h"
#include "tiercache/memcached.h"
#include "tiercache/tiered_cache.h"

namespace tiercache_bench {
namespace {

using Clock = std::chrono::steady_clock;
using tiercache::Cache;
using tiercache::MemcachedClient;
using tiercache::TieredCache;

constexpr size_t kKeys = 10000;
constexpr int kRepetitions = 5;

struct Config {
  bool quick = false;
  std::string json_path;
  std::string only;          // "", or one of hit, revalidation, stampede (for profiling)
  double hit_seconds = 1.0;  // per side, thread count and repetition
  size_t revalidations = 20000;
};

struct Row {
  std::string name;
  std::string unit;
  double tiercache = 0;
  double baseline = 0;
  std::string baseline_name;
  bool higher_is_better = true;
  std::string remark;
  double Ratio() const {
    if (tiercache == 0 || baseline == 0) return 0;
    return higher_is_better ? tiercache / baseline : baseline / tiercache;
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::string Key(size_t i) { return absl::StrFormat("key:%08d", i); }

// Calls `get(key)` from `threads` threads for `seconds`; reads per second.
double Throughput(int threads, double seconds, const std::vector<std::string>& keys,
                  const std::function<bool(const std::string&)>& get) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  std::atomic<uint64_t> misses{0};
  std::vector<std::thread> workers;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      SplitMix64 rng{static_cast<uint64_t>(t) * 7919 + 1};
      uint64_t n = 0;
      uint64_t missed = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 256; ++i) missed += !get(keys[rng.Next() % keys.size()]);
        n += 256;
      }
      total += n;
      misses += missed;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (std::thread& w : workers) w.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (misses.load() != 0) std::fprintf(stderr, "warning: %lu misses\n", misses.load());
  return static_cast<double>(total.load()) / elapsed;
}

// Mean ns per call of `get` over `n` calls cycling through `keys`.
double MeanNanos(size_t n, const std::vector<std::string>& keys,
                 const std::function<bool(const std::string&)>& get) {
  size_t missed = 0;
  const auto start = Clock::now();
  for (size_t i = 0; i < n; ++i) missed += !get(keys[i % keys.size()]);
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  if (missed != 0) std::fprintf(stderr, "warning: %zu misses\n", missed);
  return ns / static_cast<double>(n);
}

template <typename A, typename B>
void Alternate(int repetition, A&& a, B&& b) {
  if (repetition % 2 == 0) {
    a();
    b();
  } else {
    b();
    a();
  }
}

tiercache::TieredOptions TieredOptionsFor(const std::string& server) {
  tiercache::TieredOptions options;
  options.l1.max_bytes = 256 << 20;
  options.l2.servers = {server};
  options.l2.op_timeout = absl::Seconds(2);
  return options;
}

int Main(int argc, char** argv) {
  Config config;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--quick") {
      config.quick = true;
      config.hit_seconds = 0.1;
      config.revalidations = 1000;
    } else if (arg.substr(0, 7) == "--only=") {
      config.only = std::string(arg.substr(7));
    } else if (arg.substr(0, 7) == "--json=") {
      config.json_path = std::string(arg.substr(7));
    } else {
      std::fprintf(
          stderr,
          "usage: tiered_bench [--quick] [--only=hit|revalidation|stampede] [--json=PATH]\n");
      return 2;
    }
  }
  tiercache::testing::MemcachedServer server({.unix_socket = false, .extra_args = {"-m", "512"}});
  if (!server.running()) {
    std::fprintf(stderr, "could not start memcached\n");
    return 1;
  }
  std::vector<std::string> keys;
  for (size_t i = 0; i < kKeys; ++i) keys.push_back(Key(i));
  std::vector<Row> rows;

  auto wanted = [&](std::string_view part) { return config.only.empty() || config.only == part; };

  // 1. L1 hits.
  if (wanted("hit")) {
    tiercache::TieredOptions options = TieredOptionsFor(server.address());
    options.max_staleness = absl::InfiniteDuration();
    auto tiered = *TieredCache::Create(options);
    auto bare = *Cache::Create(options.l1);
    const std::string value(100, 'v');
    for (const std::string& key : keys) {
      (void)tiered->Set(key, value);
      (void)bare->Set(key, value);
    }
    (void)tiered->Flush(absl::Seconds(30));
    for (int threads : {1, 2}) {
      std::vector<double> t_runs, b_runs;
      for (int r = 0; r < kRepetitions; ++r) {
        Alternate(
            r,
            [&] {
              t_runs.push_back(
                  Throughput(threads, config.hit_seconds, keys,
                             [&](const std::string& k) { return tiered->Get(k).has_value(); }));
            },
            [&] {
              b_runs.push_back(
                  Throughput(threads, config.hit_seconds, keys,
                             [&](const std::string& k) { return bare->Get(k).has_value(); }));
            });
      }
      rows.push_back({absl::StrFormat("L1 hit, %d thread%s", threads, threads > 1 ? "s" : ""),
                      "reads/s", Median(t_runs), Median(b_runs), "Cache::Get (bare engine)", true,
                      "TieredCache::Get of a fresh copy vs the engine alone"});
    }
  }

  // 2. Revalidation against refetching.
  for (size_t value_size : {size_t{100}, size_t{16384}}) {
    if (!wanted("revalidation")) break;
    tiercache::TieredOptions options = TieredOptionsFor(server.address());
    options.max_staleness = absl::ZeroDuration();
    options.mirror.mode = tiercache::MirrorMode::kSync;
    auto tiered = *TieredCache::Create(options);
    tiercache::MemcachedOptions client_options = options.l2;
    auto client = *MemcachedClient::Create(client_options);
    const std::string value(value_size, 'v');
    std::vector<std::string> some(keys.begin(), keys.begin() + 1000);
    for (const std::string& key : some) (void)tiered->Set(key, value);
    for (const std::string& key : some) (void)tiered->Get(key);  // CAS now known
    std::vector<double> t_runs, b_runs;
    const uint64_t before = tiered->Stats().revalidated_unchanged;
    for (int r = 0; r < kRepetitions; ++r) {
      Alternate(
          r,
          [&] {
            t_runs.push_back(MeanNanos(config.revalidations, some, [&](const std::string& k) {
              return tiered->Get(k).has_value();
            }));
          },
          [&] {
            b_runs.push_back(MeanNanos(config.revalidations, some, [&](const std::string& k) {
              absl::StatusOr<std::optional<tiercache::Item>> item = client->Get(k);
              return item.ok() && item->has_value();
            }));
          });
    }
    const uint64_t unchanged = tiered->Stats().revalidated_unchanged - before;
    rows.push_back({absl::StrFormat("revalidated read, %d-byte values", value_size), "ns/read",
                    Median(t_runs), Median(b_runs), "MemcachedClient::Get (refetch)", false,
                    absl::StrFormat("max_staleness=0: %d of %d reads revalidated unchanged by CAS",
                                    unchanged, config.revalidations * kRepetitions)});
  }

  // 3. Stampede: loader calls per key.
  if (wanted("stampede")) {
    constexpr int kReplicas = 2;
    constexpr int kThreadsPerReplica = 4;
    constexpr int kStampedeKeys = 20;
    const absl::Duration loader_time = absl::Milliseconds(5);
    std::atomic<int> tiered_loads{0};
    std::atomic<int> naive_loads{0};
    double tiered_seconds = 0;
    double naive_seconds = 0;
    std::vector<std::unique_ptr<TieredCache>> replicas;
    std::vector<std::unique_ptr<MemcachedClient>> naive_clients;
    for (int r = 0; r < kReplicas; ++r) {
      tiercache::TieredOptions options = TieredOptionsFor(server.address());
      replicas.push_back(*TieredCache::Create(options));
      naive_clients.push_back(*MemcachedClient::Create(options.l2));
    }
    auto run = [&](const std::function<void(int replica, const std::string& key)>& fetch) {
      const auto start = Clock::now();
      std::vector<std::thread> threads;
      for (int r = 0; r < kReplicas; ++r) {
        for (int t = 0; t < kThreadsPerReplica; ++t) {
          threads.emplace_back([&, r] {
            for (int k = 0; k < kStampedeKeys; ++k) fetch(r, absl::StrFormat("stampede:%d", k));
          });
        }
      }
      for (std::thread& t : threads) t.join();
      return std::chrono::duration<double>(Clock::now() - start).count();
    };
    tiered_seconds = run([&](int r, const std::string& key) {
      (void)replicas[r]->GetOrLoad("t" + key, [&](std::string_view) -> absl::StatusOr<std::string> {
        tiered_loads.fetch_add(1);
        absl::SleepFor(loader_time);
        return std::string(100, 'x');
      });
    });
    naive_seconds = run([&](int r, const std::string& key) {
      MemcachedClient& client = *naive_clients[r];
      absl::StatusOr<std::optional<tiercache::Item>> hit = client.Get("n" + key);
      if (hit.ok() && hit->has_value()) return;
      naive_loads.fetch_add(1);
      absl::SleepFor(loader_time);
      (void)client.Set("n" + key, std::string(100, 'x'));
    });
    rows.push_back({"stampede: loader calls per missing key", "calls/key",
                    static_cast<double>(tiered_loads.load()) / kStampedeKeys,
                    static_cast<double>(naive_loads.load()) / kStampedeKeys,
                    "cache-aside get/load/set", false,
                    absl::StrFormat("%d replicas x %d threads, %d keys, 5 ms loader; wall %.3f s "
                                    "vs %.3f s",
                                    kReplicas, kThreadsPerReplica, kStampedeKeys, tiered_seconds,
                                    naive_seconds)});
  }

  std::printf("%-44s %14s %14s %8s  %s\n", "benchmark", "tiercache", "baseline", "ratio",
              "unit / baseline");
  for (const Row& row : rows) {
    std::printf("%-44s %14.4g %14.4g %7.2fx  %s vs %s\n", row.name.c_str(), row.tiercache,
                row.baseline, row.Ratio(), row.unit.c_str(), row.baseline_name.c_str());
  }
  std::printf("\nratio: tiercache's figure relative to its baseline, > 1 is better\n");
  for (const Row& row : rows) std::printf("- %s: %s\n", row.name.c_str(), row.remark.c_str());

  if (!config.json_path.empty()) {
    std::ofstream out(config.json_path);
    out << "{\n  \"program\": \"tiered_bench\",\n  \"quick\": " << (config.quick ? "true" : "false")
        << ",\n  \"repetitions\": " << kRepetitions << ",\n  \"results\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& row = rows[i];
      out << absl::StrFormat(
          "    {\"benchmark\": \"%s\", \"unit\": \"%s\", \"tiercache\": %.6g, \"baseline\": %.6g, "
          "\"baseline_name\": \"%s\", \"ratio\": %.4f, \"remark\": \"%s\"}%s\n",
          row.name, row.unit, row.tiercache, row.baseline, row.baseline_name, row.Ratio(),
          row.remark, i + 1 < rows.size() ? "," : "");
    }
    out << "  ]\n}\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", config.json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace tiercache_bench

int main(int argc, char** argv) { return tiercache_bench::Main(argc, argv); }
