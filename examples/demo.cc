// tiercache-demo: a Cache in front of a deliberately slow "database".
//
// A few client threads look up user records by key. The keys are drawn from a
// Zipf distribution, as real traffic is: a few users are very popular, most are
// rarely asked for. Every lookup goes through Cache::GetOrLoad; a miss calls
// SlowDatabase::Fetch, which sleeps like a 2 ms query. The cache is sized for a
// fifth of the users (so the LRU evicts) and entries live two seconds (so some
// expire). At the end the program prints the cache's counters and the time the
// cache saved compared with querying the database for every request.
//
// `tiercache-demo --help` lists the knobs. Exits non-zero if any lookup
// returned an error or a wrong record.

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "tiercache/cache.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

struct Flags {
  int64_t requests = 50000;
  int64_t users = 10000;
  int64_t threads = 4;
  int64_t capacity = 2000;
  int64_t ttl_ms = 2000;
  int64_t latency_us = 2000;
  double zipf = 0.99;
  int64_t seed = 1;
};

struct FlagSpec {
  std::string_view name;
  int64_t* integer;  // exactly one of integer and real is set
  double* real;
  int64_t min;
  std::string_view help;
};

void PrintUsage(const std::vector<FlagSpec>& specs) {
  std::printf(
      "usage: tiercache-demo [--flag=value...]\n\n"
      "A tiercache::Cache in front of a slow database, under Zipf-distributed reads.\n\n");
  for (const FlagSpec& spec : specs) {
    const std::string current = spec.integer != nullptr ? absl::StrFormat("%d", *spec.integer)
                                                        : absl::StrFormat("%g", *spec.real);
    absl::PrintF("  --%-12s %s (default %s)\n", spec.name, spec.help, current);
  }
}

// Parses --name=value flags into `flags`. Returns false (after printing why)
// when the program should exit.
bool ParseFlags(int argc, char** argv, Flags* flags, int* exit_code) {
  const std::vector<FlagSpec> specs = {
      {"requests", &flags->requests, nullptr, 0, "lookups to make in total"},
      {"users", &flags->users, nullptr, 1, "distinct keys in the database"},
      {"threads", &flags->threads, nullptr, 1, "client threads"},
      {"capacity", &flags->capacity, nullptr, 1, "records the cache's byte budget is sized for"},
      {"ttl-ms", &flags->ttl_ms, nullptr, 1, "time to live of a cached record, milliseconds"},
      {"latency-us", &flags->latency_us, nullptr, 0, "time one database query takes, microseconds"},
      {"zipf", nullptr, &flags->zipf, 0, "skew of the key popularity (0: uniform)"},
      {"seed", &flags->seed, nullptr, 0, "random seed"},
  };
  *exit_code = 2;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(specs);
      *exit_code = 0;
      return false;
    }
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == std::string_view::npos) {
      absl::FPrintF(stderr, "tiercache-demo: expected --flag=value, got '%s' (see --help)\n", arg);
      return false;
    }
    std::string name(arg.substr(2, eq - 2));
    std::replace(name.begin(), name.end(), '_', '-');  // --ttl_ms works too
    const std::string_view value = arg.substr(eq + 1);
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&name](const FlagSpec& s) { return s.name == name; });
    if (spec == specs.end()) {
      absl::FPrintF(stderr, "tiercache-demo: unknown flag --%s (see --help)\n", name);
      return false;
    }
    bool ok = false;
    if (spec->integer != nullptr) {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), *spec->integer);
      ok = ec == std::errc() && end == value.data() + value.size() && *spec->integer >= spec->min;
    } else {
      const std::string text(value);
      char* end = nullptr;
      *spec->real = std::strtod(text.c_str(), &end);
      ok = !text.empty() && *end == '\0' && std::isfinite(*spec->real) &&
           *spec->real >= static_cast<double>(spec->min);
    }
    if (!ok) {
      absl::FPrintF(stderr, "tiercache-demo: --%s=%s: expected a number >= %d\n", name, value,
                    spec->min);
      return false;
    }
  }
  return true;
}

std::string UserKey(int64_t id) { return absl::StrFormat("user:%d", id); }

