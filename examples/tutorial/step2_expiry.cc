// Tutorial step 2: time to live, with a fake clock. See docs/tutorial.md.

#include <iostream>

#include "check.h"
#include "tiercache/cache.h"
#include "tiercache/clock.h"

int main() {
  tiercache::FakeClock clock;  // moves only when told to
  tiercache::CacheOptions options;
  options.max_bytes = 16 << 20;
  options.default_ttl = absl::Minutes(1);  // writes that give no TTL live one minute
  options.clock = &clock;
  auto created = tiercache::Cache::Create(options);
  TUTORIAL_CHECK(created.ok());
  tiercache::Cache& cache = **created;

  TUTORIAL_CHECK(cache.Set("session", "alice").ok());                               // 1 minute
  TUTORIAL_CHECK(cache.Set("token", "t0k3n", {.ttl = absl::Seconds(5)}).ok());      // 5 seconds
  TUTORIAL_CHECK(cache.Set("motd", "hi", {.ttl = absl::InfiniteDuration()}).ok());  // never

  // An entry expires when its TTL has fully run out, and is never returned after.
  clock.Advance(absl::Seconds(5));
  TUTORIAL_CHECK(!cache.Get("token").has_value());
  TUTORIAL_CHECK(cache.Get("session") == "alice");

  // Touch gives an entry a new TTL, counted from now.
  TUTORIAL_CHECK(cache.Touch("session", absl::Minutes(10)));
  std::optional<tiercache::Item> session = cache.GetItem("session");
  TUTORIAL_CHECK(session.has_value());
  std::cout << "session expires at " << absl::FormatTime(session->expiry, absl::UTCTimeZone())
            << "\n";

  // An hour later the session is dead. Nobody reads it again, but it does not
  // hold memory forever: writes trim dead entries a few at a time, and
  // ReclaimExpired() (or a reaper thread, CacheOptions::reap_interval) takes
  // all of them.
  clock.Advance(absl::Hours(1));
  TUTORIAL_CHECK(cache.ReclaimExpired() == 1);
  TUTORIAL_CHECK(cache.Get("motd") == "hi");

  tiercache::CacheStats stats = cache.Stats();
  std::cout << stats.expirations << " expired, " << stats.items << " left\n";
  TUTORIAL_CHECK(stats.expirations == 2 && stats.items == 1);
  return 0;
}
