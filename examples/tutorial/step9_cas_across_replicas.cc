// Tutorial step 9: check-and-set across replicas. Read-modify-write goes to
// memcached, the copy every replica shares. See docs/tutorial.md.

#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "l2_server.h"
#include "tiercache/tiered_cache.h"

// Adds one to a counter stored as text in L2, losing no concurrent update.
bool AddOne(tiercache::TieredCache& cache, std::string_view key) {
  while (true) {
    absl::StatusOr<std::optional<tiercache::Item>> item = cache.GetItem(key);
    if (!item.ok() || !item->has_value()) return false;  // memcached down, or no counter
    const std::string next = std::to_string(std::stoll((*item)->value) + 1);
    absl::StatusOr<tiercache::StoreResult> stored = cache.CompareAndSwap(key, next, (*item)->cas);
    if (!stored.ok()) return false;
    if (*stored == tiercache::StoreResult::kStored) return true;
    // kExists: another replica wrote first; read again and retry.
  }
}

std::unique_ptr<tiercache::TieredCache> StartReplica(const std::string& memcached) {
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = {memcached};
  options.mirror.mode = tiercache::MirrorMode::kSync;  // Set returns once memcached has it
  auto created = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(created.ok());
  return *std::move(created);
}

int main(int argc, char** argv) {
  TutorialMemcached memcached(argc, argv);
  TUTORIAL_CHECK(memcached.ok());
  auto replica_a = StartReplica(memcached.address());
  auto replica_b = StartReplica(memcached.address());
  TUTORIAL_CHECK(replica_a->Set("likes", "0").ok());

  // Two replicas, two threads each, 250 increments per thread.
  std::vector<std::thread> threads;
  for (auto* replica : {replica_a.get(), replica_b.get(), replica_a.get(), replica_b.get()}) {
    threads.emplace_back([replica] {
      for (int i = 0; i < 250; ++i) TUTORIAL_CHECK(AddOne(*replica, "likes"));
    });
  }
  for (std::thread& t : threads) t.join();
  const std::string likes = (*replica_b->GetItem("likes"))->value;
  std::cout << "likes: " << likes << "\n";
  TUTORIAL_CHECK(likes == "1000");

  // Plain counters: memcached's atomic increment, one round trip.
  TUTORIAL_CHECK(replica_a->Set("visits", "10").ok());
  TUTORIAL_CHECK(*replica_a->Increment("visits", 5) == 15);
  TUTORIAL_CHECK(*replica_b->Increment("visits", 1) == 16);
  TUTORIAL_CHECK(absl::IsNotFound(replica_b->Increment("nothing", 1).status()));
  return 0;
}
