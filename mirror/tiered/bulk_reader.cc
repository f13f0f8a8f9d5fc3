#include "tiered/bulk_reader.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "check.h"

namespace tiercache::mirror_internal {

void BulkReader::Apply(Pending& p, Fetched& r, int64_t asked_ns, bool leasing, Values* out,
                       std::vector<Pending>* leased, std::vector<Pending>* waiting) {
  TieredCounters& counters = tiers_.counters();
  const std::string key(p.key);
  if (r.found && !r.IsLeaseStub()) {
    if (p.copy.has_value()) {
      const CopyHeader& had = p.copy->header;
      const bool unchanged = had.cas_known() ? r.cas == had.version
                                             : r.value == p.copy->value && r.flags == p.copy->flags;
      TieredCounters::Bump(unchanged ? counters.revalidated_unchanged
                                     : counters.revalidated_changed);
      if (unchanged) {
        counters.l1_hits.Add();
      } else {
        TieredCounters::Bump(counters.l2_hits);
      }
    } else {
      TieredCounters::Bump(counters.l2_hits);
    }
    tiers_.FillFrom(p.key, r, asked_ns, std::nullopt,
                    p.copy.has_value() ? std::optional<uint64_t>(p.copy->l1_cas) : std::nullopt);
    (*out)[key] = std::move(r.value);
    return;
  }
  if (p.copy.has_value()) {  // gone from L2 (or only a lease stub there)
    TieredCounters::Bump(counters.revalidated_gone);
    tiers_.Drop(p.key, *p.copy);
    p.copy.reset();  // a load adds a new copy, not replaces the dropped one
  } else if (!leasing || !r.IsLeaseStub() || r.won) {
    TieredCounters::Bump(counters.l2_misses);
  }
  if (!leasing || !r.IsLeaseStub()) {
    // GetMany: a miss. The old pool may answer keys L1 had no copy of.
    if (!p.had_copy) {
      if (std::optional<std::string> warm = warm_up_.FromOldPool(p.key, std::nullopt)) {
        (*out)[key] = *std::move(warm);
      }
    }
    return;
  }
  p.lease_cas = r.cas;
  if (r.won) {
    leased->push_back(std::move(p));
  } else {
    waiting->push_back(std::move(p));
  }
}

absl::Status BulkReader::LoadAndStore(std::vector<Pending>& keys, const BulkLoader& loader,
                                      const WriteOptions& options, Values* out) {
  if (keys.empty()) return absl::OkStatus();
  TieredCounters& counters = tiers_.counters();
  std::vector<std::string_view> names;
  names.reserve(keys.size());
  for (const Pending& p : keys) names.push_back(p.key);
  TieredCounters::Bump(counters.loads);
  absl::StatusOr<Values> loaded = loader(names);
  absl::Status status = loaded.status();
  if (loaded.ok()) {
    for (const auto& [key, value] : *loaded) {
      if (absl::Status fits = tiers_.CheckLoaded(key, value, options.ttl); !fits.ok()) {
        status = fits;
        break;
      }
    }
  }
  if (!status.ok()) {
    TieredCounters::Bump(counters.load_failures);
    for (const Pending& p : keys) {
      if (p.lease_cas != 0) leases_.ReleaseLease(p.key, p.lease_cas);
    }
    return status;
  }
  for (const Pending& p : keys) {
    auto it = loaded->find(absl::string_view(p.key.data(), p.key.size()));
    if (it == loaded->end()) {  // the loader has no value for it: not cached
      if (p.lease_cas != 0) leases_.ReleaseLease(p.key, p.lease_cas);
      continue;
    }
    if (p.lease_cas != 0) {
      leases_.StoreOver(
          p.key, it->second, options, p.lease_cas,
          p.copy.has_value() ? std::optional<uint64_t>(p.copy->l1_cas) : std::nullopt);
    } else {
      (void)tiers_.WriteThrough(p.key, it->second, options);
    }
    (*out)[std::string(p.key)] = std::move(it->second);
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> BulkReader::GetMany(
    absl::Span<const std::string_view> keys, const BulkLoader* loader,
    const WriteOptions& options) {
  TieredCounters& counters = tiers_.counters();
  Values out;
  out.reserve(keys.size());
  std::vector<Pending> rest;
  for (std::string_view key : keys) {
    if (out.contains(absl::string_view(key.data(), key.size()))) continue;
    std::optional<Copy> copy = DecodeCopy(tiers_.l1().GetItem(key));
    if (copy.has_value() && tiers_.Servable(copy->header)) {
      counters.l1_hits.Add();
      out[std::string(key)] = std::move(copy->value);
      continue;
    }
    if (copy.has_value()) TieredCounters::Bump(counters.revalidations);
    const bool had_copy = copy.has_value();
    rest.push_back(Pending{key, std::move(copy), 0, had_copy});
  }
  // A key asked twice is one request.
  std::sort(rest.begin(), rest.end(),
            [](const Pending& a, const Pending& b) { return a.key < b.key; });
  rest.erase(std::unique(rest.begin(), rest.end(),
                         [](const Pending& a, const Pending& b) { return a.key == b.key; }),
             rest.end());
  if (rest.empty()) return out;

  const bool leasing = loader != nullptr;
  FetchOptions fetch;
  if (leasing) fetch.lease_ttl = tiers_.options().lease_ttl;
  std::vector<std::string_view> names;
  const auto names_of = [&names](const std::vector<Pending>& pending) {
    names.clear();
    for (const Pending& p : pending) names.push_back(p.key);
    return absl::Span<const std::string_view>(names);
  };
  int64_t asked_ns = tiers_.NowNs();
  absl::StatusOr<std::vector<Fetched>> fetched = tiers_.l2().FetchMany(names_of(rest), fetch);
  if (!fetched.ok()) {
    // L2 cannot answer: stale copies are served; the rest are misses, or
    // loaded (and replicated) without leases.
    tiers_.CountError(rest.front().key, fetched.status());
    std::vector<Pending> to_load;
    for (Pending& p : rest) {
      if (p.copy.has_value()) {
        counters.l1_hits.Add();
        out[std::string(p.key)] = std::move(p.copy->value);
      } else if (leasing) {
        to_load.push_back(std::move(p));
      }
    }
    if (leasing) {
      if (absl::Status s = LoadAndStore(to_load, *loader, options, &out); !s.ok()) return s;
    }
    return out;
  }
  TIERCACHE_ASSERT(fetched->size() == rest.size(), "FetchMany answered another number of keys");
  std::vector<Pending> leased;
  std::vector<Pending> waiting;
  for (size_t i = 0; i < rest.size(); ++i) {
    Apply(rest[i], (*fetched)[i], asked_ns, leasing, &out, &leased, &waiting);
  }
  if (!leasing) return out;

  // Keys this replica holds the lease of: the old pool first (not for keys
  // that had a copy: those were in the new pool), then one loader call.
  std::vector<Pending> to_load;
  for (Pending& p : leased) {
    TieredCounters::Bump(counters.lease_wins);
    if (!p.had_copy) {
      if (std::optional<std::string> warm = warm_up_.FromOldPool(p.key, p.lease_cas)) {
        out[std::string(p.key)] = *std::move(warm);
        continue;
      }
    }
    to_load.push_back(std::move(p));
  }
  if (absl::Status s = LoadAndStore(to_load, *loader, options, &out); !s.ok()) return s;

  // Keys another replica is loading: poll until they appear or lease_wait
  // passes. A holder that died loses its stub after lease_ttl, and the next
  // poll wins a new lease for this replica.
  if (waiting.empty()) return out;
  counters.lease_waits.fetch_add(waiting.size(), std::memory_order_relaxed);
  Clock& clock = tiers_.clock();
  const absl::Time give_up = clock.Now() + tiers_.options().lease_wait;
  absl::Duration poll = absl::Milliseconds(1);
  std::vector<Pending> late;  // won after waiting, or waited out
  while (!waiting.empty()) {
    const absl::Time now = clock.Now();
    if (now >= give_up) {
      counters.lease_timeouts.fetch_add(waiting.size(), std::memory_order_relaxed);
      for (Pending& p : waiting) late.push_back(std::move(p));
      waiting.clear();
      break;
    }
    clock.SleepFor(std::min(poll, give_up - now));
    poll = std::min(poll * 2, absl::Milliseconds(50));
    asked_ns = tiers_.NowNs();
    fetched = tiers_.l2().FetchMany(names_of(waiting), fetch);
    if (!fetched.ok()) {
      tiers_.CountError(waiting.front().key, fetched.status());
      for (Pending& p : waiting) {
        p.lease_cas = 0;  // L2 is gone: load and replicate
        late.push_back(std::move(p));
      }
      waiting.clear();
      break;
    }
    std::vector<Pending> still;
    std::vector<Pending> won;
    for (size_t i = 0; i < waiting.size(); ++i) {
      Apply(waiting[i], (*fetched)[i], asked_ns, /*leasing=*/true, &out, &won, &still);
    }
    counters.lease_wins.fetch_add(won.size(), std::memory_order_relaxed);
    for (Pending& p : won) late.push_back(std::move(p));
    waiting = std::move(still);
  }
  // Replaces the stubs only: a holder may have stored by now.
  if (absl::Status s = LoadAndStore(late, *loader, options, &out); !s.ok()) return s;
  return out;
}

}  // namespace tiercache::mirror_internal
