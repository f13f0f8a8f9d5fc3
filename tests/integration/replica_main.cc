// One application replica for the multi-process tests: a process with its own
// TieredCache (its own L1) on a shared memcached, driven line by line over
// stdin/stdout by tests/integration/replica_test.cc.
//
//   replica --server=HOST:PORT[,HOST:PORT...] [--gutter=HOST:PORT[,...]]
//           [--gutter_ttl_ms=N] [--fallback=HOST:PORT] [--mode=async|sync]
//           [--max_staleness_ms=N] [--lease_ttl_s=N] [--lease_wait_ms=N]
//           [--op_timeout_ms=N] [--fake_clock]
//
// Commands (one per line, tokens without spaces) and their one-line answers:
//   set K V            ok | error <status>
//   get K              hit V | miss
//   delete K           ok | error <status>
//   flush              ok | error <status>
//   advance MS         ok                 (moves the fake clock)
//   load K T MS        loaded calls=<loader calls> value=<V> | error <status>
//                      T threads call GetOrLoad(K) at once; the loader sleeps
//                      MS milliseconds and returns "v-<pid>".
//   hang K             prints "loading" when its loader starts, which never
//                      returns (the test kills the process)
//   cas-incr K N       ok retries=<R>     N increments of K by GetItem + CAS
//   stats              stats <name>=<value> ...
//   quit

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tiercache/tiered_cache.h"

namespace {

using tiercache::TieredCache;

std::string Flag(int argc, char** argv, const std::string& name, std::string fallback) {
  const std::string prefix = absl::StrCat("--", name, "=");
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.substr(0, prefix.size()) == prefix) return std::string(arg.substr(prefix.size()));
    if (arg == absl::StrCat("--", name)) return "1";
  }
  return fallback;
}

int64_t IntFlag(int argc, char** argv, const std::string& name, int64_t fallback) {
  int64_t value = fallback;
  const std::string text = Flag(argc, argv, name, "");
  if (!text.empty() && !absl::SimpleAtoi(text, &value)) {
    std::cerr << "bad --" << name << "\n";
    std::exit(2);
  }
  return value;
}

std::string Error(const absl::Status& status) {
  std::string text = status.ToString();
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return "error " + text;
}

}  // namespace

