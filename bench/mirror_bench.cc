// bench/mirror_bench.cc — the L2 client (MemcachedClient) and the write
// replication (Mirror) against libmemcached, measured in the same run on
// loopback against one private memcached that this program starts (a figure
// without its baseline means little on a shared machine).
//
//   1. async sets   Mirror (kAsync, default options) ReplicateValue x N, then
//                   Flush(); wall time from the first call to Flush's return.
//                   Stats() must show replicated == N, failed == 0.
//                   Baseline: libmemcached, NOREPLY + BUFFER_REQUESTS,
//                   memcached_set x N, memcached_flush_buffers, then one
//                   blocking get on the same connection (ordered after the
//                   sets, so the server has processed every one of them).
//   2. get latency  sequential blocking Gets of existing keys, one thread,
//                   each timed with a steady clock; p50, p99, mean. Blocks of
//                   1000 Gets alternate between the two clients.
//                   Baseline: memcached_get, default behaviors + TCP_NODELAY.
//   3. GetMany(100) 100 distinct existing keys per call, keys/s.
//                   Baseline: memcached_mget + memcached_fetch_result loop.
//   4. 8 threads    sharing one MemcachedClient (default options: 2
//                   connections), Gets, total gets/s.
//                   Baseline: 8 threads, each its own memcached_st (a
//                   memcached_clone of one configured handle).
//   5. recording    the cost of MemcachedOptions::record_latency (on by
//                   default): two MemcachedClients that differ only in it,
//                   the same work. Blocking-get p50 and mean (blocks of 1000
//                   alternating) and 8 threads' gets/s (median of 5,
//                   alternating). Pinned: memcached on CPU 1, every client
//                   thread on CPU 0, so both clients get the same layout
//                   (see PinThisThread). Target: on within 3% of off.
//
// Workload: keys "key:%08d" over 10000 distinct keys, 100-byte values.
// Throughput figures are the median of 3 repetitions; within a repetition
// the two clients run back to back, in alternating order.
//
// Flags: --quick (smaller N and shorter runs: a smoke test), --json=PATH,
// --only=sets|latency|getmany|threads|recording.

#include <libmemcached/memcached.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "bench_support.h"
#include "memcached_server.h"
#include "tiercache/memcached.h"
#include "tiercache/mirror.h"

