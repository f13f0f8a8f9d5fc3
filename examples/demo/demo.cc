// tiercache-demo: the classic scenario — several replicas of an application
// reading through a database — with no cache, an L1 only (evicting by LRU,
// then by W-TinyLFU), memcached only, and tiercache's L1 + L2, side by side.
//
// The database is SQLite (database.h): a file of users and their orders,
// generated once, that every replica process opens itself; a load is the SQL
// that builds one user's profile, and its cost is measured and reported.
// Each replica is a separate process (this program started again with
// --role=replica) with its own threads and, where the mode has one, its own
// L1; all replicas of a mode share one memcached. Keys are drawn from a Zipf
// distribution, as real traffic is. Every answer is checked: it must be the
// record of the key asked for, and one in 64 is compared byte for byte with
// a fresh query (not counted as a load).
//
// After the five modes: one replica is restarted (a new process) on the warm
// L2 and compared with a replica on an empty L2; then every thread of every
// replica asks for one missing key at once (a stampede), with tiercache and
// with the classic cache-aside on memcached; then, on two private memcached
// servers, one is killed a third of the way into the run, without and with
// a gutter pool, counting the database queries while it is down. --tls puts
// every private memcached behind TLS and a password (certificates made on
// the spot).
//
// Without --memcached=HOST:PORT the demo starts a private memcached on a free
// loopback port; without memcached installed it runs the L1-only modes and
// says why. Writes a bar chart (SVG) of the comparison. `--help` lists the
// knobs. Exits non-zero if any answer was wrong or the stampede loaded twice.

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "database.h"
#include "memcached_server.h"
#include "tiercache/cache.h"
#include "tiercache/memcached.h"
#include "tiercache/tiered_cache.h"
#include "tls_certificates.h"
#if TIERCACHE_DEMO_METRICS
#include "prometheus/exposer.h"
#include "tiercache/metrics.h"
#endif

extern char** environ;