// The record the database holds for `key`: about 200 bytes, and a pure
// function of the key, so that every answer the cache gives can be checked.
std::string UserRecord(std::string_view key) {
  std::string record = absl::StrFormat(R"({"key":"%s","plan":"pro","bio":")", key);
  while (record.size() < 190) record.append(key);
  record.resize(190);
  record.append("\"}");
  return record;
}

// The canonical data source: correct, and slow.
class SlowDatabase {
 public:
  explicit SlowDatabase(std::chrono::microseconds latency) : latency_(latency) {}

  std::string Fetch(std::string_view key) {
    const SteadyClock::time_point start = SteadyClock::now();
    std::this_thread::sleep_for(latency_);
    std::string record = UserRecord(key);
    busy_ns_.fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - start).count(),
        std::memory_order_relaxed);
    queries_.fetch_add(1, std::memory_order_relaxed);
    return record;
  }

  int64_t queries() const { return queries_.load(std::memory_order_relaxed); }
  // The measured mean time of one query (sleeps overshoot a little).
  double MeanQuerySeconds() const {
    const int64_t n = queries();
    if (n == 0) return std::chrono::duration<double>(latency_).count();
    return static_cast<double>(busy_ns_.load(std::memory_order_relaxed)) * 1e-9 /
           static_cast<double>(n);
  }

 private:
  const std::chrono::microseconds latency_;
  std::atomic<int64_t> queries_{0};
  std::atomic<int64_t> busy_ns_{0};
};

// Draws 0..n-1, rank 0 the most popular: P(k) is proportional to 1/(k+1)^s.
class ZipfSampler {
 public:
  ZipfSampler(int64_t n, double s) : cdf_(static_cast<size_t>(n)) {
    double sum = 0;
    for (size_t k = 0; k < cdf_.size(); ++k) {
      sum += 1.0 / std::pow(static_cast<double>(k + 1), s);
      cdf_[k] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }

  int64_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    return std::min<int64_t>(it - cdf_.begin(), static_cast<int64_t>(cdf_.size()) - 1);
  }

 private:
  std::vector<double> cdf_;
};

