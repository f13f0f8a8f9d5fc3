// Tutorial step 11: reading many keys at once. A page that shows 20 products
// asks for all of them in one call: what L1 has is answered at once, the rest
// comes from memcached in one round trip, and what neither tier has is loaded
// with one database query for all of them. See docs/tutorial.md.

#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "check.h"
#include "l2_server.h"
#include "tiercache/tiered_cache.h"

int queries = 0;       // database round trips
int rows_queried = 0;  // rows they returned

// One query for many rows: SELECT ... WHERE id IN (...).
absl::StatusOr<absl::flat_hash_map<std::string, std::string>> LoadProducts(
    absl::Span<const std::string_view> keys) {
  ++queries;
  absl::flat_hash_map<std::string, std::string> rows;
  for (std::string_view key : keys) {
    rows[std::string(key)] = absl::StrCat("{\"name\": \"", std::string(key), "\"}");
    ++rows_queried;
  }
  return rows;
}

std::unique_ptr<tiercache::TieredCache> StartReplica(const std::string& memcached) {
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = {memcached};
  options.l2.key_prefix = "shop:";
  auto created = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(created.ok());
  return *std::move(created);
}

int main(int argc, char** argv) {
  TutorialMemcached memcached(argc, argv);
  TUTORIAL_CHECK(memcached.ok());
  auto replica_a = StartReplica(memcached.address());
  auto replica_b = StartReplica(memcached.address());

  std::vector<std::string> names;
  for (int i = 0; i < 20; ++i) names.push_back(absl::StrCat("product:", i));
  const std::vector<std::string_view> page(names.begin(), names.end());

  // Nothing is cached yet: one query for the 20 products, and both tiers filled.
  auto products = replica_a->GetOrLoadMany(page, LoadProducts);
  TUTORIAL_CHECK(products.ok() && products->size() == 20);
  TUTORIAL_CHECK(queries == 1 && rows_queried == 20);

  // Another replica shows the same page: all 20 from memcached, in one round trip.
  products = replica_b->GetOrLoadMany(page, LoadProducts);
  TUTORIAL_CHECK(products.ok() && products->size() == 20 && queries == 1);
  TUTORIAL_CHECK(replica_b->Stats().l2_hits == 20);

  // A page with 5 new products: 15 from B's own L1, 5 in one more query.
  for (int i = 20; i < 25; ++i) names.push_back(absl::StrCat("product:", i));
  const std::vector<std::string_view> next_page(names.begin() + 5, names.end());
  products = replica_b->GetOrLoadMany(next_page, LoadProducts);
  TUTORIAL_CHECK(products.ok() && products->size() == 20);
  TUTORIAL_CHECK(queries == 2 && rows_queried == 25);
  TUTORIAL_CHECK(replica_b->Stats().l1_hits == 15);
  std::cout << "database queries: " << queries << ", rows: " << rows_queried << "\n";

  // GetMany reads both tiers and never calls the database.
  const std::vector<std::string_view> some = {"product:3", "product:99"};
  auto found = replica_a->GetMany(some);
  TUTORIAL_CHECK(found.ok() && found->size() == 1 && found->contains("product:3"));
  return 0;
}