int main(int argc, char** argv) {
  tiercache::FakeClock fake_clock;
  tiercache::TieredOptions options;
  options.l2.servers = absl::StrSplit(Flag(argc, argv, "server", ""), ',', absl::SkipEmpty());
  options.l2.gutter_servers =
      absl::StrSplit(Flag(argc, argv, "gutter", ""), ',', absl::SkipEmpty());
  options.l2.gutter_ttl = absl::Milliseconds(IntFlag(argc, argv, "gutter_ttl_ms", 10000));
  options.l2.op_timeout = absl::Milliseconds(IntFlag(argc, argv, "op_timeout_ms", 500));
  options.l2.reconnect_backoff = absl::Milliseconds(10);
  options.l2.max_reconnect_backoff = absl::Milliseconds(100);
  if (std::string fallback = Flag(argc, argv, "fallback", ""); !fallback.empty()) {
    options.fallback_servers = {fallback};
  }
  options.mirror.mode = Flag(argc, argv, "mode", "async") == "sync" ? tiercache::MirrorMode::kSync
                                                                    : tiercache::MirrorMode::kAsync;
  options.max_staleness = absl::Milliseconds(IntFlag(argc, argv, "max_staleness_ms", 1000));
  options.lease_ttl = absl::Seconds(IntFlag(argc, argv, "lease_ttl_s", 30));
  options.lease_wait = absl::Milliseconds(IntFlag(argc, argv, "lease_wait_ms", 20000));
  if (Flag(argc, argv, "fake_clock", "") == "1") options.l1.clock = &fake_clock;
  absl::StatusOr<std::unique_ptr<TieredCache>> created = TieredCache::Create(options);
  if (!created.ok()) {
    std::cout << Error(created.status()) << std::endl;
    return 1;
  }
  TieredCache& cache = **created;

  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.empty()) continue;
    const std::string& command = words[0];
    auto arg = [&](size_t i) -> std::string { return i < words.size() ? words[i] : ""; };
    auto number = [&](size_t i) {
      int64_t n = 0;
      (void)absl::SimpleAtoi(arg(i), &n);
      return n;
    };
    if (command == "quit") break;
    if (command == "set") {
      absl::Status s = cache.Set(arg(1), arg(2));
      std::cout << (s.ok() ? "ok" : Error(s)) << std::endl;
    } else if (command == "get") {
      std::optional<std::string> value = cache.Get(arg(1));
      std::cout << (value.has_value() ? "hit " + *value : "miss") << std::endl;
    } else if (command == "delete") {
      absl::Status s = cache.Delete(arg(1));
      std::cout << (s.ok() ? "ok" : Error(s)) << std::endl;
    } else if (command == "flush") {
      absl::Status s = cache.Flush(absl::Seconds(5));
      std::cout << (s.ok() ? "ok" : Error(s)) << std::endl;
    } else if (command == "advance") {
      fake_clock.Advance(absl::Milliseconds(number(1)));
      std::cout << "ok" << std::endl;
    } else if (command == "load") {
      const std::string key = arg(1);
      const int64_t threads = std::max<int64_t>(1, number(2));
      const absl::Duration loader_time = absl::Milliseconds(number(3));
      std::atomic<int> calls{0};
      std::vector<absl::StatusOr<std::string>> results(threads, absl::UnknownError("not run"));
      std::vector<std::thread> workers;
      for (int64_t t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          results[t] = cache.GetOrLoad(key, [&](std::string_view) -> absl::StatusOr<std::string> {
            calls.fetch_add(1);
            absl::SleepFor(loader_time);
            return absl::StrCat("v-", ::getpid());
          });
        });
      }
      for (std::thread& worker : workers) worker.join();
      std::string answer = absl::StrCat("loaded calls=", calls.load());
      for (const auto& result : results) {
        if (!result.ok()) {
          answer = Error(result.status());
          break;
        }
        if (*result != *results[0]) answer = "error threads got different values";
      }
      if (answer.rfind("loaded", 0) == 0) absl::StrAppend(&answer, " value=", *results[0]);
      std::cout << answer << std::endl;
    } else if (command == "loadmany") {
      // loadmany PREFIX N THREADS LOADER_MS: every thread asks for keys
      // PREFIX0 .. PREFIX<N-1> (each from its own starting point), loading
      // a missing one in LOADER_MS; the answer counts loader calls and errors.
      const std::string prefix = arg(1);
      const int64_t keys = std::max<int64_t>(1, number(2));
      const int64_t threads = std::max<int64_t>(1, number(3));
      const absl::Duration loader_time = absl::Milliseconds(number(4));
      std::atomic<int> calls{0};
      std::atomic<int> errors{0};
      std::vector<std::thread> workers;
      for (int64_t t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          for (int64_t n = 0; n < keys; ++n) {
            const std::string key = absl::StrCat(prefix, (n + t * keys / threads) % keys);
            absl::StatusOr<std::string> value =
                cache.GetOrLoad(key, [&](std::string_view k) -> absl::StatusOr<std::string> {
                  calls.fetch_add(1);
                  absl::SleepFor(loader_time);
                  return absl::StrCat("v-", std::string(k));
                });
            if (!value.ok() || *value != absl::StrCat("v-", key)) errors.fetch_add(1);
          }
        });
      }
      for (std::thread& worker : workers) worker.join();
      std::cout << "loaded calls=" << calls.load() << " errors=" << errors.load() << std::endl;
    } else if (command == "servers") {
      // One 0/1 per server (primaries, then the gutter pool): up.
      std::string answer = "servers";
      for (const tiercache::ServerStatus& server : cache.Stats().l2_servers) {
        absl::StrAppend(&answer, " ", server.up ? 1 : 0);
      }
      std::cout << answer << std::endl;
    } else if (command == "hang") {
      (void)cache.GetOrLoad(arg(1), [](std::string_view) -> absl::StatusOr<std::string> {
        std::cout << "loading" << std::endl;
        while (true) absl::SleepFor(absl::Seconds(1));
      });
    } else if (command == "cas-incr") {
      const std::string key = arg(1);
      int64_t retries = 0;
      std::string answer;
      for (int64_t i = 0; i < number(2) && answer.empty(); ++i) {
        while (true) {
          absl::StatusOr<std::optional<tiercache::Item>> item = cache.GetItem(key);
          if (!item.ok() || !item->has_value()) {
            answer = item.ok() ? "error counter missing" : Error(item.status());
            break;
          }
          int64_t value = 0;
          (void)absl::SimpleAtoi((*item)->value, &value);
          absl::StatusOr<tiercache::StoreResult> stored =
              cache.CompareAndSwap(key, absl::StrCat(value + 1), (*item)->cas);
          if (!stored.ok()) {
            answer = Error(stored.status());
            break;
          }
          if (*stored == tiercache::StoreResult::kStored) break;
          ++retries;
        }
      }
      std::cout << (answer.empty() ? absl::StrCat("ok retries=", retries) : answer) << std::endl;
    } else if (command == "stats") {
      tiercache::TieredStats s = cache.Stats();
      std::cout << "stats l1_hits=" << s.l1_hits << " l2_hits=" << s.l2_hits
                << " l2_misses=" << s.l2_misses << " l2_errors=" << s.l2_errors
                << " loads=" << s.loads << " lease_wins=" << s.lease_wins
                << " lease_waits=" << s.lease_waits << " lease_timeouts=" << s.lease_timeouts
                << " fallback_hits=" << s.fallback_hits << " revalidations=" << s.revalidations
                << " replicated=" << s.mirror.replicated << " failed=" << s.mirror.failed
                << " dropped=" << s.mirror.dropped << std::endl;
    } else {
      std::cout << "error unknown command " << command << std::endl;
    }
  }
  return 0;
}
