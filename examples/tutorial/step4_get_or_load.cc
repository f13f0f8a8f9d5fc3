// Tutorial step 4: cache-aside with GetOrLoad. See docs/tutorial.md.

#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include "check.h"
#include "tiercache/cache.h"

int main() {
  tiercache::CacheOptions options;
  options.max_bytes = 16 << 20;
  auto created = tiercache::Cache::Create(options);
  TUTORIAL_CHECK(created.ok());
  tiercache::Cache& cache = **created;

  // A slow query: building a report takes 50 ms.
  std::atomic<int> queries{0};
  auto build_report = [&queries](std::string_view key) -> absl::StatusOr<std::string> {
    ++queries;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return "report for " + std::string(key);
  };

  // Eight threads want the same report at once. One of them runs the loader;
  // the others wait for its result instead of stampeding the database.
  std::vector<std::thread> threads;
  std::atomic<int> right_answers{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<std::string> report = cache.GetOrLoad("report:today", build_report);
      if (report.ok() && *report == "report for report:today") ++right_answers;
    });
  }
  for (std::thread& t : threads) t.join();
  std::cout << right_answers.load() << " callers, " << queries.load() << " query\n";
  TUTORIAL_CHECK(right_answers == 8 && queries == 1);

  // A loader error reaches the caller (and every waiter) and is not cached:
  // the next call tries again.
  int attempts = 0;
  auto flaky = [&attempts](std::string_view) -> absl::StatusOr<std::string> {
    if (++attempts == 1) return absl::UnavailableError("database is restarting");
    return std::string("fresh");
  };
  absl::StatusOr<std::string> first = cache.GetOrLoad("flaky", flaky);
  TUTORIAL_CHECK(absl::IsUnavailable(first.status()));
  std::cout << "first try: " << first.status() << "\n";
  TUTORIAL_CHECK(cache.GetOrLoad("flaky", flaky).value_or("") == "fresh");
  TUTORIAL_CHECK(attempts == 2);

  tiercache::CacheStats stats = cache.Stats();
  TUTORIAL_CHECK(stats.loads == 3 && stats.load_failures == 1);
  return 0;
}
