// Tutorial step 6: replicas of an application sharing one warm cache through
// memcached (L2), with one database query per missing key across all of them.
// See docs/tutorial.md.

#include <atomic>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "check.h"
#include "l2_server.h"
#include "tiercache/tiered_cache.h"

std::atomic<int> queries{0};

absl::StatusOr<std::string> QueryTheDatabase(std::string_view key) {
  queries.fetch_add(1);
  absl::SleepFor(absl::Milliseconds(50));  // a slow query
  return "report for " + std::string(key);
}

// One replica of the application: its own L1, the shared L2.
std::unique_ptr<tiercache::TieredCache> StartReplica(const std::string& memcached) {
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l1.default_ttl = absl::Minutes(10);
  options.l2.servers = {memcached};  // every replica names the same memcached
  options.l2.key_prefix = "myapp:";
  auto created = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(created.ok());
  return *std::move(created);
}

int main(int argc, char** argv) {
  TutorialMemcached memcached(argc, argv);
  TUTORIAL_CHECK(memcached.ok());
  auto replica_a = StartReplica(memcached.address());
  auto replica_b = StartReplica(memcached.address());

  // Replica A loads the report once and fills both tiers.
  absl::StatusOr<std::string> report = replica_a->GetOrLoad("report:today", QueryTheDatabase);
  TUTORIAL_CHECK(report.ok() && *report == "report for report:today");

  // Replica B has never seen it: its L1 misses, L2 has it, no query.
  report = replica_b->GetOrLoad("report:today", QueryTheDatabase);
  TUTORIAL_CHECK(report.ok() && queries.load() == 1);
  TUTORIAL_CHECK(replica_b->Stats().l2_hits == 1);
  // And now from B's own L1, without a network round trip.
  TUTORIAL_CHECK(replica_b->Get("report:today") == "report for report:today");
  TUTORIAL_CHECK(replica_b->Stats().l1_hits == 1);

  // A missing key wanted by 4 threads in each replica at once: one query in
  // all. Inside a replica the threads share one load; across replicas the
  // first to ask memcached wins a lease and loads, the others wait for it.
  std::vector<std::thread> threads;
  for (auto* replica : {replica_a.get(), replica_b.get()}) {
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([replica] {
        TUTORIAL_CHECK(replica->GetOrLoad("report:yesterday", QueryTheDatabase).ok());
      });
    }
  }
  for (std::thread& t : threads) t.join();
  std::cout << "database queries: " << queries.load() << "\n";
  TUTORIAL_CHECK(queries.load() == 2);
  return 0;
}
