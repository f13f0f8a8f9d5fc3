#include "tiered/lease_loader.h"

#include <algorithm>
#include <utility>

#include "check.h"

namespace tiercache::mirror_internal {

absl::StatusOr<std::string> LeaseLoader::CallLoader(std::string_view key, const Loader& loader,
                                                    const WriteOptions& options) {
  TieredCounters& counters = tiers_.counters();
  TieredCounters::Bump(counters.loads);
  absl::StatusOr<std::string> loaded = loader(key);
  if (loaded.ok()) {
    if (absl::Status fits = tiers_.CheckLoaded(key, *loaded, options.ttl); !fits.ok()) {
      loaded = fits;
    }
  }
  if (!loaded.ok()) TieredCounters::Bump(counters.load_failures);
  return loaded;
}

void LeaseLoader::StoreOver(std::string_view key, std::string_view value,
                            const WriteOptions& options, uint64_t cas,
                            std::optional<uint64_t> replacing) {
  const int64_t asked_ns = tiers_.NowNs();
  absl::StatusOr<Stored> stored = tiers_.l2().Store(key, value, options, StoreMode::kSet, cas);
  if (!stored.ok()) {
    tiers_.CountError(key, stored.status());
    return;
  }
  if (stored->result != StoreResult::kStored) return;
  tiers_.Fill(key, CopyFill{.value = value,
                            .flags = options.flags,
                            .header = {stored->cas, asked_ns},
                            .l2_remaining = options.ttl.value_or(tiers_.l2().default_ttl()),
                            .write_ttl = options.ttl,
                            .replacing = replacing});
}

void LeaseLoader::ReleaseLease(std::string_view key, uint64_t cas) {
  absl::StatusOr<bool> deleted = tiers_.l2().Delete(key, cas);
  if (!deleted.ok()) tiers_.CountError(key, deleted.status());
}

absl::StatusOr<std::string> LeaseLoader::Load(std::string_view key, const Loader& loader,
                                              const WriteOptions& options, const LoadOptions& load,
                                              Copy* current, bool warm_up) {
  TieredCounters& counters = tiers_.counters();
  Clock& clock = tiers_.clock();
  FetchOptions request;
  request.lease_ttl = tiers_.options().lease_ttl;
  if (load.refresh_ahead > absl::ZeroDuration()) request.recache_below = load.refresh_ahead;
  const std::optional<uint64_t> replacing =
      current != nullptr ? std::optional<uint64_t>(current->l1_cas) : std::nullopt;
  const absl::Time give_up = clock.Now() + tiers_.options().lease_wait;
  absl::Duration poll = absl::Milliseconds(1);
  bool waited = false;
  // A wait for another replica's load, however it ends, is a latency the
  // caller saw (on the injected clock: exact in tests).
  absl::Time wait_started;
  struct WaitRecorded {
    ~WaitRecorded() {
      if (*waited) l2->RecordLatency(L2Op::kLeaseWait, clock->Now() - *started);
    }
    const bool* waited;
    const absl::Time* started;
    L2Tier* l2;
    Clock* clock;
  } recorded{&waited, &wait_started, &tiers_.l2(), &clock};
  while (true) {
    const int64_t asked_ns = tiers_.NowNs();
    absl::StatusOr<Fetched> r = tiers_.l2().Fetch(key, request);
    if (!r.ok()) tiers_.CountError(key, r.status());
    if (!r.ok() && current != nullptr) {  // L2 cannot answer: serve what L1 has
      counters.l1_hits.Add();
      return std::move(current->value);
    }
    if (!r.ok() || !r->found) {
      // L2 cannot help (down, or no lease given): load, and let the mirror
      // try to share the value.
      if (r.ok()) TieredCounters::Bump(counters.l2_misses);
      absl::StatusOr<std::string> loaded = CallLoader(key, loader, options);
      if (loaded.ok()) (void)tiers_.WriteThrough(key, *loaded, options);
      return loaded;
    }
    const uint64_t cas = r->cas;
    if (!r->IsLeaseStub()) {
      if (r->won) {  // early refresh: this replica reloads, others serve
        TieredCounters::Bump(counters.refreshes);
        absl::StatusOr<std::string> loaded = CallLoader(key, loader, options);
        if (loaded.ok()) {
          StoreOver(key, *loaded, options, cas, replacing);
          return loaded;
        }
        // Serve the current value; the item expires as it would have.
      }
      TieredCounters::Bump(counters.l2_hits);
      tiers_.FillFrom(key, *r, asked_ns, options.ttl, replacing);
      return std::move(r->value);
    }
    if (r->won) {  // this replica holds the lease
      TieredCounters::Bump(counters.l2_misses);
      TieredCounters::Bump(counters.lease_wins);
      if (warm_up) {
        if (std::optional<std::string> warm = warm_up_.FromOldPool(key, cas)) return *warm;
      }
      absl::StatusOr<std::string> loaded = CallLoader(key, loader, options);
      if (loaded.ok()) {
        StoreOver(key, *loaded, options, cas, replacing);
      } else {
        ReleaseLease(key, cas);
      }
      return loaded;
    }
    // Another replica holds the lease and is loading.
    TIERCACHE_ASSERT(r->lost, "a lease stub answered neither W nor Z");
    if (!waited) {
      waited = true;
      wait_started = clock.Now();
      TieredCounters::Bump(counters.lease_waits);
    }
    const absl::Time now = clock.Now();
    if (now >= give_up) {
      TieredCounters::Bump(counters.lease_timeouts);
      absl::StatusOr<std::string> loaded = CallLoader(key, loader, options);
      // Replaces the stub only: the lease holder may have stored by now.
      if (loaded.ok()) StoreOver(key, *loaded, options, cas, replacing);
      return loaded;
    }
    clock.SleepFor(std::min(poll, give_up - now));
    poll = std::min(poll * 2, absl::Milliseconds(50));
  }
}

}  // namespace tiercache::mirror_internal