namespace tiercache_bench {
namespace {

// Runs the two clients of a repetition back to back, swapping which goes
// first on every other repetition, so neither always runs on a warmer or
// colder machine.
template <typename A, typename B>
void RunInAlternatingOrder(int repetition, A& tiercache, B& libmemcached) {
  if (repetition % 2 == 0) {
    tiercache();
    libmemcached();
  } else {
    libmemcached();
    tiercache();
  }
}

using Clock = std::chrono::steady_clock;

constexpr size_t kDistinctKeys = 10000;
constexpr size_t kValueSize = 100;
constexpr size_t kGetManyKeys = 100;
constexpr int kThreads = 8;
constexpr int kRepetitions = 3;

struct Config {
  bool quick = false;
  std::string json_path;
  std::string only;              // "", or one of sets, latency, getmany, threads (for profiling)
  size_t sets = 200000;          // benchmark 1
  size_t latency_gets = 20000;   // benchmark 2, per client
  size_t warmup = 1000;          // per client, before benchmark 2
  size_t latency_block = 1000;   // ops per client before switching
  double getmany_seconds = 2.0;  // benchmark 3, per client and repetition
  double threads_seconds = 3.0;  // benchmark 4, per client and repetition
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Every non-OK status a tiercache call returned (and every libmemcached
// failure), by call and message, so that a run says exactly what went wrong.
class ErrorTally {
 public:
  void Add(const std::string& what, uint64_t n = 1) {
    std::lock_guard<std::mutex> hold(mu_);
    counts_[what] += n;
  }
  void Add(std::string_view call, const absl::Status& status, uint64_t n = 1) {
    // Group by message: quoted parts (keys) become '...', and long messages
    // are cut, so that one cause is one line however many keys it hit.
    std::string message;
    bool quoted = false;
    for (char c : std::string_view(status.message().data(), status.message().size())) {
      if (c == '\'') {
        if (!quoted) message += "'...'";
        quoted = !quoted;
      } else if (!quoted) {
        message += c;
      }
    }
    if (message.size() > 160) message = message.substr(0, 160) + "...";
    Add(absl::StrFormat("%s: %s: %s", std::string(call), absl::StatusCodeToString(status.code()),
                        message),
        n);
  }
  void Merge(const ErrorTally& other) {
    std::lock_guard<std::mutex> hold(mu_);
    for (const auto& [what, n] : other.counts_) counts_[what] += n;
  }
  uint64_t Total() const {
    std::lock_guard<std::mutex> hold(mu_);
    uint64_t total = 0;
    for (const auto& entry : counts_) total += entry.second;
    return total;
  }
  std::map<std::string, uint64_t> Counts() const {
    std::lock_guard<std::mutex> hold(mu_);
    return counts_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> counts_;
};

// Errors met inside a timed loop that may fail often (a full replication
// queue fails every write): an atomic count per status code and the first
// status of each code, so that counting costs next to nothing. Turned into
// ErrorTally lines after the clock stops.
class CodeTally {
 public:
  void Add(const absl::Status& status) {
    const size_t code = std::min<size_t>(static_cast<size_t>(status.code()), kCodes - 1);
    if (counts_[code].fetch_add(1, std::memory_order_relaxed) == 0) {
      std::lock_guard<std::mutex> hold(mu_);
      first_[code] = status;
    }
  }
  uint64_t Total() const {
    uint64_t total = 0;
    for (const auto& count : counts_) total += count.load(std::memory_order_relaxed);
    return total;
  }
  // Moves the counts into `tally` (under `call`) and starts again from zero.
  void DrainInto(ErrorTally& tally, std::string_view call) {
    std::lock_guard<std::mutex> hold(mu_);
    for (size_t code = 0; code < kCodes; ++code) {
      const uint64_t n = counts_[code].exchange(0, std::memory_order_relaxed);
      if (n > 0) tally.Add(call, first_[code], n);
    }
  }

 private:
  static constexpr size_t kCodes = 17;  // absl::StatusCode 0..16
  std::array<std::atomic<uint64_t>, kCodes> counts_{};
  std::mutex mu_;
  std::array<absl::Status, kCodes> first_;
};

// --- libmemcached helpers -------------------------------------------------

memcached_st* NewLibmemcached(int port, bool noreply_buffered) {
  memcached_st* memc = memcached_create(nullptr);
  if (memc == nullptr) return nullptr;
  memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
  if (noreply_buffered) {
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_NOREPLY, 1);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
  }
  if (memcached_server_add(memc, "127.0.0.1", static_cast<in_port_t>(port)) != MEMCACHED_SUCCESS) {
    memcached_free(memc);
    return nullptr;
  }
  return memc;
}

struct MemcFree {
  void operator()(memcached_st* memc) const { memcached_free(memc); }
};
using MemcPtr = std::unique_ptr<memcached_st, MemcFree>;

std::string LibError(memcached_st* memc, memcached_return_t rc) {
  return absl::StrFormat("%s (%s)", memcached_strerror(memc, rc),
                         memcached_last_error_message(memc));
}

// --- the fixture ------------------------------------------------------------

struct Fixture {
  Config config;
  tiercache::testing::MemcachedServer* server = nullptr;
  std::vector<std::string> keys;  // kDistinctKeys, "key:%08d"
  ErrorTally tiercache_errors;
  ErrorTally libmemcached_errors;
  std::vector<std::string> notes;
  memcached_st* stats = nullptr;  // its own connection, for the server's rusage
};

// CPU seconds used so far by this process (every thread: callers, the
// Mirror's sender) and by the memcached server (its `stats` rusage).
struct CpuSample {
  double client = 0, server = 0;
  double switches = 0;  // this process's context switches, voluntary or not
  Clock::time_point when;
};

CpuSample SampleCpu(const Fixture& f) {
  CpuSample sample;
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  sample.client = seconds(usage.ru_utime) + seconds(usage.ru_stime);
  sample.switches = static_cast<double>(usage.ru_nvcsw + usage.ru_nivcsw);
  sample.when = Clock::now();
  memcached_return_t rc;
  memcached_stat_st* stat = memcached_stat(f.stats, nullptr, &rc);
  if (stat != nullptr) {
    if (rc == MEMCACHED_SUCCESS) {
      sample.server =
          static_cast<double>(stat->rusage_user_seconds + stat->rusage_system_seconds) +
          static_cast<double>(stat->rusage_user_microseconds + stat->rusage_system_microseconds) /
              1e6;
    }
    memcached_stat_free(f.stats, stat);
  }
  return sample;
}

// CPU per operation of one client over its phases, client side and server side.
// With the context switches per operation and the cores kept busy (client
// and server CPU over wall time; the machine's other tenants not counted).
struct CpuPerOp {
  double client = 0, server = 0, wall = 0;  // seconds, summed over phases
  double switches = 0, ops = 0;
  void Add(const CpuSample& before, const CpuSample& after, double n) {
    client += after.client - before.client;
    server += after.server - before.server;
    switches += after.switches - before.switches;
    wall += Seconds(after.when - before.when);
    ops += n;
  }
  std::string Text() const {
    if (ops <= 0) return "-";
    return absl::StrFormat("client %.2f us + server %.2f us, %.2f ctx switches, %.2f cores busy",
                           client / ops * 1e6, server / ops * 1e6, switches / ops,
                           wall > 0 ? (client + server) / wall : 0.0);
  }
};

// Values are 100 bytes; `tag` makes each run's values recognisable, so a
// read-back can tell that the last write of that run landed.
std::string MakeValue(std::string_view tag) {
  std::string value(kValueSize, 'v');
  value.replace(0, std::min(tag.size(), kValueSize), tag.substr(0, kValueSize));
  return value;
}

// --- result rows -----------------------------------------------------------

struct Row {
  std::string name;
  std::string unit;
  double tiercache = 0;
  double libmemcached = 0;
  bool higher_is_better = true;
  double target = 1.0;  // ratio tiercache / libmemcached: >= target, or <= target
  std::vector<double> tiercache_runs;
  std::vector<double> libmemcached_runs;
  std::string remark;                        // a failed correctness check, etc.
  CpuPerOp tiercache_cpu, libmemcached_cpu;  // where the CPU goes, per operation
  bool valid = true;  // false: the tiercache figure does not count (e.g. writes lost)

  Row(std::string name_, std::string unit_, bool higher_is_better_ = true, double target_ = 1.0)
      : name(std::move(name_)),
        unit(std::move(unit_)),
        higher_is_better(higher_is_better_),
        target(target_) {}

  double Ratio() const { return libmemcached > 0 ? tiercache / libmemcached : 0.0; }
  bool Pass() const {
    if (!valid) return false;
    return higher_is_better ? Ratio() >= target : Ratio() <= target;
  }
  std::string TargetText() const {
    return absl::StrFormat("%s %.*fx", higher_is_better ? ">=" : "<=",
                           target == std::round(target * 10) / 10 ? 1 : 2, target);
  }
};

// A latency row (lower is better): `measured` against `baseline`, the
// baseline measured in the same run.
Row LatencyRow(std::string name, double target, double measured, double baseline,
               std::string remark) {
  Row row(std::move(name), "us", /*higher_is_better=*/false, target);
  row.tiercache = measured;
  row.libmemcached = baseline;
  row.remark = std::move(remark);
  return row;
}

// --- 1. replicated asynchronous sets ------------------------------------

struct SetRun {
  double seconds = 0;
  uint64_t replicated = 0, failed = 0, dropped = 0, call_errors = 0;
  bool read_back_ok = false;
};

SetRun MirrorSets(Fixture& f, tiercache::Mirror& mirror, tiercache::MemcachedClient& checker,
                  const std::string& value, CodeTally& call_errors) {
  SetRun run;
  const tiercache::MirrorStats before = mirror.Stats();
  const size_t n = f.config.sets;
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    absl::Status s = mirror.ReplicateValue(f.keys[i % kDistinctKeys], value);
    if (!s.ok()) call_errors.Add(s);
  }
  absl::Status flushed = mirror.Flush(absl::Seconds(60));
  run.seconds = Seconds(Clock::now() - start);
  run.call_errors = call_errors.Total();
  call_errors.DrainInto(f.tiercache_errors, "Mirror::ReplicateValue");
  if (!flushed.ok()) f.tiercache_errors.Add("Mirror::Flush", flushed);
  const tiercache::MirrorStats after = mirror.Stats();
  run.replicated = after.replicated - before.replicated;
  run.failed = after.failed - before.failed;
  run.dropped = after.dropped - before.dropped;
  // Outside the timing: the last write of this run must be what L2 holds.
  absl::StatusOr<std::optional<tiercache::Item>> last =
      checker.Get(f.keys[(n - 1) % kDistinctKeys]);
  if (!last.ok()) f.tiercache_errors.Add("MemcachedClient::Get (read-back)", last.status());
  run.read_back_ok = last.ok() && last->has_value() && (*last)->value == value;
  return run;
}

SetRun LibmemcachedSets(Fixture& f, memcached_st* writer, const std::string& value) {
  SetRun run;
  const size_t n = f.config.sets;
  const std::string& last_key = f.keys[(n - 1) % kDistinctKeys];
  memcached_behavior_set(writer, MEMCACHED_BEHAVIOR_NOREPLY, 1);  // a flag: no reconnect
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    const std::string& key = f.keys[i % kDistinctKeys];
    memcached_return_t rc =
        memcached_set(writer, key.data(), key.size(), value.data(), value.size(), 0, 0);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_BUFFERED) {
      ++run.call_errors;
      f.libmemcached_errors.Add("memcached_set: " + LibError(writer, rc));
    }
  }
  memcached_return_t rc = memcached_flush_buffers(writer);
  if (rc != MEMCACHED_SUCCESS)
    f.libmemcached_errors.Add("memcached_flush_buffers: " + LibError(writer, rc));
  // One blocking round trip on the same connection: memcached answers it
  // only after it has processed every set before it.
  memcached_behavior_set(writer, MEMCACHED_BEHAVIOR_NOREPLY, 0);
  size_t length = 0;
  uint32_t flags = 0;
  char* got = memcached_get(writer, last_key.data(), last_key.size(), &length, &flags, &rc);
  run.seconds = Seconds(Clock::now() - start);
  run.read_back_ok = got != nullptr && std::string_view(got, length) == value;
  if (got == nullptr)
    f.libmemcached_errors.Add("memcached_get (read-back): " + LibError(writer, rc));
  std::free(got);
  memcached_behavior_set(writer, MEMCACHED_BEHAVIOR_NOREPLY, 1);
  run.replicated = n - run.call_errors;  // all it can know: NOREPLY reports nothing
  return run;
}

// `max_queued`: nullopt keeps MirrorOptions' default queue bound; a value
// overrides it (the informational run that lets the whole burst queue).
Row BenchAsyncSets(Fixture& f, std::optional<size_t> max_queued) {
  Row row(max_queued ? absl::StrFormat("async sets, queue=%d", *max_queued)
                     : std::string("async replicated sets"),
          "sets/s", /*higher_is_better=*/true, max_queued ? 0.0 : 1.0);
  tiercache::MemcachedOptions options;
  options.servers = {f.server->address()};
  absl::StatusOr<std::unique_ptr<tiercache::MemcachedClient>> client =
      tiercache::MemcachedClient::Create(options);
  if (!client.ok()) {
    row.valid = false;
    row.remark = "MemcachedClient::Create: " + client.status().ToString();
    return row;
  }
  tiercache::MirrorOptions mirror_options;  // defaults; on_error only tallies
  if (max_queued) mirror_options.max_queued_writes = *max_queued;
  CodeTally reported, call_errors;
  mirror_options.on_error = [&reported](std::string_view, const absl::Status& why) {
    reported.Add(why);
  };
  absl::StatusOr<std::unique_ptr<tiercache::Mirror>> mirror =
      tiercache::Mirror::Create(client->get(), mirror_options);
  if (!mirror.ok()) {
    row.valid = false;
    row.remark = "Mirror::Create: " + mirror.status().ToString();
    return row;
  }
  MemcPtr writer(NewLibmemcached(f.server->port(), /*noreply_buffered=*/true));

  uint64_t replicated = 0, failed = 0, dropped = 0, total_call_errors = 0, expected = 0;
  bool read_back = true, lib_read_back = true;
  for (int rep = 0; rep < kRepetitions; ++rep) {
    const std::string tiercache_value = MakeValue(absl::StrFormat("mirror-rep%d:", rep));
    const std::string lib_value = MakeValue(absl::StrFormat("libmemcached-rep%d:", rep));
    auto run_tiercache = [&] {
      const CpuSample before = SampleCpu(f);
      SetRun r = MirrorSets(f, **mirror, **client, tiercache_value, call_errors);
      row.tiercache_cpu.Add(before, SampleCpu(f), static_cast<double>(f.config.sets));
      row.tiercache_runs.push_back(static_cast<double>(r.replicated) / r.seconds);
      replicated += r.replicated;
      failed += r.failed;
      dropped += r.dropped;
      total_call_errors += r.call_errors;
      expected += f.config.sets;
      read_back = read_back && r.read_back_ok;
    };
    auto run_lib = [&] {
      const CpuSample before = SampleCpu(f);
      SetRun r = LibmemcachedSets(f, writer.get(), lib_value);
      row.libmemcached_cpu.Add(before, SampleCpu(f), static_cast<double>(f.config.sets));
      row.libmemcached_runs.push_back(static_cast<double>(r.replicated) / r.seconds);
      lib_read_back = lib_read_back && r.read_back_ok;
    };
    RunInAlternatingOrder(rep, run_tiercache, run_lib);
  }
  row.tiercache = Median(row.tiercache_runs);
  row.libmemcached = Median(row.libmemcached_runs);
  // The Mirror is idle now (flushed): its on_error calls are all counted.
  const uint64_t on_error_calls = reported.Total();
  reported.DrainInto(f.tiercache_errors, "Mirror on_error");
  if (replicated != expected || failed != 0) {
    row.valid = false;
    row.remark = absl::StrFormat(
        "Mirror Stats() over %d runs: replicated %d of %d, failed %d, dropped %d "
        "(ReplicateValue errors %d, on_error calls %d)",
        kRepetitions, replicated, expected, failed, dropped, total_call_errors, on_error_calls);
  } else {
    row.remark = absl::StrFormat(
        "Mirror Stats(): replicated == N (%d per run), failed 0, dropped 0", f.config.sets);
  }
  row.remark += absl::StrFormat("; max_queued_writes %d, max_batch %d",
                                mirror_options.max_queued_writes, mirror_options.max_batch);
  if (!read_back) row.remark += "; Mirror read-back of the last key FAILED";
  if (!lib_read_back) row.remark += "; libmemcached read-back of the last key FAILED";
  if (max_queued) return row;
  f.notes.push_back(
      "async sets: libmemcached with NOREPLY learns nothing about failed writes (the server "
      "answers nothing); the Mirror counts every failed write in Stats() and reports it to "
      "on_error. The sets/s figures count acknowledged (Mirror) or sent (libmemcached) writes.");
  return row;
}

// --- 2. blocking get latency ---------------------------------------------

struct Latency {
  double p50_us = 0, p99_us = 0, mean_us = 0;
};

Latency Summarize(std::vector<int64_t> ns) {
  Latency l;
  if (ns.empty()) return l;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    const size_t i =
        std::min(ns.size() - 1, static_cast<size_t>(q * static_cast<double>(ns.size())));
    return static_cast<double>(ns[i]) / 1000.0;
  };
  l.p50_us = at(0.50);
  l.p99_us = at(0.99);
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  l.mean_us = sum / static_cast<double>(ns.size()) / 1000.0;
  return l;
}

