// tiercache/metrics.h — Prometheus metrics for a Cache or a TieredCache.
//
// An operator watches a cache's hit ratio, memory, evictions, L2 errors and
// replication on a dashboard. MetricsFor returns a prometheus-cpp
// Collectable that reads the cache's Stats() when it is scraped, and only
// then: nothing is added to the request path beyond what the statistics
// already cost. Register it with a prometheus::Registry or an Exposer:
//
//   prometheus::Exposer exposer("127.0.0.1:9464");
//   std::shared_ptr<prometheus::Collectable> metrics = tiercache::MetricsFor(*cache, "users");
//   exposer.RegisterCollectable(metrics);
//
// Every series carries the label cache="<cache_name>", so one registry can
// serve several caches. The names and labels are stable (tested); counters
// end in _total:
//
//   both types  tiercache_l1_hits_total, tiercache_l1_misses_total,
//               tiercache_l1_evictions_total, tiercache_l1_expirations_total,
//               tiercache_l1_items, tiercache_l1_bytes,
//               tiercache_l1_reserved_bytes
//   TieredCache tiercache_l2_hits_total, tiercache_l2_misses_total,
//               tiercache_l2_errors_total, tiercache_loads_total,
//               tiercache_load_failures_total, tiercache_lease_wins_total,
//               tiercache_lease_waits_total,
//               tiercache_revalidations_total{outcome="unchanged|changed|gone|failed"},
//               tiercache_mirror_replicated_writes_total,
//               tiercache_mirror_failed_writes_total,
//               tiercache_mirror_dropped_writes_total,
//               tiercache_mirror_queue_depth,
//               tiercache_l2_server_up{server="host:port"} (1 up, 0 down;
//               the gutter pool's servers too),
//               tiercache_l2_request_duration_seconds{op="get|set|delete|touch|
//               incr_decr|get_many|lease_wait|revalidation"} (a histogram,
//               buckets 50 µs .. 5 s, from the client's per-thread cells)
//
// What each means and the alerts worth setting: docs/operations.md.
//
// Lifetime: the collector refers to the cache, which must outlive every
// registration of it (unregister it, or destroy the registry or exposer,
// before the cache). Collect() is thread-safe, as Stats() is.

#ifndef TIERCACHE_METRICS_H_
#define TIERCACHE_METRICS_H_

#include <memory>
#include <string>

#include "prometheus/collectable.h"
#include "tiercache/cache.h"
#include "tiercache/tiered_cache.h"

namespace tiercache {

std::shared_ptr<prometheus::Collectable> MetricsFor(const Cache& cache, std::string cache_name);
std::shared_ptr<prometheus::Collectable> MetricsFor(const TieredCache& cache,
                                                    std::string cache_name);

}  // namespace tiercache

#endif  // TIERCACHE_METRICS_H_
