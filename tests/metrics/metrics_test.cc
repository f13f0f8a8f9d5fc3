// tiercache::metrics: the collectors' output, serialized in Prometheus's text
// format and parsed back by the reference parser (Debian's
// python3-prometheus-client, run as /usr/bin/python3), equals Stats() after a
// scripted workload, for a Cache and for a TieredCache (on the fake L2: exact
// counts; and on a real memcached with a gutter pool: server health); the
// names and labels are the documented ones.

#include "tiercache/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fake_l2.h"
#include "gtest/gtest.h"
#include "memcached_server.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"
#include "tiercache/cache.h"
#include "tiercache/clock.h"
#include "tiercache/tiered_cache.h"

namespace tiercache {
namespace {

// What the reference parser read: "sample{label=value,...}" -> value, and the
// families' names and types.
struct Scrape {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;  // family name (as the parser names it) -> type
  bool ok = false;
};

Scrape ParseWithPrometheusClient(const std::string& text) {
  Scrape scrape;
  char path[] = "/tmp/tiercache-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return scrape;
  ::close(fd);
  std::ofstream(path) << text;
  const std::string script = absl::StrCat(
      "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n"
      "for f in text_string_to_metric_families(open('",
      path,
      "').read()):\n"
      "    print('family', f.name, f.type)\n"
      "    for s in f.samples:\n"
      "        labels = ','.join(k + '=' + v for k, v in sorted(s.labels.items()))\n"
      "        print('sample', s.name + '{' + labels + '}', repr(float(s.value)))\n");
  const std::string command = "/usr/bin/python3 -c \"" + script + "\" 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return scrape;
  char line[4096];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    std::vector<std::string> words = absl::StrSplit(std::string(line), ' ', absl::SkipEmpty());
    for (std::string& w : words) {
      while (!w.empty() && (w.back() == '\n')) w.pop_back();
    }
    if (words.size() == 3 && words[0] == "family") scrape.types[words[1]] = words[2];
    if (words.size() == 3 && words[0] == "sample") scrape.samples[words[1]] = std::stod(words[2]);
  }
  scrape.ok = ::pclose(pipe) == 0;
  ::unlink(path);
  return scrape;
}

std::string Serialize(prometheus::Collectable& collectable) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, collectable.Collect());
  return out.str();
}

TEST(MetricsTest, ACachesScrapeEqualsItsStats) {
  CacheOptions options;
  options.max_items = 50;  // so that the workload evicts
  auto cache = *Cache::Create(options);
  for (int i = 0; i < 80; ++i) ASSERT_TRUE(cache->Set(absl::StrCat("k", i), "value").ok());
  for (int i = 0; i < 100; ++i) (void)cache->Get(absl::StrCat("k", i));
  const CacheStats stats = cache->Stats();
  ASSERT_GT(stats.evictions, 0u);
  ASSERT_GT(stats.hits, 0u);
  ASSERT_GT(stats.misses, 0u);

  std::shared_ptr<prometheus::Collectable> metrics = MetricsFor(*cache, "users");
  const Scrape scrape = ParseWithPrometheusClient(Serialize(*metrics));
  ASSERT_TRUE(scrape.ok);
  const std::map<std::string, double> expected = {
      {"tiercache_l1_hits_total{cache=users}", static_cast<double>(stats.hits)},
      {"tiercache_l1_misses_total{cache=users}", static_cast<double>(stats.misses)},
      {"tiercache_l1_evictions_total{cache=users}", static_cast<double>(stats.evictions)},
      {"tiercache_l1_expirations_total{cache=users}", static_cast<double>(stats.expirations)},
      {"tiercache_l1_items{cache=users}", static_cast<double>(stats.items)},
      {"tiercache_l1_bytes{cache=users}", static_cast<double>(stats.bytes)},
      {"tiercache_l1_reserved_bytes{cache=users}", static_cast<double>(stats.reserved_bytes)},
  };
  EXPECT_EQ(scrape.samples, expected);
  // The parser names a counter family without its _total.
  EXPECT_EQ(scrape.types.at("tiercache_l1_hits"), "counter");
  EXPECT_EQ(scrape.types.at("tiercache_l1_items"), "gauge");
}

