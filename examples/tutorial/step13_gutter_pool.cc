// Tutorial step 13: one memcached server dies. Two replicas share a pool of
// two servers and a one-server gutter pool. When a server goes down, its keys
// move to the gutter: the replicas still share one copy and one load per key,
// and every value parked there expires within gutter_ttl. The client reports
// the outage and brings the server back by itself. See docs/tutorial.md.

#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "check.h"
#include "memcached_server.h"
#include "tiercache/tiered_cache.h"

int queries = 0;  // database queries
std::mutex events_mu;
std::vector<std::string> events;  // what on_server_state reported

absl::StatusOr<std::string> LoadUser(std::string_view key) {
  ++queries;
  return absl::StrCat("{\"user\": \"", std::string(key), "\"}");
}

std::unique_ptr<tiercache::TieredCache> StartReplica(const std::vector<std::string>& servers,
                                                     const std::string& gutter) {
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = servers;
  options.l2.gutter_servers = {gutter};
  options.l2.gutter_ttl = absl::Seconds(10);  // the default
  options.l2.on_server_state = [](std::string_view server, bool up, const absl::Status& why) {
    std::lock_guard<std::mutex> hold(events_mu);
    events.push_back(
        absl::StrCat(std::string(server), up ? " is back" : " is down: ", why.message()));
  };
  auto created = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(created.ok());
  return *std::move(created);
}

int main() {
  // Three private memcached servers: two primaries and the gutter.
  tiercache::testing::MemcachedServer first, second, gutter;
  TUTORIAL_CHECK(first.running() && second.running() && gutter.running());
  const std::vector<std::string> pool = {first.address(), second.address()};
  auto replica_a = StartReplica(pool, gutter.address());
  auto replica_b = StartReplica(pool, gutter.address());

  first.Stop();  // killed: its connections are refused from now on

  // 40 users nobody has loaded, asked for by both replicas. About half live on
  // the dead server; their leases and values go to the gutter, so each user is
  // loaded once, as if nothing had happened.
  for (int i = 0; i < 40; ++i) {
    const std::string key = absl::StrCat("user:", i);
    TUTORIAL_CHECK(replica_a->GetOrLoad(key, LoadUser).ok());
    TUTORIAL_CHECK(replica_b->GetOrLoad(key, LoadUser).ok());
  }
  TUTORIAL_CHECK(queries == 40);
  std::cout << "one server down: " << queries << " queries for 40 users and 2 replicas\n";

  // Each replica's client saw the outage, counted it and reported it.
  const tiercache::TieredStats stats = replica_a->Stats();
  TUTORIAL_CHECK(stats.l2_servers.size() == 3 && !stats.l2_servers[0].up);
  TUTORIAL_CHECK(stats.l2_servers[0].times_down == 1 && stats.l2_servers[0].rerouted > 0);
  TUTORIAL_CHECK(stats.l2_servers[2].gutter && stats.l2_servers[2].up);

  // The server comes back, empty, on the same port: a background probe finds
  // it and its keys return to it.
  first.Start();
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!replica_a->Stats().l2_servers[0].up && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  TUTORIAL_CHECK(replica_a->Stats().l2_servers[0].up);
  TUTORIAL_CHECK(replica_a->Stats().l2_servers[0].times_up == 1);
  std::lock_guard<std::mutex> hold(events_mu);
  for (const std::string& event : events) std::cout << "  " << event << "\n";
  return 0;
}