// One timed tiercache Get; the result is checked (and destroyed) after the
// clock stops. Returns the nanoseconds.
int64_t TimedTiercacheGet(Fixture& f, tiercache::MemcachedClient& client, const std::string& key,
                          uint64_t* misses) {
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::optional<tiercache::Item>> r = client.Get(key);
  const Clock::time_point end = Clock::now();
  if (!r.ok()) {
    f.tiercache_errors.Add("MemcachedClient::Get", r.status());
  } else if (!r->has_value() || (*r)->value.size() != kValueSize) {
    ++*misses;
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
}

int64_t TimedLibGet(Fixture& f, memcached_st* memc, const std::string& key, uint64_t* misses) {
  size_t length = 0;
  uint32_t flags = 0;
  memcached_return_t rc;
  const Clock::time_point start = Clock::now();
  char* value = memcached_get(memc, key.data(), key.size(), &length, &flags, &rc);
  const Clock::time_point end = Clock::now();
  if (value == nullptr) {
    if (rc == MEMCACHED_NOTFOUND) {
      ++*misses;
    } else {
      f.libmemcached_errors.Add("memcached_get: " + LibError(memc, rc));
    }
  } else if (length != kValueSize) {
    ++*misses;
  }
  std::free(value);
  return std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
}

std::vector<Row> BenchGetLatency(Fixture& f, tiercache::MemcachedClient& client,
                                 memcached_st* memc) {
  SplitMix64 rng{42};
  std::vector<size_t> order(f.config.latency_gets);
  for (size_t& i : order) i = rng.NextBelow(kDistinctKeys);
  uint64_t tiercache_misses = 0, lib_misses = 0;
  for (size_t i = 0; i < f.config.warmup; ++i) {
    TimedTiercacheGet(f, client, f.keys[rng.NextBelow(kDistinctKeys)], &tiercache_misses);
    TimedLibGet(f, memc, f.keys[rng.NextBelow(kDistinctKeys)], &lib_misses);
  }
  tiercache_misses = lib_misses = 0;
  std::vector<int64_t> tiercache_ns, lib_ns;
  CpuPerOp tiercache_cpu, lib_cpu;
  tiercache_ns.reserve(order.size());
  lib_ns.reserve(order.size());
  const size_t block = f.config.latency_block;
  for (size_t begin = 0, b = 0; begin < order.size(); begin += block, ++b) {
    const size_t end = std::min(order.size(), begin + block);
    auto tiercache_block = [&] {
      const CpuSample before = SampleCpu(f);
      for (size_t i = begin; i < end; ++i) {
        tiercache_ns.push_back(TimedTiercacheGet(f, client, f.keys[order[i]], &tiercache_misses));
      }
      tiercache_cpu.Add(before, SampleCpu(f), static_cast<double>(end - begin));
    };
    auto lib_block = [&] {
      const CpuSample before = SampleCpu(f);
      for (size_t i = begin; i < end; ++i) {
        lib_ns.push_back(TimedLibGet(f, memc, f.keys[order[i]], &lib_misses));
      }
      lib_cpu.Add(before, SampleCpu(f), static_cast<double>(end - begin));
    };
    if (b % 2 == 0) {
      tiercache_block();
      lib_block();
    } else {
      lib_block();
      tiercache_block();
    }
  }
  const Latency t = Summarize(tiercache_ns);
  const Latency l = Summarize(lib_ns);
  std::string remark =
      absl::StrFormat("%d gets per client, blocks of %d alternating", order.size(), block);
  if (tiercache_misses + lib_misses > 0) {
    remark += absl::StrFormat("; MISSES (keys should all exist): tiercache %d, libmemcached %d",
                              tiercache_misses, lib_misses);
  }
  std::vector<Row> rows;
  rows.push_back(LatencyRow("get latency p50", 1.1, t.p50_us, l.p50_us, remark));
  rows.push_back(LatencyRow("get latency p99", 1.1, t.p99_us, l.p99_us, remark));
  // The mean is reported, not judged (target 0).
  rows.push_back(LatencyRow("get latency mean (info)", 0.0, t.mean_us, l.mean_us, "informational"));
  for (Row& row : rows) {
    row.valid = tiercache_misses == 0;
    row.tiercache_cpu = tiercache_cpu;
    row.libmemcached_cpu = lib_cpu;
  }
  return rows;
}

// --- 3. GetMany of 100 keys ---------------------------------------------------

// Batches of kGetManyKeys distinct key indices.
std::vector<std::vector<size_t>> MakeBatches(size_t count, uint64_t seed) {
  SplitMix64 rng{seed};
  std::vector<std::vector<size_t>> batches(count);
  std::vector<bool> taken(kDistinctKeys, false);
  for (auto& batch : batches) {
    while (batch.size() < kGetManyKeys) {
      const size_t k = rng.NextBelow(kDistinctKeys);
      if (taken[k]) continue;
      taken[k] = true;
      batch.push_back(k);
    }
    for (size_t k : batch) taken[k] = false;
  }
  return batches;
}

Row BenchGetMany(Fixture& f, tiercache::MemcachedClient& client, memcached_st* memc) {
  Row row("GetMany(100) vs mget", "keys/s");
  const std::vector<std::vector<size_t>> batches = MakeBatches(1024, 7);
  // Pre-built argument arrays for both clients, so the timed loops only call.
  std::vector<std::vector<std::string_view>> views(batches.size());
  std::vector<std::vector<const char*>> pointers(batches.size());
  std::vector<std::vector<size_t>> lengths(batches.size());
  for (size_t b = 0; b < batches.size(); ++b) {
    for (size_t k : batches[b]) {
      views[b].push_back(f.keys[k]);
      pointers[b].push_back(f.keys[k].data());
      lengths[b].push_back(f.keys[k].size());
    }
  }
  uint64_t tiercache_short = 0, lib_short = 0;  // calls that found fewer than 100 hits
  const double duration = f.config.getmany_seconds;

  auto run_tiercache = [&](size_t warm_calls) {
    uint64_t keys = 0;
    size_t b = 0;
    const CpuSample cpu_before = SampleCpu(f);
    const Clock::time_point start = Clock::now();
    Clock::time_point now = start;
    for (size_t calls = 0; warm_calls ? calls < warm_calls : Seconds(now - start) < duration;
         ++calls) {
      absl::StatusOr<absl::flat_hash_map<std::string, tiercache::Item>> r =
          client.GetMany(views[b]);
      if (!r.ok()) {
        f.tiercache_errors.Add("MemcachedClient::GetMany", r.status());
      } else {
        keys += kGetManyKeys;
        if (r->size() != kGetManyKeys) ++tiercache_short;
      }
      b = (b + 1) % batches.size();
      now = Clock::now();
    }
    if (warm_calls == 0) row.tiercache_cpu.Add(cpu_before, SampleCpu(f), static_cast<double>(keys));
    return static_cast<double>(keys) / Seconds(now - start);
  };
  auto run_lib = [&](size_t warm_calls) {
    uint64_t keys = 0;
    size_t b = 0;
    const CpuSample cpu_before = SampleCpu(f);
    const Clock::time_point start = Clock::now();
    Clock::time_point now = start;
    for (size_t calls = 0; warm_calls ? calls < warm_calls : Seconds(now - start) < duration;
         ++calls) {
      memcached_return_t rc =
          memcached_mget(memc, pointers[b].data(), lengths[b].data(), kGetManyKeys);
      if (rc != MEMCACHED_SUCCESS) {
        f.libmemcached_errors.Add("memcached_mget: " + LibError(memc, rc));
      } else {
        size_t found = 0;
        memcached_result_st* result;
        while ((result = memcached_fetch_result(memc, nullptr, &rc)) != nullptr) {
          if (memcached_result_length(result) == kValueSize) ++found;
          memcached_result_free(result);
        }
        if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
          f.libmemcached_errors.Add("memcached_fetch_result: " + LibError(memc, rc));
        } else {
          keys += kGetManyKeys;
        }
        if (found != kGetManyKeys) ++lib_short;
      }
      b = (b + 1) % batches.size();
      now = Clock::now();
    }
    if (warm_calls == 0)
      row.libmemcached_cpu.Add(cpu_before, SampleCpu(f), static_cast<double>(keys));
    return static_cast<double>(keys) / Seconds(now - start);
  };
  run_tiercache(50);
  run_lib(50);
  tiercache_short = lib_short = 0;
  for (int rep = 0; rep < kRepetitions; ++rep) {
    auto tiercache = [&] { row.tiercache_runs.push_back(run_tiercache(0)); };
    auto libmemcached = [&] { row.libmemcached_runs.push_back(run_lib(0)); };
    RunInAlternatingOrder(rep, tiercache, libmemcached);
  }
  row.tiercache = Median(row.tiercache_runs);
  row.libmemcached = Median(row.libmemcached_runs);
  row.remark =
      absl::StrFormat("%.1f s per client and repetition; keys requested per second", duration);
  if (tiercache_short + lib_short > 0) {
    row.remark += absl::StrFormat("; calls with fewer than 100 hits: tiercache %d, libmemcached %d",
                                  tiercache_short, lib_short);
    if (tiercache_short > 0) row.valid = false;
  }
  return row;
}