namespace {

using SteadyClock = std::chrono::steady_clock;
using tiercache_demo::Database;
using tiercache_demo::QueryCounters;
using tiercache_demo::UserKey;

// kL1 evicts by LRU; kL1TinyLfu is the same L1 with EvictionPolicy::kTinyLfu.
enum class Mode { kNone, kL1, kL1TinyLfu, kL2, kTiered };
constexpr std::array<Mode, 5> kModes = {Mode::kNone, Mode::kL1, Mode::kL1TinyLfu, Mode::kL2,
                                        Mode::kTiered};
bool HasL1(Mode mode) {
  return mode == Mode::kL1 || mode == Mode::kL1TinyLfu || mode == Mode::kTiered;
}

// How each mode is named: on the command line (--mode), in the table, and
// under the chart's bars.
struct ModeNames {
  std::string_view flag, title, label;
};
const ModeNames& NamesOf(Mode mode) {
  static constexpr std::array<ModeNames, 5> kNames = {{
      {"none", "no cache", "no cache"},
      {"l1", "L1 only, LRU", "L1 LRU"},
      {"l1-tinylfu", "L1 only, W-TinyLFU", "L1 TinyLFU"},
      {"l2", "L2 only (memcached)", "L2 only"},
      {"l1+l2", "L1 + L2 (tiercache)", "L1 + L2"},
  }};
  return kNames[static_cast<size_t>(mode)];
}
std::string_view ModeName(Mode mode) { return NamesOf(mode).flag; }
std::string_view ModeTitle(Mode mode) { return NamesOf(mode).title; }
std::string_view ModeShort(Mode mode) { return NamesOf(mode).label; }

// A latency for people: microseconds below a millisecond.
std::string LatencyText(double ms) {
  if (ms < 0.001) return "<1 us";
  if (ms < 1) return absl::StrFormat("%.0f us", ms * 1000);
  return absl::StrFormat("%.2f ms", ms);
}

std::string XmlText(std::string text) {
  std::string out;
  for (char c : text) {
    if (c == '<') {
      out += "&lt;";
    } else if (c == '&') {
      out += "&amp;";
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<Mode> ParseMode(std::string_view name) {
  for (Mode mode : kModes) {
    if (ModeName(mode) == name) return mode;
  }
  return std::nullopt;
}

// --- Flags -------------------------------------------------------------------

struct Flags {
  double duration = 5;  // seconds per mode
  int64_t replicas = 3;
  int64_t threads = 4;   // per replica
  int64_t scanners = 1;  // of them, reading every user in turn (an export job)
  int64_t keys = 10000;
  int64_t l1_items = 0;   // 0: 2% of the keys
  int64_t orders = 100;   // orders per user, on average
  double latency_ms = 0;  // added to each query: a database across a network
  std::string database = "tiercache-demo.db";
  int64_t tls = 0;           // 1: private memcached servers behind TLS and a password
  std::string tls_ca;        // internal: the CA file replicas trust
  int64_t dataset_seed = 0;  // internal: the coordinator's --seed, which made the database
  double zipf = 0.99;
  int64_t seed = 1;
  std::string memcached;  // HOST:PORT; empty: start a private one
  std::string chart = "tiercache-demo.svg";
  // Internal: how the coordinator starts a replica.
  std::string role = "coordinator";
  std::string mode;
  std::string prefix;
  int64_t stampede_at_ms = 0;  // > 0: a stampede, starting at this Unix time
  int64_t metrics = 0;         // > 0: replica i serves Prometheus metrics on 127.0.0.1:metrics+i
  int64_t index = 0;           // internal: which replica this is
  std::string gutter;          // HOST:PORT of a gutter pool's server; empty: none
  int64_t outage_at_ms = 0;    // > 0: queries from this Unix time on count as the outage's
};

struct FlagSpec {
  std::string_view name;
  int64_t* integer = nullptr;  // exactly one of the three is set
  double* real = nullptr;
  std::string* text = nullptr;
  std::string_view help;  // empty: internal, not listed
};

std::vector<FlagSpec> Specs(Flags& f) {
  return {
      {"duration", nullptr, &f.duration, nullptr, "seconds each mode runs"},
      {"replicas", &f.replicas, nullptr, nullptr, "application replicas (processes)"},
      {"threads", &f.threads, nullptr, nullptr, "request threads per replica"},
      {"scanners", &f.scanners, nullptr, nullptr,
       "of those threads, how many read every user in turn (an export job), not by popularity"},
      {"keys", &f.keys, nullptr, nullptr, "distinct keys (users) in the database"},
      {"l1-items", &f.l1_items, nullptr, nullptr, "records each L1 holds (0: 2% of the keys)"},
      {"orders", &f.orders, nullptr, nullptr, "orders per user in the database, on average"},
      {"database", nullptr, nullptr, &f.database,
       "the SQLite file (generated when missing or of another shape)"},
      {"latency-ms", nullptr, &f.latency_ms, nullptr,
       "added to each query, as for a database across a network"},
      {"tls", &f.tls, nullptr, nullptr,
       "1: the private memcached servers use TLS and a password (made on the spot)"},
      {"zipf", nullptr, &f.zipf, nullptr, "skew of key popularity (0: uniform)"},
      {"seed", &f.seed, nullptr, nullptr, "random seed"},
      {"memcached", nullptr, nullptr, &f.memcached,
       "HOST:PORT of a memcached to use instead of a private one"},
      {"chart", nullptr, nullptr, &f.chart, "where to write the SVG chart"},
      {"metrics", &f.metrics, nullptr, nullptr,
       "PORT: replica i serves Prometheus metrics at http://127.0.0.1:PORT+i/metrics (0: off)"},
      {"index", &f.index, nullptr, nullptr, ""},
      {"role", nullptr, nullptr, &f.role, ""},
      {"mode", nullptr, nullptr, &f.mode, ""},
      {"prefix", nullptr, nullptr, &f.prefix, ""},
      {"stampede-at-ms", &f.stampede_at_ms, nullptr, nullptr, ""},
      {"gutter", nullptr, nullptr, &f.gutter, ""},
      {"outage-at-ms", &f.outage_at_ms, nullptr, nullptr, ""},
      {"tls-ca", nullptr, nullptr, &f.tls_ca, ""},
      {"dataset-seed", &f.dataset_seed, nullptr, nullptr, ""},
  };
}

void PrintUsage(Flags& flags) {
  std::printf(
      "usage: tiercache-demo [--flag=value...]\n\n"
      "Several application replicas read through a SQLite database: no cache, L1 only\n"
      "(LRU, then W-TinyLFU), memcached only, and tiercache's L1 + L2, side by side.\n\n");
  for (const FlagSpec& spec : Specs(flags)) {
    if (spec.help.empty()) continue;
    const std::string current = spec.integer != nullptr ? absl::StrFormat("%d", *spec.integer)
                                : spec.real != nullptr  ? absl::StrFormat("%g", *spec.real)
                                                        : *spec.text;
    absl::PrintF("  --%-11s %s (default: %s)\n", spec.name, spec.help,
                 current.empty() ? "none" : current);
  }
}

// Parses --name=value flags. Returns false (after printing why) when the
// program should exit with *exit_code.
bool ParseFlags(int argc, char** argv, Flags* flags, int* exit_code) {
  std::vector<FlagSpec> specs = Specs(*flags);
  *exit_code = 2;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(*flags);
      *exit_code = 0;
      return false;
    }
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == std::string_view::npos) {
      absl::FPrintF(stderr, "tiercache-demo: expected --flag=value, got '%s' (see --help)\n", arg);
      return false;
    }
    std::string name(arg.substr(2, eq - 2));
    std::replace(name.begin(), name.end(), '_', '-');
    const std::string value(arg.substr(eq + 1));
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&name](const FlagSpec& s) { return s.name == name; });
    if (spec == specs.end()) {
      absl::FPrintF(stderr, "tiercache-demo: unknown flag --%s (see --help)\n", name);
      return false;
    }
    bool ok = true;
    if (spec->integer != nullptr) {
      ok = absl::SimpleAtoi(value, spec->integer) && *spec->integer >= 0;
    } else if (spec->real != nullptr) {
      ok = absl::SimpleAtod(value, spec->real) && std::isfinite(*spec->real) && *spec->real >= 0;
    } else {
      *spec->text = value;
    }
    if (!ok) {
      absl::FPrintF(stderr, "tiercache-demo: --%s=%s: expected a number >= 0\n", name, value);
      return false;
    }
  }
  if (flags->replicas < 1 || flags->threads < 1 || flags->keys < 1 || flags->duration <= 0) {
    absl::FPrintF(stderr,
                  "tiercache-demo: --replicas, --threads, --keys and --duration must be > 0\n");
    return false;
  }
  if (flags->replicas > 64 || flags->threads > 256 || flags->keys > 1000000 ||
      flags->orders > 1000 || flags->duration > 3600 || flags->latency_ms > 10000) {
    absl::FPrintF(stderr,
                  "tiercache-demo: at most --replicas=64, --threads=256, --keys=1000000, "
                  "--orders=1000, --duration=3600 and --latency-ms=10000\n");
    return false;
  }
  if (flags->scanners >= flags->threads) {
    absl::FPrintF(stderr,
                  "tiercache-demo: --scanners must be below --threads (at least one thread reads "
                  "by popularity); --scanners=0 for none\n");
    return false;
  }
  if (flags->orders < 1) {
    absl::FPrintF(stderr, "tiercache-demo: --orders must be > 0\n");
    return false;
  }
  if (flags->tls > 1) {
    absl::FPrintF(stderr, "tiercache-demo: --tls takes 0 or 1\n");
    return false;
  }
  if (flags->l1_items == 0) flags->l1_items = std::max<int64_t>(1, flags->keys / 50);
  return true;
}

// --- The workload ---------------------------------------------------------------

// Whether `record` can be the database's answer for `key`: a profile names
// its user first; the report is a list of users (empty when a tiny dataset
// has no orders in its 90 days). One answer in 64 is also compared with a
// fresh query, after the timed run.
bool RecordIsFor(std::string_view key, std::string_view record) {
  if (key == tiercache_demo::kTopSpendersKey) {
    return record == "[]" || record.starts_with("[{\"user_id\":");
  }
  return record.starts_with(absl::StrCat("{\"user_id\":", std::string(key.substr(5)), ","));
}

// The memcached password of a --tls run: made up by the coordinator and
// handed to its replicas in the environment, never on a command line (where
// `ps` would show it).
constexpr const char* kPasswordVariable = "TIERCACHE_DEMO_PASSWORD";
std::string DemoPassword() {
  const char* password = std::getenv(kPasswordVariable);
  return password != nullptr ? password : "";
}

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

