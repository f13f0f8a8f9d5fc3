// Tutorial step 14: metrics for an operator. A TieredCache's statistics
// become Prometheus metrics through tiercache::metrics (MetricsFor), served
// by prometheus-cpp's Exposer at /metrics for Prometheus to scrape. The
// program serves them on a free loopback port, makes some traffic, and shows
// what a scrape holds. See docs/tutorial.md and docs/operations.md.

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "check.h"
#include "l2_server.h"
#include "tiercache/metrics.h"
#include "tiercache/tiered_cache.h"

int main(int argc, char** argv) {
  TutorialMemcached memcached(argc, argv);
  TUTORIAL_CHECK(memcached.ok());
  tiercache::TieredOptions options;
  options.l1.max_bytes = 64 << 20;
  options.l2.servers = {memcached.address()};
  auto cache = tiercache::TieredCache::Create(options);
  TUTORIAL_CHECK(cache.ok());

  // In a service: prometheus::Exposer exposer("0.0.0.0:9464"). Port 0 here:
  // any free one.
  prometheus::Exposer exposer("127.0.0.1:0");
  std::shared_ptr<prometheus::Collectable> metrics = tiercache::MetricsFor(**cache, "profiles");
  exposer.RegisterCollectable(metrics);
  std::cout << "serving http://127.0.0.1:" << exposer.GetListeningPorts().front() << "/metrics\n";

  // Traffic: 3 loads, then 3 hits from L1.
  const std::string prefix = absl::StrCat("step14:", static_cast<int64_t>(::getpid()), ":");
  for (int round = 0; round < 2; ++round) {
    for (int user = 0; user < 3; ++user) {
      auto profile = (*cache)->GetOrLoad(absl::StrCat(prefix, user), [](std::string_view key) {
        return absl::StatusOr<std::string>(absl::StrCat("profile of ", std::string(key)));
      });
      TUTORIAL_CHECK(profile.ok());
    }
  }

  // What Prometheus reads at each scrape (the statistics, read at that time).
  std::ostringstream scrape;
  prometheus::TextSerializer().Serialize(scrape, metrics->Collect());
  const std::string text = scrape.str();
  for (std::string_view family :
       {"tiercache_l1_hits_total", "tiercache_loads_total", "tiercache_l2_server_up"}) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (std::string_view(line).starts_with(family)) std::cout << line << "\n";
    }
  }
  TUTORIAL_CHECK(absl::StrContains(text, "tiercache_l1_hits_total{cache=\"profiles\"} 3"));
  TUTORIAL_CHECK(absl::StrContains(text, "tiercache_loads_total{cache=\"profiles\"} 3"));
  TUTORIAL_CHECK(
      absl::StrContains(text, absl::StrCat("tiercache_l2_server_up{cache=\"profiles\",server=\"",
                                           memcached.address(), "\"} 1")));
  exposer.RemoveCollectable(metrics);  // before the cache it reads goes
  return 0;
}
