// Uses an installed tiercache through find_package. Exits non-zero when the
// installed library does not behave.
#include <iostream>

#include "tiercache/cache.h"
#include "tiercache/tiered_cache.h"
#ifdef TIERCACHE_CONSUMER_METRICS
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "tiercache/metrics.h"
#endif

int main() {
  tiercache::CacheOptions options;
  options.max_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<tiercache::Cache>> cache = tiercache::Cache::Create(options);
  if (!cache.ok()) {
    std::cerr << "Create: " << cache.status() << "\n";
    return 1;
  }
  if (absl::Status s = (*cache)->Set("installed", "yes"); !s.ok()) {
    std::cerr << "Set: " << s << "\n";
    return 1;
  }
  std::optional<std::string> value = (*cache)->Get("installed");
  if (value != "yes") {
    std::cerr << "Get returned " << value.value_or("nothing") << ", expected yes\n";
    return 1;
  }
  // The mirror's library and headers: a TieredCache whose L2 is not running
  // still serves from L1 (Create does not contact memcached).
  tiercache::TieredOptions tiered_options;
  tiered_options.l2.servers = {"127.0.0.1:1"};
  tiered_options.l2.op_timeout = absl::Milliseconds(100);
  absl::StatusOr<std::unique_ptr<tiercache::TieredCache>> tiered =
      tiercache::TieredCache::Create(tiered_options);
  if (!tiered.ok()) {
    std::cerr << "TieredCache::Create: " << tiered.status() << "\n";
    return 1;
  }
  if (absl::Status s = (*tiered)->Set("installed", "yes"); !s.ok()) {
    std::cerr << "TieredCache::Set: " << s << "\n";
    return 1;
  }
  if ((*tiered)->Get("installed") != "yes") {
    std::cerr << "TieredCache::Get did not return yes\n";
    return 1;
  }
#ifdef TIERCACHE_CONSUMER_METRICS
  // The optional metrics library: the collector reads the cache's stats.
  bool found_hits = false;
  for (const prometheus::MetricFamily& family :
       tiercache::MetricsFor(**cache, "installed")->Collect()) {
    if (family.name == "tiercache_l1_hits_total" && family.metric.size() == 1 &&
        family.metric[0].counter.value == 1) {
      found_hits = true;
    }
  }
  if (!found_hits) {
    std::cerr << "MetricsFor: no tiercache_l1_hits_total of 1\n";
    return 1;
  }
  std::cout << "installed tiercache::metrics works\n";
#endif
  std::cout << "installed tiercache works\n";
  return 0;
}