// Latencies in log-spaced buckets (8 per doubling: within 9%), so that
// replicas can send theirs to the coordinator, which merges them.
class Histogram {
 public:
  static constexpr int kBuckets = 8 * 40;
  void Add(int64_t ns) { ++counts_[Bucket(ns)]; }
  void Merge(const Histogram& other) {
    for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  }
  // The q-quantile in milliseconds (the bucket's middle).
  double QuantileMs(double q) const {
    uint64_t total = 0;
    for (uint64_t c : counts_) total += c;
    if (total == 0) return 0;
    const uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(total - 1));
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen > rank) return std::exp2((i + 0.5) / 8.0) / 1e6;
    }
    return 0;
  }
  std::string Encode() const {
    std::string out;
    for (int i = 0; i < kBuckets; ++i) {
      if (counts_[i] != 0) absl::StrAppend(&out, out.empty() ? "" : ",", i, ":", counts_[i]);
    }
    return out.empty() ? "-" : out;
  }
  void Decode(const std::string& text) {
    const std::vector<std::string> pairs = absl::StrSplit(text, ',');
    for (const std::string& pair : pairs) {
      const std::vector<std::string> parts = absl::StrSplit(pair, ':');
      int bucket = 0;
      uint64_t count = 0;
      if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &bucket) &&
          absl::SimpleAtoi(parts[1], &count) && bucket >= 0 && bucket < kBuckets) {
        counts_[bucket] += count;
      }
    }
  }

 private:
  static int Bucket(int64_t ns) {
    if (ns < 1) return 0;
    return std::min(kBuckets - 1, static_cast<int>(std::log2(static_cast<double>(ns)) * 8.0));
  }
  std::array<uint64_t, kBuckets> counts_{};
};

// What one replica (or the sum of several) did.
struct Tally {
  uint64_t requests = 0;
  uint64_t l1_hits = 0;
  uint64_t l2_hits = 0;
  uint64_t loads = 0;
  uint64_t outage_loads = 0;     // queries from --outage-at-ms on
  uint64_t outage_requests = 0;  // requests from --outage-at-ms on
  uint64_t errors = 0;
  uint64_t wrong = 0;
  double seconds = 0;  // the longest replica's
  Histogram latency;

  void Merge(const Tally& other) {
    requests += other.requests;
    l1_hits += other.l1_hits;
    l2_hits += other.l2_hits;
    loads += other.loads;
    outage_loads += other.outage_loads;
    outage_requests += other.outage_requests;
    errors += other.errors;
    wrong += other.wrong;
    seconds = std::max(seconds, other.seconds);
    latency.Merge(other.latency);
  }
  std::string Encode() const {
    return absl::StrFormat(
        "result requests=%d l1_hits=%d l2_hits=%d loads=%d outage_loads=%d outage_requests=%d "
        "errors=%d wrong=%d "
        "seconds=%.6f latency=%s",
        requests, l1_hits, l2_hits, loads, outage_loads, outage_requests, errors, wrong, seconds,
        latency.Encode());
  }
  static std::optional<Tally> Decode(const std::string& line) {
    if (line.substr(0, 7) != "result ") return std::nullopt;
    Tally t;
    const std::vector<std::string> fields = absl::StrSplit(line.substr(7), ' ');
    for (const std::string& field : fields) {
      const size_t eq = field.find('=');
      if (eq == std::string::npos) continue;
      const std::string name = field.substr(0, eq);
      const std::string value = field.substr(eq + 1);
      if (name == "latency") {
        t.latency.Decode(value);
        continue;
      }
      if (name == "seconds") {
        (void)absl::SimpleAtod(value, &t.seconds);
        continue;
      }
      uint64_t n = 0;
      (void)absl::SimpleAtoi(value, &n);
      if (name == "requests") t.requests = n;
      if (name == "l1_hits") t.l1_hits = n;
      if (name == "l2_hits") t.l2_hits = n;
      if (name == "loads") t.loads = n;
      if (name == "outage_loads") t.outage_loads = n;
      if (name == "outage_requests") t.outage_requests = n;
      if (name == "errors") t.errors = n;
      if (name == "wrong") t.wrong = n;
    }
    return t;
  }
};

// --- A replica ----------------------------------------------------------------------

// One request through the mode's tiers; counts L2 hits that only the caller
// can see (cache-aside on memcached).
class Tiers {
 public:
  Tiers(const Flags& flags, Mode mode) : mode_(mode) {
    if (mode == Mode::kL1 || mode == Mode::kL1TinyLfu) {
      tiercache::CacheOptions options;
      options.max_bytes = 1 << 30;
      options.max_items = static_cast<size_t>(flags.l1_items);
      if (mode == Mode::kL1TinyLfu) options.policy = tiercache::EvictionPolicy::kTinyLfu;
      l1_ = *tiercache::Cache::Create(options);
    }
    tiercache::MemcachedOptions l2;
    l2.servers = absl::StrSplit(flags.memcached, ',');
    if (!flags.gutter.empty()) l2.gutter_servers = {flags.gutter};
    if (!flags.tls_ca.empty()) {
      l2.tls.enable = true;
      l2.tls.ca_file = flags.tls_ca;
      l2.username = "demo";
      l2.password = DemoPassword();
    }
    l2.key_prefix = flags.prefix;
    l2.op_timeout = absl::Milliseconds(500);
    if (mode == Mode::kL2) l2_ = *tiercache::MemcachedClient::Create(l2);
    if (mode == Mode::kTiered) {
      tiercache::TieredOptions options;
      options.l1.max_bytes = 1 << 30;
      options.l1.max_items = static_cast<size_t>(flags.l1_items);
      options.l2 = l2;
      options.max_staleness = absl::Seconds(1);
      options.lease_wait = absl::Seconds(10);
      tiered_ = *tiercache::TieredCache::Create(options);
    }
  }

  // `db` is the calling thread's own connection.
  absl::StatusOr<std::string> Get(const std::string& key, Database& db) {
    auto load = [&db](std::string_view k) { return db.Fetch(k); };
    switch (mode_) {
      case Mode::kNone:
        return db.Fetch(key);
      case Mode::kL1:
      case Mode::kL1TinyLfu:
        return l1_->GetOrLoad(key, load);
      case Mode::kL2: {  // the classic cache-aside: get; on a miss, load and set
        absl::StatusOr<std::optional<tiercache::Item>> hit = l2_->Get(key);
        if (hit.ok() && hit->has_value()) {
          l2_hits_.fetch_add(1, std::memory_order_relaxed);
          return std::move((*hit)->value);
        }
        absl::StatusOr<std::string> value = db.Fetch(key);
        if (value.ok()) (void)l2_->Set(key, *value);
        return value;
      }
      case Mode::kTiered:
        return tiered_->GetOrLoad(key, load);
    }
    return absl::InternalError("unknown mode");
  }

#if TIERCACHE_DEMO_METRICS
  // The collector of this mode's cache (none without one).
  std::shared_ptr<prometheus::Collectable> Metrics(const std::string& name) const {
    if (tiered_ != nullptr) return tiercache::MetricsFor(*tiered_, name);
    if (l1_ != nullptr) return tiercache::MetricsFor(*l1_, name);
    return nullptr;
  }
#endif

  void Fill(Tally* t, const QueryCounters& db) const {
    t->loads = db.queries.load();
    t->outage_loads = db.outage_queries.load();
    if (l1_ != nullptr) t->l1_hits = l1_->Stats().hits;
    if (mode_ == Mode::kL2) t->l2_hits = l2_hits_.load();
    if (mode_ == Mode::kTiered) {
      const tiercache::TieredStats stats = tiered_->Stats();
      t->l1_hits = stats.l1_hits;
      t->l2_hits = stats.l2_hits + stats.fallback_hits;
    }
  }

