#include "tiered/tiers.h"

#include <algorithm>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "check.h"
#include "validate.h"

namespace tiercache::mirror_internal {

std::string KeyText(std::string_view key) { return absl::CEscape(std::string(key)); }

void TieredCounters::Fill(TieredStats* stats) const {
  const auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  stats->l1_hits = l1_hits.Sum();
  stats->l2_hits = get(l2_hits);
  stats->l2_misses = get(l2_misses);
  stats->l2_errors = get(l2_errors);
  stats->fallback_hits = get(fallback_hits);
  stats->revalidations = get(revalidations);
  stats->revalidated_unchanged = get(revalidated_unchanged);
  stats->revalidated_changed = get(revalidated_changed);
  stats->revalidated_gone = get(revalidated_gone);
  stats->loads = get(loads);
  stats->load_failures = get(load_failures);
  stats->lease_wins = get(lease_wins);
  stats->lease_waits = get(lease_waits);
  stats->lease_timeouts = get(lease_timeouts);
  stats->refreshes = get(refreshes);
}

Tiers::Tiers(const TieredOptions& options, Cache& l1, L2Tier& l2, Clock& clock)
    : options_(options),
      l1_(l1),
      l2_(l2),
      clock_(clock),
      staleness_ns_(options.max_staleness == absl::InfiniteDuration()
                        ? std::numeric_limits<int64_t>::max()
                        : absl::ToInt64Nanoseconds(options.max_staleness)) {}

absl::Status Tiers::CheckL1Key(std::string_view key) const {
  return common_internal::CheckKey(key, options_.l1.max_key_size);
}

absl::Status Tiers::CheckKey(std::string_view key) const {
  if (absl::Status s = CheckL1Key(key); !s.ok()) return s;
  return l2_.CheckKey(key);
}

absl::Status Tiers::CheckWrite(std::string_view key, std::string_view value,
                               const WriteOptions& options) const {
  if (absl::Status s = CheckL1Key(key); !s.ok()) return s;
  if (absl::Status s = common_internal::CheckValueSize(value.size(), options_.l1.max_value_size);
      !s.ok()) {
    return s;
  }
  return l2_.CheckWrite(key, value.size(), options.ttl);
}

absl::Status Tiers::CheckLoaded(std::string_view key, std::string_view value,
                                std::optional<absl::Duration> ttl) const {
  // Too large for either tier: an error, as Cache::GetOrLoad makes it.
  absl::Status fits = common_internal::CheckValueSize(value.size(), options_.l1.max_value_size);
  if (fits.ok()) fits = l2_.CheckWrite(key, value.size(), ttl);
  if (fits.ok()) return fits;
  return absl::Status(
      fits.code(), absl::StrFormat("the loader's value for '%s' cannot be cached: %s", KeyText(key),
                                   fits.message()));
}

bool Tiers::Pending(const CopyHeader& header) const {
  return header.pending() && l2_.finished_writes() < header.write_sequence();
}

bool Tiers::Servable(const CopyHeader& header) const {
  return NowNs() - header.checked_ns < staleness_ns_ || Pending(header);
}

void Tiers::Fill(std::string_view key, const CopyFill& fill) {
  const absl::Duration ttl =
      std::min(fill.l2_remaining, fill.write_ttl.value_or(l1_.options().default_ttl));
  if (ttl <= absl::ZeroDuration()) return;
  // A value L1 cannot hold is still the answer; L1 just does not keep it.
  // Only WriteThrough makes pending copies: a fill is a copy of what L2
  // holds. A CAS from memcached with its top bit set would read as pending:
  // keep it as "unknown" (revalidated by value) instead.
  CopyHeader header = fill.header;
  if (header.pending()) header.version = 0;
  const std::string entry = EncodeCopy(header, fill.value);
  if (fill.replacing.has_value()) {
    (void)l1_.CompareAndSwap(key, entry, *fill.replacing, {ttl, fill.flags});
  } else {
    (void)l1_.Add(key, entry, {ttl, fill.flags});
  }
}

void Tiers::FillFrom(std::string_view key, const Fetched& r, int64_t asked_ns,
                     std::optional<absl::Duration> write_ttl, std::optional<uint64_t> replacing) {
  Fill(key, CopyFill{.value = r.value,
                     .flags = r.flags,
                     .header = {r.cas, asked_ns},
                     .l2_remaining = r.remaining,
                     .write_ttl = write_ttl,
                     .replacing = replacing});
}

void Tiers::Restamp(std::string_view key, const Copy& copy, int64_t checked_ns) {
  const absl::Duration left =
      copy.expiry == absl::InfiniteFuture() ? absl::InfiniteDuration() : copy.expiry - clock_.Now();
  if (left <= absl::ZeroDuration()) return;
  (void)l1_.CompareAndSwap(key, EncodeCopy({copy.header.version, checked_ns}, copy.value),
                           copy.l1_cas, {left, copy.flags});
}

void Tiers::Drop(std::string_view key, const Copy& copy) { l1_.Delete(key, copy.l1_cas); }

absl::Status Tiers::WriteThrough(std::string_view key, std::string_view value,
                                 const WriteOptions& options) {
  const absl::Duration l2_ttl = options.ttl.value_or(l2_.default_ttl());
  absl::Status replicated = l2_.Replicate(key, value, {l2_ttl, options.flags});
  // Replicated first, so that the copy can name its place in the queue.
  const CopyHeader header{replicated.ok() ? kPending | l2_.accepted_writes() : 0, NowNs()};
  TIERCACHE_ASSERT(!replicated.ok() || l2_.accepted_writes() > 0,
                   "a write was accepted but the mirror counts none");
  (void)l1_.Set(key, EncodeCopy(header, value),
                {std::min(options.ttl.value_or(l1_.options().default_ttl), l2_ttl), options.flags});
  if (!replicated.ok()) {
    return absl::Status(replicated.code(),
                        absl::StrFormat("'%s' is in this replica's L1 but not replicated to "
                                        "memcached: %s",
                                        KeyText(key), replicated.message()));
  }
  return absl::OkStatus();
}

void Tiers::CountError(std::string_view key, const absl::Status& why) {
  TieredCounters::Bump(counters_.l2_errors);
  if (options_.on_l2_error) options_.on_l2_error(key, why);
}

}  // namespace tiercache::mirror_internal