double Percent(uint64_t part, uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (int exit_code = 0; !ParseFlags(argc, argv, &flags, &exit_code)) return exit_code;

  SlowDatabase database{std::chrono::microseconds(flags.latency_us)};

  // Size the byte budget for `capacity` records, using the charge the cache
  // really makes per entry (allocator rounding and hash-table share included).
  const std::string typical_key = UserKey(flags.users - 1);
  const size_t charge =
      tiercache::Cache::ChargeFor(typical_key.size(), UserRecord(typical_key).size());
  tiercache::CacheOptions options;
  options.max_bytes = static_cast<size_t>(flags.capacity) * charge;
  options.default_ttl = absl::Milliseconds(flags.ttl_ms);
  // Records are ~200 bytes. The automatic stripe count keeps every stripe able
  // to hold the largest allowed value, so a small limit lets a small cache
  // have many stripes (less lock contention between the client threads).
  options.max_value_size = 1024;
  absl::StatusOr<std::unique_ptr<tiercache::Cache>> created = tiercache::Cache::Create(options);
  if (!created.ok()) {
    absl::FPrintF(stderr, "tiercache-demo: %s\n", created.status().ToString());
    return 1;
  }
  tiercache::Cache& cache = **created;

  absl::PrintF("tiercache demo: a Cache in front of a slow database (%.1f ms a query)\n",
               static_cast<double>(flags.latency_us) / 1000.0);
  absl::PrintF("  %d requests from %d threads, keys drawn Zipf(%.2f) from %d users\n",
               flags.requests, flags.threads, flags.zipf, flags.users);
  absl::PrintF(
      "  cache: %d bytes (%d per record: room for %d of the %d records), %d stripes, "
      "TTL %d ms\n\n",
      options.max_bytes, charge, flags.capacity, flags.users, cache.stripe_count(), flags.ttl_ms);

  const ZipfSampler sampler(flags.users, flags.zipf);
  std::atomic<int64_t> next_request{0};
  std::atomic<int64_t> finished{0};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> wrong_records{0};

  const SteadyClock::time_point start = SteadyClock::now();
  std::vector<std::thread> clients;
  for (int64_t t = 0; t < flags.threads; ++t) {
    clients.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(flags.seed) * 1000003u + static_cast<uint64_t>(t));
      while (next_request.fetch_add(1, std::memory_order_relaxed) < flags.requests) {
        const std::string key = UserKey(sampler(rng));
        absl::StatusOr<std::string> record =
            cache.GetOrLoad(key, [&database](std::string_view k) -> absl::StatusOr<std::string> {
              return database.Fetch(k);
            });
        if (!record.ok()) {
          if (errors.fetch_add(1) == 0) {
            absl::FPrintF(stderr, "GetOrLoad(%s): %s\n", key, record.status().ToString());
          }
        } else if (*record != UserRecord(key)) {
          if (wrong_records.fetch_add(1) == 0) {
            absl::FPrintF(stderr, "GetOrLoad(%s) returned a wrong record: %s\n", key, *record);
          }
        }
        finished.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }

  absl::PrintF("    time  requests  hit ratio   cached\n");
  double last_report = 0;
  while (finished.load(std::memory_order_relaxed) < flags.requests) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const double now = SecondsSince(start);
    if (now - last_report < 1.0) continue;
    last_report = now;
    const int64_t done = finished.load(std::memory_order_relaxed);
    const tiercache::CacheStats stats = cache.Stats();
    absl::PrintF("  %5.1f s  %8d     %5.1f%%  %7d\n", now, done,
                 Percent(stats.hits, static_cast<uint64_t>(done)), stats.items);
  }
  for (std::thread& client : clients) client.join();
  const double elapsed = SecondsSince(start);

  const tiercache::CacheStats stats = cache.Stats();
  const uint64_t requests = static_cast<uint64_t>(flags.requests);
  // Every request is answered once: by a hit, by its own load, or by waiting
  // for another thread's load of the same key (GetOrLoad is single-flight).
  const uint64_t misses = requests - stats.hits;
  const uint64_t shared_loads = misses >= stats.loads ? misses - stats.loads : 0;
  const size_t reclaimed = cache.ReclaimExpired();

  absl::PrintF("\nresults\n");
  absl::PrintF("  hits (answered by the cache)   %8d  %5.1f%%\n", stats.hits,
               Percent(stats.hits, requests));
  absl::PrintF("  misses                         %8d\n", misses);
  absl::PrintF("    database queries (loads)     %8d\n", stats.loads);
  absl::PrintF("    waited for another's load    %8d  (single-flight)\n", shared_loads);
  absl::PrintF("  evictions (cache full, LRU)    %8d\n", stats.evictions);
  absl::PrintF("  expirations (TTL ran out)      %8d  (+%d reclaimed at the end)\n",
               stats.expirations, reclaimed);
  absl::PrintF("  cached at the end              %8d  records, %d of %d bytes\n", stats.items,
               stats.bytes, options.max_bytes);
  absl::PrintF("  errors, wrong records          %8d\n", errors.load() + wrong_records.load());

  // Without the cache every request is a query; the same threads would share
  // them out, each query taking what the real ones took on average.
  const double query = database.MeanQuerySeconds();
  const double uncached =
      static_cast<double>(flags.requests) * query / static_cast<double>(flags.threads);
  absl::PrintF("\ntime\n");
  absl::PrintF("  with the cache                 %8.2f s\n", elapsed);
  absl::PrintF("  querying every time (est.)     %8.2f s  = %d queries x %.2f ms / %d threads\n",
               uncached, flags.requests, query * 1000.0, flags.threads);
  absl::PrintF("  saved                          %8.2f s  (%.1fx faster)\n", uncached - elapsed,
               elapsed > 0 ? uncached / elapsed : 0.0);

  if (database.queries() != static_cast<int64_t>(stats.loads)) {
    absl::FPrintF(stderr, "tiercache-demo: %d database queries but the cache counted %d loads\n",
                  database.queries(), stats.loads);
    return 1;
  }
  return errors.load() == 0 && wrong_records.load() == 0 ? 0 : 1;
}