 private:
  const Mode mode_;
  std::unique_ptr<tiercache::Cache> l1_;
  std::unique_ptr<tiercache::MemcachedClient> l2_;
  std::unique_ptr<tiercache::TieredCache> tiered_;
  std::atomic<uint64_t> l2_hits_{0};
};

int RunReplica(const Flags& flags) {
  const std::optional<Mode> mode = ParseMode(flags.mode);
  if (!mode.has_value()) {
    absl::FPrintF(stderr, "replica: unknown --mode=%s\n", flags.mode);
    return 2;
  }
  const bool stampede = flags.stampede_at_ms > 0;
  QueryCounters counters;
  // Each thread its own connection, opened before the clock starts.
  std::vector<std::unique_ptr<Database>> connections;
  for (int64_t i = 0; i < flags.threads; ++i) {
    absl::StatusOr<std::unique_ptr<Database>> db =
        Database::Open(flags.database, {flags.keys, flags.orders, flags.dataset_seed}, &counters);
    if (!db.ok()) {
      absl::FPrintF(stderr, "replica: %s\n", db.status().ToString());
      return 1;
    }
    if (flags.outage_at_ms > 0) (*db)->set_outage_at(flags.outage_at_ms);
    (*db)->set_added_latency(absl::Microseconds(flags.latency_ms * 1000));
    connections.push_back(*std::move(db));
  }
  Tiers tiers(flags, *mode);
#if TIERCACHE_DEMO_METRICS
  // Served while the replica runs; a port in use costs the metrics, not the run.
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<prometheus::Collectable> metrics = tiers.Metrics(std::string(ModeName(*mode)));
  if (flags.metrics > 0 && metrics != nullptr && !stampede) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(
          absl::StrFormat("127.0.0.1:%d", flags.metrics + flags.index));
      exposer->RegisterCollectable(metrics);
    } catch (const std::exception& e) {
      absl::FPrintF(stderr, "replica: no metrics on port %d: %s\n", flags.metrics + flags.index,
                    e.what());
    }
  }
#endif
  const ZipfSampler sampler(flags.keys, flags.zipf);
  std::atomic<bool> stop{false};
  std::vector<Tally> tallies(static_cast<size_t>(flags.threads));
  // Answers kept for the check against a fresh query, made after the timed
  // run so that its queries do not take the database's time from it.
  std::vector<std::vector<std::pair<std::string, std::string>>> samples(tallies.size());
  std::vector<std::thread> threads;
  const absl::Time stampede_at = absl::FromUnixMillis(flags.stampede_at_ms);
  const SteadyClock::time_point start = SteadyClock::now();
  for (int64_t i = 0; i < flags.threads; ++i) {
    threads.emplace_back([&, i] {
      Tally& t = tallies[static_cast<size_t>(i)];
      Database& db = *connections[static_cast<size_t>(i)];
      std::mt19937_64 rng(static_cast<uint64_t>(flags.seed) * 1000003u + static_cast<uint64_t>(i));
      // The last --scanners threads are an export job: every user in turn,
      // each read once per pass, from a place of their own.
      const bool scanner = i >= flags.threads - flags.scanners;
      int64_t next_scanned = static_cast<int64_t>(rng() % static_cast<uint64_t>(flags.keys));
      if (stampede) absl::SleepFor(stampede_at - absl::Now());
      do {
        const std::string key = stampede  ? std::string(tiercache_demo::kTopSpendersKey)
                                : scanner ? UserKey(next_scanned++ % flags.keys)
                                          : UserKey(sampler(rng));
        const SteadyClock::time_point begin = SteadyClock::now();
        absl::StatusOr<std::string> record = tiers.Get(key, db);
        t.latency.Add(
            std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - begin)
                .count());
        ++t.requests;
        if (flags.outage_at_ms > 0 && absl::ToUnixMillis(absl::Now()) >= flags.outage_at_ms) {
          ++t.outage_requests;
        }
        if (!record.ok()) {
          if (t.errors++ == 0) {
            absl::FPrintF(stderr, "replica: %s: %s\n", key, record.status().ToString());
          }
        } else if (!RecordIsFor(key, *record)) {
          if (t.wrong++ == 0) absl::FPrintF(stderr, "replica: wrong record for %s\n", key);
        } else if (t.requests % 64 == 1 && (!stampede || i == 0)) {
          samples[static_cast<size_t>(i)].emplace_back(key, *std::move(record));
        }
      } while (!stampede && !stop.load(std::memory_order_relaxed));
    });
  }
  if (!stampede) {
    std::this_thread::sleep_for(std::chrono::duration<double>(flags.duration));
    stop = true;
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  tiers.Fill(&tallies[0], counters);  // the process's loads, before the checks' queries
  for (size_t i = 0; i < samples.size(); ++i) {
    for (const auto& [key, record] : samples[i]) {
      absl::StatusOr<std::string> fresh = connections[i]->Fetch(key, /*count=*/false);
      if (!fresh.ok()) {
        if (tallies[i].errors++ == 0) {
          absl::FPrintF(stderr, "replica: checking %s: %s\n", key, fresh.status().ToString());
        }
      } else if (*fresh != record) {
        if (tallies[i].wrong++ == 0) absl::FPrintF(stderr, "replica: wrong record for %s\n", key);
      }
    }
  }
  Tally total;
  for (const Tally& t : tallies) total.Merge(t);
  total.seconds = seconds;
#if TIERCACHE_DEMO_METRICS
  if (exposer != nullptr) exposer->RemoveCollectable(metrics);  // before the cache goes
#endif
  std::printf("%s\n", total.Encode().c_str());
  return 0;
}

// --- The coordinator ------------------------------------------------------------------

