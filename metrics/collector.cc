#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"
#include "tiercache/metrics.h"

namespace tiercache {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// The families of one scrape, built from one Stats() snapshot.
class Families {
 public:
  explicit Families(const std::string& cache_name) : cache_name_(cache_name) {}

  void Counter(std::string name, std::string help, uint64_t value,
               std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric metric = Metric(std::move(labels));
    metric.counter.value = static_cast<double>(value);
    Add(std::move(name), std::move(help), MetricType::Counter, std::move(metric));
  }
  void Gauge(std::string name, std::string help, double value,
             std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric metric = Metric(std::move(labels));
    metric.gauge.value = value;
    Add(std::move(name), std::move(help), MetricType::Gauge, std::move(metric));
  }
  void Histogram(std::string name, std::string help, const LatencyHistogram& h,
                 std::vector<ClientMetric::Label> labels) {
    ClientMetric metric = Metric(std::move(labels));
    metric.histogram.sample_count = h.count;
    metric.histogram.sample_sum = h.sum_seconds;
    const std::vector<double>& bounds = LatencyHistogram::Bounds();
    uint64_t cumulative = 0;
    for (size_t b = 0; b < h.counts.size(); ++b) {
      cumulative += h.counts[b];
      metric.histogram.bucket.push_back(
          {cumulative, b < bounds.size() ? bounds[b] : std::numeric_limits<double>::infinity()});
    }
    Add(std::move(name), std::move(help), MetricType::Histogram, std::move(metric));
  }
  std::vector<MetricFamily> Take() && { return std::move(families_); }

 private:
  ClientMetric Metric(std::vector<ClientMetric::Label> labels) const {
    ClientMetric metric;
    metric.label.push_back({"cache", cache_name_});
    for (ClientMetric::Label& label : labels) metric.label.push_back(std::move(label));
    return metric;
  }
  // A series joins the family of its name (families with labels, such as
  // one per server, have several); families keep the order they first came.
  void Add(std::string name, std::string help, MetricType type, ClientMetric metric) {
    for (MetricFamily& family : families_) {
      if (family.name == name) {
        family.metric.push_back(std::move(metric));
        return;
      }
    }
    families_.push_back(MetricFamily{std::move(name), std::move(help), type, {std::move(metric)}});
  }

  const std::string& cache_name_;
  std::vector<MetricFamily> families_;
};

void AddL1(const CacheStats& l1, Families& f) {
  f.Counter("tiercache_l1_hits_total", "Reads the L1 answered.", l1.hits);
  f.Counter("tiercache_l1_misses_total", "Reads the L1 could not answer.", l1.misses);
  f.Counter("tiercache_l1_evictions_total", "L1 entries evicted to stay within the budget.",
            l1.evictions);
  f.Counter("tiercache_l1_expirations_total", "L1 entries dropped because their TTL passed.",
            l1.expirations);
  f.Gauge("tiercache_l1_items", "Entries in the L1.", static_cast<double>(l1.items));
  f.Gauge("tiercache_l1_bytes", "Bytes the L1's entries are charged (at most max_bytes).",
          static_cast<double>(l1.bytes));
  f.Gauge("tiercache_l1_reserved_bytes",
          "Memory the L1 holds from the system: pages, tables, heaps, sketches.",
          static_cast<double>(l1.reserved_bytes));
}

class CacheCollector : public prometheus::Collectable {
 public:
  CacheCollector(const Cache& cache, std::string name) : cache_(cache), name_(std::move(name)) {}
  std::vector<MetricFamily> Collect() const override {
    Families f(name_);
    AddL1(cache_.Stats(), f);
    return std::move(f).Take();
  }

 private:
  const Cache& cache_;
  const std::string name_;
};

class TieredCollector : public prometheus::Collectable {
 public:
  TieredCollector(const TieredCache& cache, std::string name)
      : cache_(cache), name_(std::move(name)) {}
  std::vector<MetricFamily> Collect() const override {
    const TieredStats s = cache_.Stats();
    Families f(name_);
    AddL1(s.l1, f);
    f.Counter("tiercache_l2_hits_total", "Reads memcached answered (filling the L1).", s.l2_hits);
    f.Counter("tiercache_l2_misses_total", "Reads memcached did not have.", s.l2_misses);
    f.Counter("tiercache_l2_errors_total",
              "memcached calls that failed: down, timed out, refused or a broken answer.",
              s.l2_errors);
    f.Counter("tiercache_loads_total", "Loader (data source) calls.", s.loads);
    f.Counter("tiercache_load_failures_total", "Loader calls that returned an error.",
              s.load_failures);
    f.Counter("tiercache_lease_wins_total", "Missing keys this replica won the lease to load.",
              s.lease_wins);
    f.Counter("tiercache_lease_waits_total", "Missing keys this replica waited on another's load.",
              s.lease_waits);
    const uint64_t outcomes = s.revalidated_unchanged + s.revalidated_changed + s.revalidated_gone;
    const char* const help = "Stale L1 copies checked against memcached, by outcome.";
    f.Counter("tiercache_revalidations_total", help, s.revalidated_unchanged,
              {{"outcome", "unchanged"}});
    f.Counter("tiercache_revalidations_total", help, s.revalidated_changed,
              {{"outcome", "changed"}});
    f.Counter("tiercache_revalidations_total", help, s.revalidated_gone, {{"outcome", "gone"}});
    // memcached could not answer: the copy was served as it was.
    f.Counter("tiercache_revalidations_total", help,
              s.revalidations > outcomes ? s.revalidations - outcomes : 0, {{"outcome", "failed"}});
    f.Counter("tiercache_mirror_replicated_writes_total", "Writes memcached acknowledged.",
              s.mirror.replicated);
    f.Counter("tiercache_mirror_failed_writes_total",
              "Writes memcached refused or that were lost with a connection.", s.mirror.failed);
    f.Counter("tiercache_mirror_dropped_writes_total",
              "Writes not queued because the replication queue was full.", s.mirror.dropped);
    f.Gauge("tiercache_mirror_queue_depth", "Writes queued for memcached.",
            static_cast<double>(s.mirror.queue_depth));
    for (size_t op = 0; op < kL2OpCount; ++op) {
      f.Histogram("tiercache_l2_request_duration_seconds",
                  "How long L2 requests took, by operation (lease waits included).",
                  s.l2_latency.by_op[op], {{"op", std::string(L2OpName(static_cast<L2Op>(op)))}});
    }
    for (const ServerStatus& server : s.l2_servers) {
      f.Gauge("tiercache_l2_server_up", "1 while the memcached server is up, 0 while it is down.",
              server.up ? 1 : 0, {{"server", server.server}});
    }
    return std::move(f).Take();
  }

 private:
  const TieredCache& cache_;
  const std::string name_;
};

}  // namespace

std::shared_ptr<prometheus::Collectable> MetricsFor(const Cache& cache, std::string cache_name) {
  return std::make_shared<CacheCollector>(cache, std::move(cache_name));
}

std::shared_ptr<prometheus::Collectable> MetricsFor(const TieredCache& cache,
                                                    std::string cache_name) {
  return std::make_shared<TieredCollector>(cache, std::move(cache_name));
}

}  // namespace tiercache
