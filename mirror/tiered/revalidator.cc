#include "tiered/revalidator.h"

#include <utility>

namespace tiercache::mirror_internal {

absl::StatusOr<Fetched> Revalidator::FetchCounted(std::string_view key,
                                                  const FetchOptions& options) {
  absl::StatusOr<Fetched> fetched = tiers_.l2().Fetch(key, options);
  if (!fetched.ok()) tiers_.CountError(key, fetched.status());
  return fetched;
}

std::nullopt_t Revalidator::Gone(std::string_view key, const Copy& copy) {
  TieredCounters::Bump(tiers_.counters().revalidated_gone);
  tiers_.Drop(key, copy);
  return std::nullopt;
}

std::optional<absl::StatusOr<std::string>> Revalidator::Revalidate(std::string_view key,
                                                                   Copy& copy) {
  TieredCounters& counters = tiers_.counters();
  TieredCounters::Bump(counters.revalidations);
  const int64_t asked_ns = tiers_.NowNs();
  const bool known = copy.header.cas_known();
  if (known) {
    FetchOptions cas_only;
    cas_only.value = false;
    absl::StatusOr<Fetched> r = FetchCounted(key, cas_only);
    if (!r.ok()) {  // L2 cannot answer: L1 keeps serving what it has
      counters.l1_hits.Add();
      return std::move(copy.value);
    }
    if (!r->found) return Gone(key, copy);
    if (r->cas == copy.header.version) {
      TieredCounters::Bump(counters.revalidated_unchanged);
      counters.l1_hits.Add();
      tiers_.Restamp(key, copy, asked_ns);
      return std::move(copy.value);
    }
  }
  absl::StatusOr<Fetched> r = FetchCounted(key, FetchOptions{});
  if (!r.ok()) {
    counters.l1_hits.Add();
    return std::move(copy.value);
  }
  if (!r->found || r->IsLeaseStub()) return Gone(key, copy);
  if (!known && r->value == copy.value && r->flags == copy.flags) {
    TieredCounters::Bump(counters.revalidated_unchanged);
    counters.l1_hits.Add();
  } else {
    TieredCounters::Bump(counters.revalidated_changed);
    TieredCounters::Bump(counters.l2_hits);
  }
  // A changed copy is replaced by L2's item, checked now: it is servable
  // again for max_staleness.
  tiers_.FillFrom(key, *r, asked_ns, std::nullopt, copy.l1_cas);
  return std::move(r->value);
}

}  // namespace tiercache::mirror_internal