TEST(MetricsTest, ATieredCachesScrapeEqualsItsStats) {
  FakeClock clock;
  testing::FakeMemcached memcached(&clock);
  TieredOptions options;
  options.l1.max_bytes = 1 << 20;
  options.l1.clock = &clock;
  options.max_staleness = absl::Seconds(1);
  auto cache = *mirror_internal::CreateTieredCache(
      options, std::make_unique<testing::FakeL2>(&memcached, nullptr));
  int loads = 0;
  const auto loader = [&loads](std::string_view k) -> absl::StatusOr<std::string> {
    ++loads;
    if (k == "broken") return absl::UnavailableError("the database is down");
    return std::string("row");
  };
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache->GetOrLoad(absl::StrCat("u", i), loader).ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache->GetOrLoad(absl::StrCat("u", i), loader).ok());
  EXPECT_FALSE(cache->GetOrLoad("broken", loader).ok());
  ASSERT_TRUE(cache->Set("set", "v").ok());
  EXPECT_FALSE(cache->Get("absent").has_value());
  clock.Advance(absl::Seconds(2));  // copies go stale: the next reads revalidate
  for (int i = 0; i < 3; ++i) (void)cache->Get(absl::StrCat("u", i));
  ASSERT_TRUE(cache->Flush(absl::Seconds(5)).ok());
  const TieredStats s = cache->Stats();
  ASSERT_EQ(s.loads, 11u);
  ASSERT_EQ(s.revalidations, 3u);

  std::shared_ptr<prometheus::Collectable> metrics = MetricsFor(*cache, "profiles");
  const Scrape scrape = ParseWithPrometheusClient(Serialize(*metrics));
  ASSERT_TRUE(scrape.ok);
  const auto at = [&](const std::string& sample) {
    auto it = scrape.samples.find(sample);
    return it == scrape.samples.end() ? -1.0 : it->second;
  };
  const std::string c = "{cache=profiles}";
  EXPECT_EQ(at("tiercache_l1_hits_total" + c), static_cast<double>(s.l1.hits));
  EXPECT_EQ(at("tiercache_l1_misses_total" + c), static_cast<double>(s.l1.misses));
  EXPECT_EQ(at("tiercache_l1_items" + c), static_cast<double>(s.l1.items));
  EXPECT_EQ(at("tiercache_l2_hits_total" + c), static_cast<double>(s.l2_hits));
  EXPECT_EQ(at("tiercache_l2_misses_total" + c), static_cast<double>(s.l2_misses));
  EXPECT_EQ(at("tiercache_l2_errors_total" + c), static_cast<double>(s.l2_errors));
  EXPECT_EQ(at("tiercache_loads_total" + c), 11.0);
  EXPECT_EQ(at("tiercache_load_failures_total" + c), 1.0);
  EXPECT_EQ(at("tiercache_lease_wins_total" + c), static_cast<double>(s.lease_wins));
  EXPECT_EQ(at("tiercache_lease_waits_total" + c), static_cast<double>(s.lease_waits));
  EXPECT_EQ(at("tiercache_revalidations_total{cache=profiles,outcome=unchanged}"),
            static_cast<double>(s.revalidated_unchanged));
  EXPECT_EQ(at("tiercache_revalidations_total{cache=profiles,outcome=changed}"),
            static_cast<double>(s.revalidated_changed));
  EXPECT_EQ(at("tiercache_revalidations_total{cache=profiles,outcome=gone}"),
            static_cast<double>(s.revalidated_gone));
  EXPECT_EQ(at("tiercache_revalidations_total{cache=profiles,outcome=failed}"), 0.0);
  EXPECT_EQ(at("tiercache_mirror_replicated_writes_total" + c),
            static_cast<double>(s.mirror.replicated));
  EXPECT_EQ(at("tiercache_mirror_failed_writes_total" + c), static_cast<double>(s.mirror.failed));
  EXPECT_EQ(at("tiercache_mirror_dropped_writes_total" + c), 0.0);
  EXPECT_EQ(at("tiercache_mirror_queue_depth" + c), 0.0);

  // The names are the documented ones, and no others.
  std::set<std::string> families;
  for (const prometheus::MetricFamily& family : metrics->Collect()) families.insert(family.name);
  EXPECT_EQ(families,
            (std::set<std::string>{
                "tiercache_l1_hits_total",
                "tiercache_l1_misses_total",
                "tiercache_l1_evictions_total",
                "tiercache_l1_expirations_total",
                "tiercache_l1_items",
                "tiercache_l1_bytes",
                "tiercache_l1_reserved_bytes",
                "tiercache_l2_hits_total",
                "tiercache_l2_misses_total",
                "tiercache_l2_errors_total",
                "tiercache_loads_total",
                "tiercache_load_failures_total",
                "tiercache_lease_wins_total",
                "tiercache_lease_waits_total",
                "tiercache_revalidations_total",
                "tiercache_mirror_replicated_writes_total",
                "tiercache_mirror_failed_writes_total",
                "tiercache_mirror_dropped_writes_total",
                "tiercache_mirror_queue_depth",
                "tiercache_l2_request_duration_seconds"}));  // l2_server_up: none on the fake L2
}