// --- 4. eight threads ---------------------------------------------------------

struct ThreadRun {
  double gets_per_second = 0;
  double gets = 0;
  uint64_t misses = 0;
};

template <typename PerThread>
ThreadRun RunThreads(double seconds, PerThread per_thread) {
  std::atomic<bool> go{false}, stop{false};
  std::atomic<int> ready{0};
  std::vector<uint64_t> ops(kThreads, 0), misses(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      per_thread(t, stop, &ops[static_cast<size_t>(t)], &misses[static_cast<size_t>(t)]);
    });
  }
  while (ready.load() < kThreads) std::this_thread::yield();
  const Clock::time_point start = Clock::now();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true, std::memory_order_release);
  for (std::thread& thread : threads) thread.join();
  const double elapsed = Seconds(Clock::now() - start);
  ThreadRun run;
  uint64_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    total += ops[static_cast<size_t>(t)];
    run.misses += misses[static_cast<size_t>(t)];
  }
  run.gets = static_cast<double>(total);
  run.gets_per_second = run.gets / elapsed;
  return run;
}

// kThreads threads calling client.Get on keys drawn from streams seeded
// `seed` + thread index; errors are tallied under `what`.
ThreadRun RunClientGets(Fixture& f, tiercache::MemcachedClient& client, uint64_t seed,
                        const std::string& what) {
  return RunThreads(f.config.threads_seconds,
                    [&](int t, std::atomic<bool>& stop, uint64_t* ops, uint64_t* misses) {
                      SplitMix64 rng{seed + static_cast<uint64_t>(t)};
                      ErrorTally errors;
                      while (!stop.load(std::memory_order_relaxed)) {
                        absl::StatusOr<std::optional<tiercache::Item>> got =
                            client.Get(f.keys[rng.NextBelow(kDistinctKeys)]);
                        if (!got.ok()) {
                          errors.Add(what, got.status());
                          continue;
                        }
                        if (!got->has_value()) ++*misses;
                        ++*ops;
                      }
                      f.tiercache_errors.Merge(errors);
                    });
}

