// Tutorial step 7: invalidation. After the database changes, delete (or
// overwrite) the cached copy; every replica sees the change within
// max_staleness. See docs/tutorial.md.

#include <iostream>
#include <map>
#include <string>

#include "absl/time/clock.h"
#include "check.h"
#include "l2_server.h"
#include "tiercache/tiered_cache.h"

std::map<std::string, std::string> database = {{"user:1", "ada"}};

absl::StatusOr<std::string> LoadUser(std::string_view key) { return database[std::string(key)]; }

std::unique_ptr<tiercache::TieredCache> StartReplica(const std::string& memcached) {
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = {memcached};
  // An L1 copy is served for at most 200 ms before it is checked against
  // memcached (by CAS: only a few bytes cross the network when nothing
  // changed). This bounds how stale a replica can be.
  options.max_staleness = absl::Milliseconds(200);
  auto created = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(created.ok());
  return *std::move(created);
}

int main(int argc, char** argv) {
  TutorialMemcached memcached(argc, argv);
  TUTORIAL_CHECK(memcached.ok());
  auto replica_a = StartReplica(memcached.address());
  auto replica_b = StartReplica(memcached.address());
  TUTORIAL_CHECK(*replica_a->GetOrLoad("user:1", LoadUser) == "ada");
  TUTORIAL_CHECK(*replica_b->GetOrLoad("user:1", LoadUser) == "ada");

  // The user renames herself: update the database, then invalidate.
  database["user:1"] = "ada lovelace";
  absl::Status deleted = replica_a->Delete("user:1");
  TUTORIAL_CHECK(deleted.ok());  // memcached applied it (else: retry the delete)

  // Replica A reads its own delete at once...
  TUTORIAL_CHECK(*replica_a->GetOrLoad("user:1", LoadUser) == "ada lovelace");
  // ...replica B within max_staleness (here we wait it out).
  absl::SleepFor(absl::Milliseconds(250));
  TUTORIAL_CHECK(*replica_b->GetOrLoad("user:1", LoadUser) == "ada lovelace");

  // Overwriting instead of deleting works the same way. Set replicates to
  // memcached in the background; Flush waits until memcached has it.
  database["user:1"] = "countess of lovelace";
  TUTORIAL_CHECK(replica_b->Set("user:1", database["user:1"]).ok());
  TUTORIAL_CHECK(replica_b->Flush(absl::Seconds(1)).ok());
  absl::SleepFor(absl::Milliseconds(250));
  std::cout << "replica A reads: " << *replica_a->Get("user:1") << "\n";
  TUTORIAL_CHECK(replica_a->Get("user:1") == "countess of lovelace");
  TUTORIAL_CHECK(replica_a->Stats().revalidated_changed == 1);
  return 0;
}