TEST(MetricsTest, ServerHealthIsAGaugePerServer) {
  testing::MemcachedServer primary, spare;
  ASSERT_TRUE(primary.running() && spare.running());
  TieredOptions options;
  options.l1.max_bytes = 1 << 20;
  options.l2.servers = {primary.address()};
  options.l2.gutter_servers = {spare.address()};
  options.l2.op_timeout = absl::Milliseconds(200);
  auto cache = *TieredCache::Create(options);
  std::shared_ptr<prometheus::Collectable> metrics = MetricsFor(*cache, "c");
  primary.Stop();
  (void)cache->Get("anything");  // finds the primary refusing connections
  const Scrape scrape = ParseWithPrometheusClient(Serialize(*metrics));
  ASSERT_TRUE(scrape.ok);
  EXPECT_EQ(scrape.samples.at("tiercache_l2_server_up{cache=c,server=" + primary.address() + "}"),
            0.0);
  EXPECT_EQ(scrape.samples.at("tiercache_l2_server_up{cache=c,server=" + spare.address() + "}"),
            1.0);
  EXPECT_EQ(scrape.types.at("tiercache_l2_server_up"), "gauge");
  // The client timed that get (it found the primary refused, then asked
  // the gutter): one sample, in the histogram of its op, equal to Stats().
  const LatencyHistogram gets = cache->Stats().l2_latency[L2Op::kGet];
  EXPECT_EQ(gets.count, 1u);
  EXPECT_EQ(scrape.types.at("tiercache_l2_request_duration_seconds"), "histogram");
  EXPECT_EQ(scrape.samples.at("tiercache_l2_request_duration_seconds_count{cache=c,op=get}"), 1.0);
  EXPECT_EQ(
      scrape.samples.at("tiercache_l2_request_duration_seconds_bucket{cache=c,le=+Inf,op=get}"),
      1.0);
  EXPECT_EQ(scrape.samples.at("tiercache_l2_request_duration_seconds_count{cache=c,op=set}"), 0.0);
}

// What an HTTP GET of `path` on 127.0.0.1:`port` returned (headers and body).
std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request =
        "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char chunk[4096];
      ssize_t n;
      while ((n = ::recv(fd, chunk, sizeof(chunk), 0)) > 0) response.append(chunk, n);
    }
  }
  ::close(fd);
  return response;
}

TEST(MetricsTest, AnExposerServesTheScrapeOverHttp) {
  CacheOptions options;
  options.max_bytes = 1 << 20;
  auto cache = *Cache::Create(options);
  ASSERT_TRUE(cache->Set("k", "v").ok());
  (void)cache->Get("k");
  prometheus::Exposer exposer("127.0.0.1:0");  // a free port
  ASSERT_FALSE(exposer.GetListeningPorts().empty());
  std::shared_ptr<prometheus::Collectable> metrics = MetricsFor(*cache, "web");
  exposer.RegisterCollectable(metrics);
  const std::string response = HttpGet(exposer.GetListeningPorts().front(), "/metrics");
  EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
  const size_t body = response.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  const Scrape scrape = ParseWithPrometheusClient(response.substr(body + 4));
  ASSERT_TRUE(scrape.ok);
  EXPECT_EQ(scrape.samples.at("tiercache_l1_hits_total{cache=web}"), 1.0);
  EXPECT_EQ(scrape.samples.at("tiercache_l1_items{cache=web}"), 1.0);
  exposer.RemoveCollectable(metrics);  // before the cache goes
}

}  // namespace
}  // namespace tiercache