Row BenchThreads(Fixture& f, tiercache::MemcachedClient& client, memcached_st* configured) {
  Row row("8 threads, gets", "gets/s");
  std::vector<MemcPtr> clones;
  for (int t = 0; t < kThreads; ++t) {
    clones.emplace_back(memcached_clone(nullptr, configured));
    // Connect before the clock starts (the shared client is connected already).
    uint64_t ignored = 0;
    TimedLibGet(f, clones.back().get(), f.keys[0], &ignored);
  }
  uint64_t tiercache_misses = 0, lib_misses = 0;
  const double seconds = f.config.threads_seconds;
  auto run_tiercache = [&] {
    const CpuSample before = SampleCpu(f);
    const ThreadRun r = RunClientGets(f, client, 1000, "MemcachedClient::Get (8 threads)");
    row.tiercache_cpu.Add(before, SampleCpu(f), r.gets);
    row.tiercache_runs.push_back(r.gets_per_second);
    tiercache_misses += r.misses;
  };
  auto run_lib = [&] {
    const CpuSample before = SampleCpu(f);
    ThreadRun r =
        RunThreads(seconds, [&](int t, std::atomic<bool>& stop, uint64_t* ops, uint64_t* misses) {
          SplitMix64 rng{2000 + static_cast<uint64_t>(t)};
          memcached_st* memc = clones[static_cast<size_t>(t)].get();
          ErrorTally errors;
          while (!stop.load(std::memory_order_relaxed)) {
            const std::string& key = f.keys[rng.NextBelow(kDistinctKeys)];
            size_t length = 0;
            uint32_t flags = 0;
            memcached_return_t rc;
            char* value = memcached_get(memc, key.data(), key.size(), &length, &flags, &rc);
            if (value == nullptr && rc != MEMCACHED_NOTFOUND) {
              errors.Add("memcached_get (8 threads): " + LibError(memc, rc));
              continue;
            }
            if (value == nullptr) ++*misses;
            std::free(value);
            ++*ops;
          }
          f.libmemcached_errors.Merge(errors);
        });
    row.libmemcached_cpu.Add(before, SampleCpu(f), r.gets);
    row.libmemcached_runs.push_back(r.gets_per_second);
    lib_misses += r.misses;
  };
  for (int rep = 0; rep < kRepetitions; ++rep) {
    RunInAlternatingOrder(rep, run_tiercache, run_lib);
  }
  row.tiercache = Median(row.tiercache_runs);
  row.libmemcached = Median(row.libmemcached_runs);
  row.remark = absl::StrFormat(
      "%.1f s per client and repetition; tiercache: one shared client, %d connections; "
      "libmemcached: %d memcached_st, one connection each",
      seconds, client.options().connections_per_server, kThreads);
  if (tiercache_misses + lib_misses > 0) {
    row.remark +=
        absl::StrFormat("; MISSES: tiercache %d, libmemcached %d", tiercache_misses, lib_misses);
    if (tiercache_misses > 0) row.valid = false;
  }
  return row;
}