// A replica process: this program with --role=replica, its stdout on a pipe.
class ReplicaProcess {
 public:
  ReplicaProcess(const Flags& flags, Mode mode, const std::string& prefix, int64_t index,
                 int64_t stampede_at_ms = 0) {
    std::vector<std::string> args = {
        "/proc/self/exe",
        "--role=replica",
        absl::StrFormat("--mode=%s", ModeName(mode)),
        absl::StrFormat("--prefix=%s", prefix),
        absl::StrFormat("--memcached=%s", flags.memcached),
        absl::StrFormat("--duration=%g", flags.duration),
        absl::StrFormat("--threads=%d", flags.threads),
        absl::StrFormat("--scanners=%d", flags.scanners),
        absl::StrFormat("--keys=%d", flags.keys),
        absl::StrFormat("--l1-items=%d", flags.l1_items),
        absl::StrFormat("--latency-ms=%g", flags.latency_ms),
        absl::StrFormat("--database=%s", flags.database),
        absl::StrFormat("--orders=%d", flags.orders),
        absl::StrFormat("--tls-ca=%s", flags.tls_ca),
        absl::StrFormat("--zipf=%g", flags.zipf),
        absl::StrFormat("--seed=%d", flags.seed * 7919 + index),
        absl::StrFormat("--dataset-seed=%d", flags.seed),
        absl::StrFormat("--stampede-at-ms=%d", stampede_at_ms),
        absl::StrFormat("--gutter=%s", flags.gutter),
        absl::StrFormat("--outage-at-ms=%d", flags.outage_at_ms),
        absl::StrFormat("--metrics=%d", flags.metrics),
        absl::StrFormat("--index=%d", index),
    };
    int out[2];
    if (::pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    out_ = out[0];
  }
  ~ReplicaProcess() {
    if (out_ >= 0) ::close(out_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }

  // Reads what has arrived; true once the replica has closed its output.
  bool Poll() {
    if (out_ < 0) return true;
    pollfd fd{out_, POLLIN, 0};
    while (::poll(&fd, 1, 0) > 0) {
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof(chunk));
      if (n <= 0) {
        ::close(out_);
        out_ = -1;
        int status = 0;
        if (pid_ > 0) ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return true;
      }
      output_.append(chunk, static_cast<size_t>(n));
    }
    return false;
  }
  std::optional<Tally> Result() const {
    const std::vector<std::string> lines = absl::StrSplit(output_, '\n');
    for (const std::string& line : lines) {
      if (std::optional<Tally> t = Tally::Decode(line)) return t;
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string output_;
};

// Shows a progress bar on a terminal (a line per phase otherwise).
class Progress {
 public:
  explicit Progress(double total_seconds)
      : total_(total_seconds), tty_(::isatty(STDERR_FILENO) == 1) {}
  void Phase(std::string_view name) {
    phase_ = std::string(name);
    if (!tty_) absl::FPrintF(stderr, "  running: %s\n", name);
  }
  void Tick(double phase_done_seconds) {
    if (!tty_) return;
    const double done = std::min(1.0, (finished_ + phase_done_seconds) / total_);
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(done * kWidth);
    absl::FPrintF(stderr, "\r  [%s%s] %3.0f%%  %-36s", std::string(filled, '#'),
                  std::string(kWidth - filled, '.'), done * 100, phase_);
  }
  void EndPhase(double seconds) { finished_ += seconds; }
  void Done() {
    if (tty_) absl::FPrintF(stderr, "\r%80s\r", "");
  }

 private:
  double total_;
  double finished_ = 0;
  bool tty_;
  std::string phase_;
};

// Starts `count` replicas of `mode` on `prefix`, waits for them (bounded),
// and sums their results. nullopt if one did not report.
// `at_outage`, if given, runs once when the clock passes flags.outage_at_ms.
std::optional<Tally> RunReplicas(const Flags& flags, Mode mode, const std::string& prefix,
                                 int64_t count, double planned_seconds, Progress& progress,
                                 int64_t stampede_at_ms = 0,
                                 const std::function<void()>& at_outage = nullptr) {
  std::vector<std::unique_ptr<ReplicaProcess>> replicas;
  for (int64_t i = 0; i < count; ++i) {
    replicas.push_back(std::make_unique<ReplicaProcess>(flags, mode, prefix, i, stampede_at_ms));
  }
  const SteadyClock::time_point start = SteadyClock::now();
  const double limit = planned_seconds + 60;
  bool outage_started = false;
  while (true) {
    bool all_done = true;
    for (auto& replica : replicas) all_done = replica->Poll() && all_done;
    if (at_outage && !outage_started && flags.outage_at_ms > 0 &&
        absl::ToUnixMillis(absl::Now()) >= flags.outage_at_ms) {
      at_outage();
      outage_started = true;
    }
    const double elapsed = std::chrono::duration<double>(SteadyClock::now() - start).count();
    progress.Tick(std::min(elapsed, planned_seconds));
    if (all_done) break;
    if (elapsed > limit) {
      absl::FPrintF(stderr, "\ntiercache-demo: replicas did not finish within %.0f s\n", limit);
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  progress.EndPhase(planned_seconds);
  Tally total;
  for (auto& replica : replicas) {
    std::optional<Tally> t = replica->Result();
    if (!t.has_value()) {
      absl::FPrintF(stderr, "\ntiercache-demo: a replica exited without a result\n");
      return std::nullopt;
    }
    total.Merge(*t);
  }
  return total;
}

double Percent(uint64_t part, uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

// What the phases after the modes measured, for the chart's third panel
// (absent when the run had no L2).
struct TroublePanel {
  uint64_t stampede_leases = 0;  // database queries for the one key
  uint64_t stampede_aside = 0;
  bool outage = false;  // the outage phases ran: % of requests sent to the database
  double outage_plain = 0;
  double outage_gutter = 0;
};

// Bars of one group of the third panel, each scaled to the group's largest.
void AppendGroup(std::string* svg, int x, int bottom, int plot_height, std::string_view title,
                 const std::vector<std::pair<std::string, double>>& bars, std::string_view unit) {
  double largest = 1e-9;
  for (const auto& [label, value] : bars) largest = std::max(largest, value);
  absl::StrAppend(svg, absl::StrFormat(R"(<text x="%d" y="%d" text-anchor="middle">%s</text>)"
                                       "\n",
                                       x + 75, bottom + 32, title));
  for (size_t i = 0; i < bars.size(); ++i) {
    const int h = std::max(1, static_cast<int>(bars[i].second / largest * plot_height));
    const int bx = x + static_cast<int>(i) * 80;
    absl::StrAppend(svg, absl::StrFormat(R"(<rect x="%d" y="%d" width="60" height="%d" fill="%s"/>)"
                                         "\n"
                                         R"(<text x="%d" y="%d" text-anchor="middle">%s%s</text>)"
                                         "\n"
                                         R"(<text x="%d" y="%d" text-anchor="middle">%s</text>)"
                                         "\n",
                                         bx, bottom - h, h, i == 0 ? "#c0504d" : "#5aa05a", bx + 30,
                                         bottom - h - 5, absl::StrFormat("%.3g", bars[i].second),
                                         unit, bx + 30, bottom + 16, bars[i].first));
  }
}

// A bar chart: throughput per mode, who answered the requests, and (with an
// L2) the database's queries in a stampede and in a server outage.
bool WriteChart(const std::string& path, const Flags& flags,
                const std::vector<std::pair<Mode, Tally>>& rows, const TroublePanel* trouble) {
  const int kWidth = trouble != nullptr ? 1500 : 1100;
  constexpr int kHeight = 420;
  std::string svg = absl::StrFormat(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" )"
      R"(font-family="sans-serif" font-size="12">)"
      "\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      kWidth, kHeight, kWidth, kHeight);
  absl::StrAppend(
      &svg,
      absl::StrFormat(
          R"(<text x="20" y="28" font-size="16" font-weight="bold">tiercache demo: %d replicas x %d threads, %d users Zipf(%.2f), in front of SQLite</text>)"
          "\n",
          flags.replicas, flags.threads, flags.keys, flags.zipf));
  const int top = 70;
  const int bottom = 340;
  const int plot_height = bottom - top;
  double max_rate = 1;
  for (const auto& [mode, t] : rows) {
    max_rate = std::max(max_rate, static_cast<double>(t.requests) / std::max(t.seconds, 1e-9));
  }
  // Left: throughput.
  absl::StrAppend(&svg, R"(<text x="20" y="55" font-weight="bold">requests per second</text>)",
                  "\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Tally& t = rows[i].second;
    const double rate = static_cast<double>(t.requests) / std::max(t.seconds, 1e-9);
    const int h = static_cast<int>(rate / max_rate * plot_height);
    const int x = 40 + static_cast<int>(i) * 100;
    absl::StrAppend(
        &svg,
        absl::StrFormat(R"(<rect x="%d" y="%d" width="70" height="%d" fill="#3b6ea8"/>)"
                        "\n"
                        R"(<text x="%d" y="%d" text-anchor="middle">%.0f</text>)"
                        "\n"
                        R"(<text x="%d" y="%d" text-anchor="middle">%s</text>)"
                        "\n"
                        R"(<text x="%d" y="%d" text-anchor="middle" fill="#555">p50 %s</text>)"
                        "\n",
                        x, bottom - h, std::max(h, 1), x + 35, bottom - h - 5, rate, x + 35,
                        bottom + 16, ModeShort(rows[i].first), x + 35, bottom + 32,
                        XmlText(LatencyText(t.latency.QuantileMs(0.5)))));
  }
  // Right: who answered.
  const int left = 560;
  absl::StrAppend(&svg, absl::StrFormat(R"(<text x="%d" y="55" font-weight="bold">)"
                                        "answered by: L1 / L2 / the database (%%)</text>\n",
                                        left));
  const std::array<const char*, 3> colors = {"#5aa05a", "#e0a030", "#c0504d"};
  for (size_t i = 0; i < rows.size(); ++i) {
    const Tally& t = rows[i].second;
    const double total = static_cast<double>(std::max<uint64_t>(t.requests, 1));
    const double l2 = static_cast<double>(t.l2_hits);
    const double l1 = static_cast<double>(t.l1_hits);
    const std::array<double, 3> shares = {l1 / total, l2 / total,
                                          std::max(0.0, 1.0 - (l1 + l2) / total)};
    const int x = left + 20 + static_cast<int>(i) * 100;
    double y = bottom;
    for (int s = 0; s < 3; ++s) {
      const double h = shares[s] * plot_height;
      if (h >= 0.5) {
        absl::StrAppend(
            &svg, absl::StrFormat(R"(<rect x="%d" y="%.1f" width="70" height="%.1f" fill="%s"/>)"
                                  "\n",
                                  x, y - h, h, colors[s]));
        if (h > 14) {
          absl::StrAppend(&svg, absl::StrFormat(R"(<text x="%d" y="%.1f" text-anchor="middle" )"
                                                R"(fill="white">%.0f</text>)"
                                                "\n",
                                                x + 35, y - h / 2 + 4, shares[s] * 100));
        }
      }
      y -= h;
    }
    absl::StrAppend(&svg, absl::StrFormat(R"(<text x="%d" y="%d" text-anchor="middle">%s</text>)"
                                          "\n",
                                          x + 35, bottom + 16, ModeShort(rows[i].first)));
  }
  const std::array<const char*, 3> legend = {"L1 hit", "L2 hit", "database query"};
  for (int s = 0; s < 3; ++s) {
    absl::StrAppend(
        &svg, absl::StrFormat(R"(<rect x="%d" y="385" width="12" height="12" )"
                              R"(fill="%s"/><text x="%d" y="395">%s</text>)"
                              "\n",
                              left + 20 + s * 130, colors[s], left + 36 + s * 130, legend[s]));
  }
  if (trouble != nullptr) {
    const int x = 1120;
    absl::StrAppend(&svg, absl::StrFormat(R"(<text x="%d" y="55" font-weight="bold">)"
                                          "when things go wrong: the database's load</text>\n",
                                          x));
    AppendGroup(&svg, x, bottom, plot_height, "stampede: queries for 1 key",
                {{"cache-aside", static_cast<double>(trouble->stampede_aside)},
                 {"leases", static_cast<double>(trouble->stampede_leases)}},
                "");
    if (trouble->outage) {
      AppendGroup(&svg, x + 190, bottom, plot_height, "server down: requests to db",
                  {{"no gutter", trouble->outage_plain}, {"gutter", trouble->outage_gutter}}, "%");
    }
  }
  absl::StrAppend(&svg, "</svg>\n");
  std::ofstream out(path);
  out << svg;
  return static_cast<bool>(out);
}

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  const std::vector<std::string> dirs = absl::StrSplit(path, ':');
  for (const std::string& dir : dirs) {
    const std::string candidate = absl::StrFormat("%s/%s", dir, program);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
  }
  return false;
}

// A password for a --tls run's memcached: 16 random hex digits.
std::string MakePassword() {
  std::random_device device;
  return absl::StrFormat("%08x%08x", device(), device());
}

int RunCoordinator(Flags flags) {
  absl::PrintF("tiercache demo: %d application replicas (processes) x %d threads read user\n",
               flags.replicas, flags.threads);
  absl::PrintF("profiles from a SQLite database; keys Zipf(%.2f) over %d users", flags.zipf,
               flags.keys);
  if (flags.scanners > 0) {
    absl::PrintF(", except %d thread(s) per replica reading every user in turn (an export job)",
                 flags.scanners);
  }
  absl::PrintF(";\n");
  absl::PrintF("each L1 holds %d records; %.3g s per mode.\n\n", flags.l1_items, flags.duration);

  // The database: generated once, then its load measured here, alone.
  const tiercache_demo::DatasetShape shape{flags.keys, flags.orders, flags.seed};
  const SteadyClock::time_point generating = SteadyClock::now();
  absl::StatusOr<bool> generated = tiercache_demo::EnsureDataset(flags.database, shape);
  if (!generated.ok()) {
    absl::FPrintF(stderr, "tiercache-demo: %s\n", generated.status().ToString());
    return 1;
  }
  const double generate_seconds =
      std::chrono::duration<double>(SteadyClock::now() - generating).count();
  absl::StatusOr<tiercache_demo::LoadCost> cost = tiercache_demo::MeasureLoad(
      flags.database, shape, static_cast<int>(std::min<int64_t>(flags.keys, 300)));
  if (!cost.ok()) {
    absl::FPrintF(stderr, "tiercache-demo: %s\n", cost.status().ToString());
    return 1;
  }
  std::error_code size_error;
  const uintmax_t file_bytes = std::filesystem::file_size(flags.database, size_error);
  absl::PrintF("Database: %s, %s (%.0f MB%s): %d users, about %d orders each.\n",
               tiercache_demo::SqliteVersion(), flags.database,
               size_error ? 0.0 : static_cast<double>(file_bytes) / 1e6,
               *generated ? absl::StrFormat(", generated in %.1f s", generate_seconds)
                          : ", made by an earlier run",
               flags.keys, flags.orders);
  absl::PrintF(
      "A load is one SQL statement: a user's profile (orders, spend by month, latest orders)\n"
      "as JSON, %d bytes. Measured here, one at a time: p50 %s, p99 %s of real work%s.\n",
      cost->profile_bytes, LatencyText(cost->p50_ms), LatencyText(cost->p99_ms),
      flags.latency_ms > 0
          ? absl::StrFormat(", plus %.3g ms added (--latency-ms)", flags.latency_ms)
          : "");
  absl::PrintF("The stampede's key, the top spenders of the last 90 days, takes %s.\n\n",
               LatencyText(cost->report_ms));
  if (flags.metrics > 0) {
#if TIERCACHE_DEMO_METRICS
    absl::PrintF(
        "Prometheus metrics: replica i of the running phase serves "
        "http://127.0.0.1:%d+i/metrics (cache=\"<mode>\").\n\n",
        flags.metrics);
#else
    absl::FPrintF(stderr,
                  "tiercache-demo: --metrics needs tiercache::metrics (prometheus-cpp-dev)\n");
    return 2;
#endif
  }

  // --tls: every private memcached serves TLS (-Z) with a certificate made
  // now, and wants a password (-Y); the replicas verify the certificate
  // against the CA made with it.
  std::unique_ptr<tiercache::testing::TlsCertificates> certificates;
  tiercache::testing::MemcachedServer::Options server_options;
  if (flags.tls == 1) {
    if (!flags.memcached.empty()) {
      absl::FPrintF(stderr,
                    "tiercache-demo: --tls runs private memcached servers; it cannot be combined "
                    "with --memcached\n");
      return 2;
    }
    certificates = std::make_unique<tiercache::testing::TlsCertificates>();
    if (!certificates->ok()) {
      absl::FPrintF(stderr,
                    "tiercache-demo: --tls: cannot make certificates (is openssl "
                    "installed?)\n");
      return 1;
    }
    const std::string password = MakePassword();
    if (!(std::ofstream(certificates->Path("authfile")) << "demo:" << password << "\n")) {
      absl::FPrintF(stderr, "tiercache-demo: --tls: cannot write memcached's authfile\n");
      return 1;
    }
    ::setenv(kPasswordVariable, password.c_str(), 1);  // the replicas inherit it
    server_options.extra_args = certificates->ServerArgs();
    server_options.quiet = true;  // memcached 1.6.18 with TLS reports every accept4() EAGAIN
    server_options.extra_args.insert(server_options.extra_args.end(),
                                     {"-Y", certificates->Path("authfile")});
    flags.tls_ca = certificates->ca();
  }

  std::unique_ptr<tiercache::testing::MemcachedServer> server;
  std::string no_l2_reason;
  if (flags.memcached.empty()) {
    if (!OnPath("memcached")) {
      no_l2_reason = "memcached is not installed (apt-get install memcached)";
    } else {
      server = std::make_unique<tiercache::testing::MemcachedServer>(server_options);
      if (server->running()) {
        flags.memcached = server->address();
        absl::PrintF("Started a private memcached on %s for this run (stopped at the end)%s.\n\n",
                     flags.memcached,
                     flags.tls == 1 ? ", with TLS and a password made for this run" : "");
      } else {
        no_l2_reason = "the private memcached did not start";
        if (flags.tls == 1) {
          absl::FPrintF(stderr, "tiercache-demo: --tls: memcached did not start with TLS (-Z)\n");
          return 1;
        }
      }
    }
  } else {
    tiercache::MemcachedOptions probe_options;
    probe_options.servers = {flags.memcached};
    absl::StatusOr<std::unique_ptr<tiercache::MemcachedClient>> probe =
        tiercache::MemcachedClient::Create(probe_options);
    absl::Status reachable =
        probe.ok() ? (*probe)->Get("tiercache-demo-probe").status() : probe.status();
    if (reachable.ok()) {
      absl::PrintF("Using memcached at %s (keys under a prefix unique to this run).\n\n",
                   flags.memcached);
    } else {
      no_l2_reason =
          absl::StrFormat("cannot use memcached at %s: %s", flags.memcached, reachable.ToString());
    }
  }
  const bool have_l2 = no_l2_reason.empty();
  if (!have_l2) absl::PrintF("Running L1 only: %s.\n\n", no_l2_reason);
  std::fflush(stdout);  // before the progress bar on stderr

  const std::string run =
      absl::StrFormat("demo%d-%d:", ::getpid(), absl::ToUnixSeconds(absl::Now()));
  const double restart_seconds = std::min(flags.duration, 3.0);
  const double stampede_seconds = 1.5;
  std::vector<Mode> modes;
  for (Mode mode : kModes) {
    if (have_l2 || (mode != Mode::kL2 && mode != Mode::kTiered)) modes.push_back(mode);
  }
  // The outage runs on private servers of its own (it kills one).
  const bool outage = have_l2 && server != nullptr;
  Progress progress(static_cast<double>(modes.size()) * flags.duration +
                    (have_l2 ? 2 * restart_seconds + 2 * stampede_seconds : 0) +
                    (outage ? 2 * flags.duration : 0));

  std::vector<std::pair<Mode, Tally>> rows;
  bool failed = false;
  for (Mode mode : modes) {
    progress.Phase(ModeTitle(mode));
    std::optional<Tally> t =
        RunReplicas(flags, mode, absl::StrCat(run, std::string(ModeName(mode)), ":"),
                    flags.replicas, flags.duration, progress);
    if (!t.has_value()) return 1;
    failed |= t->errors + t->wrong > 0;
    rows.emplace_back(mode, *t);
  }

  std::optional<Tally> restarted, cold, stampede_tiered, stampede_aside;
  if (have_l2) {
    Flags one = flags;
    one.duration = restart_seconds;
    progress.Phase("restart: a new replica on the warm L2");
    restarted =
        RunReplicas(one, Mode::kTiered, absl::StrCat(run, "l1+l2:"), 1, restart_seconds, progress);
    progress.Phase("stampede: tiercache");
    const int64_t at = absl::ToUnixMillis(absl::Now()) + 700;
    stampede_tiered = RunReplicas(flags, Mode::kTiered, absl::StrCat(run, "stampede-t:"),
                                  flags.replicas, stampede_seconds, progress, at);
    progress.Phase("stampede: cache-aside on memcached");
    const int64_t at2 = absl::ToUnixMillis(absl::Now()) + 700;
    stampede_aside = RunReplicas(flags, Mode::kL2, absl::StrCat(run, "stampede-a:"), flags.replicas,
                                 stampede_seconds, progress, at2);
    // A replica on an empty L2, for comparison with the restarted one.
    progress.Phase("restart: a new replica on an empty L2");
    cold =
        RunReplicas(one, Mode::kTiered, absl::StrCat(run, "cold:"), 1, restart_seconds, progress);
    if (!restarted || !stampede_tiered || !stampede_aside || !cold) return 1;
  }
  // One of two memcached servers killed a third of the way in, without and
  // with a gutter pool: the database queries while it is down.
  std::optional<Tally> outage_plain, outage_gutter;
  for (bool gutter : {false, true}) {
    if (!outage) break;
    tiercache::testing::MemcachedServer first(server_options), second(server_options),
        spare(server_options);
    if (!first.running() || !second.running() || !spare.running()) {
      absl::FPrintF(stderr, "\ntiercache-demo: the outage's private memcached did not start\n");
      return 1;
    }
    Flags pool = flags;
    pool.memcached = absl::StrCat(first.address(), ",", second.address());
    pool.gutter = gutter ? spare.address() : "";
    pool.outage_at_ms =
        absl::ToUnixMillis(absl::Now()) + static_cast<int64_t>(flags.duration * 1000 / 3);
    progress.Phase(gutter ? "outage: with a gutter pool" : "outage: without a gutter");
    std::optional<Tally> t =
        RunReplicas(pool, Mode::kTiered, absl::StrCat(run, gutter ? "outage-g:" : "outage:"),
                    flags.replicas, flags.duration, progress, 0, [&first] { first.Stop(); });
    if (!t.has_value()) return 1;
    (gutter ? outage_gutter : outage_plain) = t;
    failed |= t->errors + t->wrong > 0;
  }
  progress.Done();

  // "to db": the share of requests that reached the database. With a slow
  // database the run is bound by it, so the loads in a fixed time are alike
  // across modes; the share is what a cache saves.
  absl::PrintF("%-22s %12s %8s %8s %9s %7s %9s %9s\n", "mode", "requests/s", "L1 hit", "L2 hit",
               "db loads", "to db", "p50", "p99");
  for (const auto& [mode, t] : rows) {
    const bool l1 = HasL1(mode);
    const bool l2 = mode == Mode::kL2 || mode == Mode::kTiered;
    absl::PrintF("%-22s %12.0f %8s %8s %9d %6.1f%% %9s %9s\n", ModeTitle(mode),
                 static_cast<double>(t.requests) / t.seconds,
                 l1 ? absl::StrFormat("%.1f%%", Percent(t.l1_hits, t.requests)) : "-",
                 l2 ? absl::StrFormat("%.1f%%", Percent(t.l2_hits, t.requests)) : "-", t.loads,
                 Percent(t.loads, t.requests), LatencyText(t.latency.QuantileMs(0.5)),
                 LatencyText(t.latency.QuantileMs(0.99)));
  }
  if (!have_l2) {
    absl::PrintF("%-22s %s\n%-22s %s\n", ModeTitle(Mode::kL2), "n/a: no memcached",
                 ModeTitle(Mode::kTiered), "n/a: no memcached");
  }
  if (have_l2) {
    auto first_seconds = [](const Tally& t) {
      return absl::StrFormat("%5.1f%% from L1, %5.1f%% from L2, %d database loads in %.1f s",
                             Percent(t.l1_hits, t.requests), Percent(t.l2_hits, t.requests),
                             t.loads, t.seconds);
    };
    absl::PrintF("\nrestart: a new replica process on the L2 the others filled\n");
    absl::PrintF("  restarted replica   %s\n", first_seconds(*restarted));
    absl::PrintF("  on an empty L2      %s\n", first_seconds(*cold));
    absl::PrintF("\nstampede: %d replicas x %d threads ask for one missing key at once\n",
                 flags.replicas, flags.threads);
    absl::PrintF("  tiercache (leases)          %d database load(s)\n", stampede_tiered->loads);
    absl::PrintF("  cache-aside on memcached    %d database load(s)\n", stampede_aside->loads);
    failed |= stampede_tiered->loads != 1;
    if (outage_plain.has_value() && outage_gutter.has_value()) {
      absl::PrintF(
          "\noutage: 2 memcached servers, one killed (SIGKILL) %.1f s into a %.3g s run of "
          "L1 + L2\n",
          flags.duration / 3, flags.duration);
      // The database is the bottleneck, so its queries per second hardly
      // move; what a gutter changes is how many requests need one.
      for (const auto& [title, t] : {std::pair{"without a gutter pool", *outage_plain},
                                     std::pair{"with a gutter pool", *outage_gutter}}) {
        absl::PrintF(
            "  %-26s %5.1f%% of requests went to the database while it was down (%d of %d)\n",
            title, Percent(t.outage_loads, t.outage_requests), t.outage_loads, t.outage_requests);
      }
    }
    failed |= stampede_tiered->errors + stampede_tiered->wrong + restarted->errors +
                  restarted->wrong + cold->errors + cold->wrong >
              0;
  }
  uint64_t errors = 0;
  for (const auto& [mode, t] : rows) errors += t.errors + t.wrong;
  absl::PrintF("\nerrors or wrong records: %d\n", errors);
  TroublePanel trouble;
  if (have_l2) {
    trouble.stampede_leases = stampede_tiered->loads;
    trouble.stampede_aside = stampede_aside->loads;
    if (outage_plain.has_value() && outage_gutter.has_value()) {
      trouble.outage = true;
      trouble.outage_plain = Percent(outage_plain->outage_loads, outage_plain->outage_requests);
      trouble.outage_gutter = Percent(outage_gutter->outage_loads, outage_gutter->outage_requests);
    }
  }
  if (WriteChart(flags.chart, flags, rows, have_l2 ? &trouble : nullptr)) {
    absl::PrintF("chart: %s\n", flags.chart);
  } else {
    absl::FPrintF(stderr, "tiercache-demo: cannot write %s\n", flags.chart);
    failed = true;
  }
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (int exit_code = 0; !ParseFlags(argc, argv, &flags, &exit_code)) return exit_code;
  if (flags.role == "replica") return RunReplica(flags);
  return RunCoordinator(flags);
}
