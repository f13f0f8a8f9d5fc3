#include "tiered/warm_up.h"

#include <utility>

namespace tiercache::mirror_internal {

std::optional<std::string> WarmUp::FromOldPool(std::string_view key,
                                               std::optional<uint64_t> lease_cas) {
  L2Tier& l2 = tiers_.l2();
  if (!l2.has_fallback()) return std::nullopt;
  absl::StatusOr<Fetched> old = l2.FetchFallback(key);
  if (!old.ok()) {
    tiers_.CountError(key, old.status());
    return std::nullopt;
  }
  if (!old->found || old->IsLeaseStub()) return std::nullopt;
  TieredCounters::Bump(tiers_.counters().fallback_hits);
  const int64_t asked_ns = tiers_.NowNs();
  const WriteOptions write{old->remaining, old->flags};
  absl::StatusOr<Stored> stored = l2.Store(
      key, old->value, write, lease_cas.has_value() ? StoreMode::kSet : StoreMode::kAdd, lease_cas);
  if (!stored.ok()) tiers_.CountError(key, stored.status());
  if (stored.ok() && stored->result == StoreResult::kStored) {
    tiers_.Fill(key, CopyFill{.value = old->value,
                              .flags = old->flags,
                              .header = {stored->cas, asked_ns},
                              .l2_remaining = old->remaining,
                              .write_ttl = std::nullopt,
                              .replacing = std::nullopt});
  }
  // Otherwise the primary got newer data meanwhile (or is down): this answer
  // stays right for now, and L1 does not keep it.
  return std::move(old->value);
}

}  // namespace tiercache::mirror_internal