// --- 5. The cost of latency recording ------------------------------------------

// Rows of the recording comparison: `tiercache` is recording on,
// `libmemcached` recording off (the Row's baseline column), target within 3%.
std::vector<Row> BenchRecordingCost(Fixture& f) {
  auto make = [&](bool record) {
    tiercache::MemcachedOptions options;
    options.servers = {f.server->address()};
    options.record_latency = record;
    absl::StatusOr<std::unique_ptr<tiercache::MemcachedClient>> client =
        tiercache::MemcachedClient::Create(options);
    if (!client.ok()) {
      std::fprintf(stderr, "MemcachedClient::Create: %s\n", client.status().ToString().c_str());
      std::exit(1);
    }
    return *std::move(client);
  };
  const std::unique_ptr<tiercache::MemcachedClient> on = make(true), off = make(false);
  const cpu_set_t affinity = CurrentAffinity();  // given back at the end (e.g. under taskset)
  PinProcess(f.server->pid(), 1);
  PinThisThread(0);  // the threads made below inherit it

  // Blocking gets, one thread, blocks alternating.
  SplitMix64 rng{77};
  uint64_t misses = 0;
  for (size_t i = 0; i < f.config.warmup; ++i) {
    TimedTiercacheGet(f, *on, f.keys[rng.NextBelow(kDistinctKeys)], &misses);
    TimedTiercacheGet(f, *off, f.keys[rng.NextBelow(kDistinctKeys)], &misses);
  }
  misses = 0;
  std::vector<int64_t> on_ns, off_ns;
  const size_t block = f.config.latency_block;
  for (size_t begin = 0, b = 0; begin < f.config.latency_gets; begin += block, ++b) {
    const size_t end = std::min(f.config.latency_gets, begin + block);
    std::vector<size_t> order(end - begin);
    for (size_t& i : order) i = rng.NextBelow(kDistinctKeys);
    auto run = [&](tiercache::MemcachedClient& client, std::vector<int64_t>& ns) {
      for (size_t i : order) ns.push_back(TimedTiercacheGet(f, client, f.keys[i], &misses));
    };
    if (b % 2 == 0) {
      run(*on, on_ns);
      run(*off, off_ns);
    } else {
      run(*off, off_ns);
      run(*on, on_ns);
    }
  }
  const Latency on_latency = Summarize(on_ns), off_latency = Summarize(off_ns);
  const std::string latency_remark = absl::StrFormat(
      "%d gets per client, the same keys, blocks of %d alternating; pinned: memcached CPU 1, "
      "client CPU 0",
      on_ns.size(), block);
  std::vector<Row> rows;
  rows.push_back(LatencyRow("recording: get p50", 1.03, on_latency.p50_us, off_latency.p50_us,
                            latency_remark));
  rows.push_back(LatencyRow("recording: get mean", 1.03, on_latency.mean_us, off_latency.mean_us,
                            latency_remark));

  // 8 threads on one shared client each.
  Row threads("recording: 8 threads", "gets/s", /*higher_is_better=*/true, 0.97);
  auto run_threads = [&](tiercache::MemcachedClient& client, std::vector<double>& runs,
                         uint64_t seed) {
    const ThreadRun r =
        RunClientGets(f, client, seed, "MemcachedClient::Get (recording, 8 threads)");
    runs.push_back(r.gets_per_second);
    misses += r.misses;
  };
  constexpr int kRecordingRepetitions = 5;
  for (int rep = 0; rep < kRecordingRepetitions; ++rep) {
    auto run_on = [&] { run_threads(*on, threads.tiercache_runs, 3000); };
    auto run_off = [&] { run_threads(*off, threads.libmemcached_runs, 3000); };
    RunInAlternatingOrder(rep, run_on, run_off);
  }
  threads.tiercache = Median(threads.tiercache_runs);
  threads.libmemcached = Median(threads.libmemcached_runs);
  threads.remark = absl::StrFormat(
      "%.1f s per client and repetition, median of %d, alternating; the same key streams; "
      "pinned as above",
      f.config.threads_seconds, kRecordingRepetitions);
  rows.push_back(std::move(threads));
  RestoreAffinity(affinity);
  for (Row& row : rows) {
    row.valid = misses == 0;
    if (misses > 0) row.remark += absl::StrFormat("; MISSES: %d", misses);
  }
  // The histogram the "on" client filled is the one the metrics export.
  const tiercache::L2Latencies recorded = on->Latencies();
  const tiercache::L2Latencies unrecorded = off->Latencies();
  f.notes.push_back(absl::StrFormat(
      "recording rows: the columns are recording on | recording off, not libmemcached; the on "
      "client's histogram counted %d gets, the off client's %d",
      recorded[tiercache::L2Op::kGet].count, unrecorded[tiercache::L2Op::kGet].count));
  return rows;
}

// --- output -----------------------------------------------------------------

std::string Figure(double v, std::string_view unit) {
  if (unit == "us") return absl::StrFormat("%.1f us", v);
  if (v >= 1e6) return absl::StrFormat("%.3fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.1f", v);
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string JsonNumbers(const std::vector<double>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += absl::StrFormat("%s%.6g", i ? ", " : "", v[i]);
  return out + "]";
}

double PerOpUs(double seconds, double ops) { return ops > 0 ? seconds / ops * 1e6 : 0.0; }

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string line;
  std::getline(in, line);
  return line;
}

std::string ServerVersion(memcached_st* memc) {
  if (memcached_version(memc) != MEMCACHED_SUCCESS) return "unknown";
  const memcached_instance_st* instance = memcached_server_instance_by_position(memc, 0);
  return absl::StrFormat("%d.%d.%d", memcached_server_major_version(instance),
                         memcached_server_minor_version(instance),
                         memcached_server_micro_version(instance));
}

void PrintErrors(std::string_view who, const ErrorTally& tally) {
  const std::map<std::string, uint64_t> counts = tally.Counts();
  if (counts.empty()) {
    std::printf("%s errors: none\n", std::string(who).c_str());
    return;
  }
  std::printf("%s errors (%llu in all):\n", std::string(who).c_str(),
              static_cast<unsigned long long>(tally.Total()));
  for (const auto& [what, n] : counts) {
    std::printf("  %8llu x %s\n", static_cast<unsigned long long>(n), what.c_str());
  }
}

int Main(int argc, char** argv) {
  Config config;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") {
      config.quick = true;
    } else if (arg.rfind("--only=", 0) == 0) {
      config.only = std::string(arg.substr(7));
      if (config.only != "sets" && config.only != "latency" && config.only != "getmany" &&
          config.only != "threads" && config.only != "recording") {
        std::fprintf(stderr, "--only= takes sets, latency, getmany, threads or recording\n");
        return 2;
      }
    } else if (arg.rfind("--json=", 0) == 0) {
      config.json_path = std::string(arg.substr(7));
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: %s [--quick] [--json=PATH] [--only=sets|latency|getmany|threads|recording]\n",
          argv[0]);
      return 0;
    } else {
      std::fprintf(stderr,
                   "unknown argument '%s'; usage: %s [--quick] [--json=PATH] "
                   "[--only=sets|latency|getmany|threads|recording]\n",
                   argv[i], argv[0]);
      return 2;
    }
  }
  if (config.quick) {
    config.sets = 20000;
    config.latency_gets = 4000;
    config.warmup = 200;
    config.getmany_seconds = 0.2;
    config.threads_seconds = 0.3;
  }

  tiercache::testing::MemcachedServer server;  // -t 2 -m 64, a free loopback port
  if (!server.running()) {
    std::fprintf(stderr, "could not start memcached (is it installed and on PATH?)\n");
    return 1;
  }
  Fixture f;
  f.config = config;
  f.server = &server;
  for (size_t i = 0; i < kDistinctKeys; ++i) f.keys.push_back(absl::StrFormat("key:%08d", i));

  tiercache::MemcachedOptions options;
  options.servers = {server.address()};
  absl::StatusOr<std::unique_ptr<tiercache::MemcachedClient>> client =
      tiercache::MemcachedClient::Create(options);
  if (!client.ok()) {
    std::fprintf(stderr, "MemcachedClient::Create: %s\n", client.status().ToString().c_str());
    return 1;
  }
  MemcPtr reader(NewLibmemcached(server.port(), /*noreply_buffered=*/false));
  if (reader == nullptr) {
    std::fprintf(stderr, "libmemcached: cannot configure a handle\n");
    return 1;
  }
  MemcPtr stats(NewLibmemcached(server.port(), /*noreply_buffered=*/false));
  f.stats = stats.get();
  const std::string load_before = LoadAverage();
  std::printf("mirror_bench%s: memcached %s at %s (-t 2), libmemcached %s, %u cpus, loadavg %s\n",
              config.quick ? " --quick" : "", ServerVersion(reader.get()).c_str(),
              server.address().c_str(), memcached_lib_version(),
              std::thread::hardware_concurrency(), load_before.c_str());
  std::printf(
      "workload: %d keys \"key:%%08d\", %d-byte values; throughput = median of %d "
      "repetitions, clients alternating\n\n",
      static_cast<int>(kDistinctKeys), static_cast<int>(kValueSize), kRepetitions);
  std::fflush(stdout);

  const Clock::time_point total_start = Clock::now();
  std::vector<Row> rows;
  auto selected = [&](std::string_view name) { return config.only.empty() || config.only == name; };
  if (selected("sets")) {
    std::printf("[1/5] async replicated sets: %zu sets x %d repetitions per client...\n",
                config.sets, kRepetitions);
    std::fflush(stdout);
    rows.push_back(BenchAsyncSets(f, std::nullopt));
    if (rows.back().remark.find("dropped 0") == std::string::npos) {
      // The default queue could not hold the burst: measure the pipeline
      // itself too, with a queue that can (informational, not judged).
      std::printf("[1b/5] again with max_queued_writes = %zu (no drops possible)...\n",
                  config.sets);
      std::fflush(stdout);
      rows.push_back(BenchAsyncSets(f, config.sets));
    }
  }

  // Every key holds a 100-byte value for the reads, whatever happened above.
  {
    const std::string value = MakeValue("read-fixture:");
    for (const std::string& key : f.keys) {
      memcached_return_t rc =
          memcached_set(reader.get(), key.data(), key.size(), value.data(), value.size(), 0, 0);
      if (rc != MEMCACHED_SUCCESS) {
        std::fprintf(stderr, "filling the keys: %s\n", LibError(reader.get(), rc).c_str());
        return 1;
      }
    }
  }

  if (selected("latency")) {
    std::printf("[2/5] get latency: %zu gets per client...\n", config.latency_gets);
    std::fflush(stdout);
    for (Row& row : BenchGetLatency(f, **client, reader.get())) rows.push_back(std::move(row));
  }
  if (selected("getmany")) {
    std::printf("[3/5] GetMany(100): %.1f s x %d repetitions per client...\n",
                config.getmany_seconds, kRepetitions);
    std::fflush(stdout);
    rows.push_back(BenchGetMany(f, **client, reader.get()));
  }
  if (selected("threads")) {
    std::printf("[4/5] %d threads: %.1f s x %d repetitions per client...\n", kThreads,
                config.threads_seconds, kRepetitions);
    std::fflush(stdout);
    rows.push_back(BenchThreads(f, **client, reader.get()));
  }
  if (selected("recording")) {
    std::printf("[5/5] latency recording on vs off: %zu gets, %d threads %.1f s x 5...\n",
                config.latency_gets, kThreads, config.threads_seconds);
    std::fflush(stdout);
    for (Row& row : BenchRecordingCost(f)) rows.push_back(std::move(row));
  }
  std::printf("\n");
  const double total_seconds = Seconds(Clock::now() - total_start);
  const std::string load_after = LoadAverage();

  // The recording rows compare two tiercache clients: a table of their own.
  auto is_recording = [](const Row& row) { return row.name.rfind("recording:", 0) == 0; };
  auto print_table = [&](bool recording, const char* left, const char* right) {
    std::printf("%-26s %14s %14s %8s %9s  %s\n", "benchmark", left, right, "ratio", "target",
                "verdict");
    std::printf("%s\n", std::string(26 + 1 + 14 + 1 + 14 + 1 + 8 + 1 + 9 + 2 + 7, '-').c_str());
    for (const Row& row : rows) {
      if (is_recording(row) != recording) continue;
      const bool judged = row.target > 0;
      std::printf(
          "%-26s %14s %14s %7.2fx %9s  %s\n", row.name.c_str(),
          (Figure(row.tiercache, row.unit) + (row.unit == "us" ? "" : " " + row.unit)).c_str(),
          (Figure(row.libmemcached, row.unit) + (row.unit == "us" ? "" : " " + row.unit)).c_str(),
          row.Ratio(), judged ? row.TargetText().c_str() : "-",
          !judged      ? "-"
          : row.Pass() ? "PASS"
                       : (row.valid ? "FAIL" : "FAIL (see below)"));
    }
  };
  if (std::any_of(rows.begin(), rows.end(), [&](const Row& r) { return !is_recording(r); })) {
    print_table(false, "tiercache", "libmemcached");
  }
  if (std::any_of(rows.begin(), rows.end(), is_recording)) {
    std::printf("\n");
    print_table(true, "recording on", "recording off");
  }
  std::printf("\n");
  std::string last_cpu;  // the latency rows share one measurement: print it once
  for (const Row& row : rows) {
    std::printf("%s: %s\n", row.name.c_str(), row.remark.c_str());
    if (!row.tiercache_runs.empty()) {
      std::string t, l;
      for (double v : row.tiercache_runs) t += " " + Figure(v, row.unit);
      for (double v : row.libmemcached_runs) l += " " + Figure(v, row.unit);
      std::printf("  runs: tiercache%s | libmemcached%s\n", t.c_str(), l.c_str());
    }
    const std::string cpu = absl::StrFormat("tiercache %s\n              libmemcached %s",
                                            row.tiercache_cpu.Text(), row.libmemcached_cpu.Text());
    if (cpu != last_cpu) std::printf("  per op:     %s\n", cpu.c_str());
    last_cpu = cpu;
  }
  std::printf("\nnotes:\n");
  for (const std::string& note : f.notes) std::printf("- %s\n", note.c_str());
  std::printf("\n");
  PrintErrors("tiercache", f.tiercache_errors);
  PrintErrors("libmemcached", f.libmemcached_errors);
  std::printf("\ntotal %.1f s; loadavg before %s, after %s\n", total_seconds, load_before.c_str(),
              load_after.c_str());

  if (!config.json_path.empty()) {
    std::ostringstream json;
    json << "{\n  \"program\": \"mirror_bench\",\n";
    json << absl::StrFormat("  \"quick\": %s,\n", config.quick ? "true" : "false");
    json << absl::StrFormat("  \"memcached\": \"%s\",\n  \"libmemcached\": \"%s\",\n",
                            JsonEscape(ServerVersion(reader.get())),
                            JsonEscape(memcached_lib_version()));
    json << absl::StrFormat(
        "  \"config\": {\"sets\": %d, \"latency_gets\": %d, \"warmup\": %d, \"getmany_seconds\": "
        "%.3g, \"threads_seconds\": %.3g, \"repetitions\": %d, \"threads\": %d, \"keys\": %d, "
        "\"value_size\": %d},\n",
        config.sets, config.latency_gets, config.warmup, config.getmany_seconds,
        config.threads_seconds, kRepetitions, kThreads, kDistinctKeys, kValueSize);
    json << "  \"results\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& row = rows[i];
      const bool judged = row.target > 0;
      json << absl::StrFormat(
          "    {\"benchmark\": \"%s\", \"unit\": \"%s\", \"tiercache\": %.6g, \"libmemcached\": "
          "%.6g, \"ratio\": %.4f, \"higher_is_better\": %s, \"target\": %s, \"verdict\": \"%s\", "
          "\"valid\": %s, \"tiercache_runs\": %s, \"libmemcached_runs\": %s, "
          "\"cpu_us_per_op\": {\"tiercache_client\": %.3f, \"tiercache_server\": %.3f, "
          "\"libmemcached_client\": %.3f, \"libmemcached_server\": %.3f}, "
          "\"cpu\": {\"tiercache\": \"%s\", \"libmemcached\": \"%s\"}, \"remark\": \"%s\"}%s\n",
          JsonEscape(row.name), row.unit, row.tiercache, row.libmemcached, row.Ratio(),
          row.higher_is_better ? "true" : "false",
          judged ? absl::StrFormat("%.2f", row.target) : "null",
          !judged      ? "info"
          : row.Pass() ? "PASS"
                       : "FAIL",
          row.valid ? "true" : "false", JsonNumbers(row.tiercache_runs),
          JsonNumbers(row.libmemcached_runs),
          PerOpUs(row.tiercache_cpu.client, row.tiercache_cpu.ops),
          PerOpUs(row.tiercache_cpu.server, row.tiercache_cpu.ops),
          PerOpUs(row.libmemcached_cpu.client, row.libmemcached_cpu.ops),
          PerOpUs(row.libmemcached_cpu.server, row.libmemcached_cpu.ops),
          JsonEscape(row.tiercache_cpu.Text()), JsonEscape(row.libmemcached_cpu.Text()),
          JsonEscape(row.remark), i + 1 < rows.size() ? "," : "");
    }
    json << "  ],\n";
    auto errors_json = [](const ErrorTally& tally) {
      std::string out = "{";
      bool first = true;
      for (const auto& [what, n] : tally.Counts()) {
        out += absl::StrFormat("%s\"%s\": %d", first ? "" : ", ", JsonEscape(what), n);
        first = false;
      }
      return out + "}";
    };
    json << "  \"errors\": {\"tiercache\": " << errors_json(f.tiercache_errors)
         << ", \"libmemcached\": " << errors_json(f.libmemcached_errors) << "},\n";
    json << "  \"notes\": [";
    for (size_t i = 0; i < f.notes.size(); ++i) {
      json << (i ? ", " : "") << "\"" << JsonEscape(f.notes[i]) << "\"";
    }
    json << "],\n";
    json << absl::StrFormat(
        "  \"total_seconds\": %.2f,\n  \"loadavg_before\": \"%s\",\n"
        "  \"loadavg_after\": \"%s\"\n}\n",
        total_seconds, JsonEscape(load_before), JsonEscape(load_after));
    std::ofstream out(config.json_path);
    out << json.str();
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
