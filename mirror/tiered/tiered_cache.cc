// TieredCache: the orchestrator of the tiered layer. The contract is in
// tiercache/tiered_cache.h; docs/tiered.md explains the design.
//
// The parts, each in its own file under mirror/tiered/:
//   copy.h           the copy codec: the header every L1 entry carries
//   tiers.h          what the parts share: both tiers, the clock, the
//                    counters, and the operations on L1 copies
//   l2_tier.h        the L2 as typed calls (memcached pools + the Mirror);
//                    the only way this layer reaches memcached
//   revalidator.h    a stale copy checked against L2
//   lease_loader.h   one loader call per missing key across replicas
//   warm_up.h        L2 misses answered by an old pool
// This file routes each call: the L1 hit path, one flight per key per
// process, and the writes.

#include "tiercache/tiered_cache.h"

#include <algorithm>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_format.h"
#include "single_flight.h"
#include "tiered/bulk_reader.h"
#include "tiered/copy.h"
#include "tiered/l2_tier.h"
#include "tiered/lease_loader.h"
#include "tiered/revalidator.h"
#include "tiered/tiers.h"
#include "tiered/warm_up.h"
#include "validate.h"

namespace tiercache {

using mirror_internal::BulkReader;
using mirror_internal::Copy;
using mirror_internal::CopyHeader;
using mirror_internal::DecodeCopy;
using mirror_internal::EncodeCopy;
using mirror_internal::Fetched;
using mirror_internal::FetchOptions;
using mirror_internal::KeyText;
using mirror_internal::kHeaderSize;
using mirror_internal::L2Tier;
using mirror_internal::LeaseLoader;
using mirror_internal::PeekHeader;
using mirror_internal::Revalidator;
using mirror_internal::Stored;
using mirror_internal::StoreMode;
using mirror_internal::TieredCounters;
using mirror_internal::Tiers;
using mirror_internal::WarmUp;

class TieredCache::Impl {
 public:
  Impl(TieredOptions options, std::unique_ptr<Cache> l1, std::unique_ptr<L2Tier> l2, Clock& clock)
      : options_(std::move(options)),
        l1_(std::move(l1)),
        l2_(std::move(l2)),
        tiers_(options_, *l1_, *l2_, clock),
        revalidator_(tiers_),
        warm_up_(tiers_),
        lease_loader_(tiers_, warm_up_),
        bulk_reader_(tiers_, warm_up_, lease_loader_) {}

  // --- Reads ---------------------------------------------------------------

  // Get (loader == nullptr) and GetOrLoad. NotFound is a miss.
  absl::StatusOr<std::string> Lookup(std::string_view key, const Loader* loader,
                                     const WriteOptions& options, const LoadOptions& load) {
    // The L1 checks only: a key L1 holds has passed the L2 checks when it was
    // written, and building its wire form would cost every hit an allocation.
    if (absl::Status s = tiers_.CheckL1Key(key); !s.ok()) return s;
    // The hit path: the value and its header only (no flags, CAS or expiry
    // to build), and a per-thread counter.
    std::optional<std::string> entry = l1_->Get(key);
    if (entry.has_value()) {
      std::optional<CopyHeader> header = PeekHeader(*entry);
      if (header.has_value() && tiers_.Servable(*header)) {
        tiers_.counters().l1_hits.Add();
        entry->erase(0, kHeaderSize);
        return *std::move(entry);
      }
    }
    // One slow path per key per process; reads and loads fly separately, as
    // a read must not wait for a load it did not ask for.
    common_internal::SingleFlight& flights = loader != nullptr ? loads_ : reads_;
    return flights.Do(key,
                      absl::Hash<absl::string_view>{}(absl::string_view(key.data(), key.size())),
                      [&] { return Resolve(key, loader, options, load); });
  }

  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> GetMany(
      absl::Span<const std::string_view> keys, const BulkLoader* loader,
      const WriteOptions& options) {
    for (std::string_view key : keys) {
      if (absl::Status s = tiers_.CheckKey(key); !s.ok()) return s;
    }
    return bulk_reader_.GetMany(keys, loader, options);
  }

  absl::StatusOr<std::optional<Item>> GetItem(std::string_view key) {
    if (absl::Status s = tiers_.CheckKey(key); !s.ok()) return s;
    absl::StatusOr<Fetched> r = l2_->Fetch(key, FetchOptions{});
    if (!r.ok()) {
      tiers_.CountError(key, r.status());
      return r.status();
    }
    if (!r->found || r->IsLeaseStub()) {
      TieredCounters::Bump(tiers_.counters().l2_misses);
      return std::optional<Item>();
    }
    TieredCounters::Bump(tiers_.counters().l2_hits);
    return std::optional<Item>(std::move(*r).ToItem(tiers_.clock().Now()));
  }

  // --- Writes --------------------------------------------------------------

  absl::Status Set(std::string_view key, std::string_view value, const WriteOptions& options) {
    if (absl::Status s = tiers_.CheckWrite(key, value, options); !s.ok()) return s;
    return tiers_.WriteThrough(key, value, options);
  }

  absl::Status Delete(std::string_view key) {
    if (absl::Status s = tiers_.CheckKey(key); !s.ok()) return s;
    l1_->Delete(key);
    // Writes queued before the delete reach memcached first; the delete itself
    // goes straight to memcached, so its own answer is known. (Until it is
    // applied, a read here would fill L1 again from L2's old copy.)
    absl::Status status;
    if (l2_->replicates_async()) status = l2_->Flush(l2_->op_timeout());
    if (status.ok()) status = l2_->Delete(key, std::nullopt).status();
    if (status.ok() && l2_->has_fallback()) {
      // Or the warm-up would read the value back from the old pool.
      status = l2_->DeleteFallback(key).status();
    }
    if (!status.ok()) tiers_.CountError(key, status);
    // A read that fetched the old value before memcached applied the delete
    // may have filled L1 meanwhile.
    l1_->Delete(key);
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrFormat("delete of '%s' may not have reached memcached (other "
                                          "replicas may still read it): %s",
                                          KeyText(key), status.message()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StoreResult> CompareAndSwap(std::string_view key, std::string_view value,
                                             uint64_t cas, const WriteOptions& options) {
    if (absl::Status s = tiers_.CheckWrite(key, value, options); !s.ok()) return s;
    const int64_t asked_ns = tiers_.NowNs();
    absl::StatusOr<Stored> stored = l2_->Store(key, value, options, StoreMode::kSet, cas);
    if (!stored.ok()) {
      tiers_.CountError(key, stored.status());
      return stored.status();
    }
    switch (stored->result) {
      case StoreResult::kStored: {  // this replica's own write, at a known CAS
        const absl::Duration l2_ttl = options.ttl.value_or(l2_->default_ttl());
        (void)l1_->Set(
            key, EncodeCopy({stored->cas, asked_ns}, value),
            {std::min(options.ttl.value_or(l1_->options().default_ttl), l2_ttl), options.flags});
        return StoreResult::kStored;
      }
      case StoreResult::kExists:
      case StoreResult::kNotFound:
        l1_->Delete(key);  // known to be old now
        return stored->result;
      case StoreResult::kNotStored:
        break;
    }
    return absl::InternalError(
        absl::StrFormat("cas of '%s': memcached answered NOT_STORED to a plain set", KeyText(key)));
  }

  absl::StatusOr<uint64_t> AddToCounter(std::string_view key, uint64_t delta, bool increment) {
    if (absl::Status s = tiers_.CheckKey(key); !s.ok()) return s;
    absl::StatusOr<uint64_t> result = l2_->Arithmetic(key, delta, increment);
    // The L1 copy is old either way; the next read fetches L2's number.
    l1_->Delete(key);
    if (!result.ok() && !absl::IsNotFound(result.status()) &&
        !absl::IsFailedPrecondition(result.status())) {
      tiers_.CountError(key, result.status());
    }
    return result;
  }

  absl::Status Flush(absl::Duration timeout) { return l2_->Flush(timeout); }
  absl::Status SetServers(const std::vector<std::string>& servers) {
    return l2_->SetServers(servers);
  }

  const TieredOptions& options() const { return options_; }

  std::optional<std::string> GetL1Copy(std::string_view key) {
    if (!tiers_.CheckL1Key(key).ok()) return std::nullopt;
    std::optional<Copy> copy = DecodeCopy(l1_->GetItem(key));
    if (!copy.has_value()) return std::nullopt;
    return std::move(copy->value);
  }

  TieredStats Stats() const {
    TieredStats stats;
    stats.l1 = l1_->Stats();
    stats.mirror = l2_->mirror_stats();
    stats.l2_servers = l2_->server_states();
    stats.l2_latency = l2_->latencies();
    tiers_.counters().Fill(&stats);
    return stats;
  }

  // A TTL both tiers accept.
  absl::Status CheckTtl(const WriteOptions& options) const {
    if (absl::Status s = common_internal::CheckTtl(options.ttl); !s.ok()) return s;
    return l2_->CheckWrite("k", 0, options.ttl);
  }

 private:
  // The slow path of a read, one per key per process at a time.
  absl::StatusOr<std::string> Resolve(std::string_view key, const Loader* loader,
                                      const WriteOptions& options, const LoadOptions& load) {
    if (absl::Status s = tiers_.CheckKey(key); !s.ok()) return s;
    TieredCounters& counters = tiers_.counters();
    // A flight that just ended may have refreshed the copy.
    std::optional<Copy> copy = DecodeCopy(l1_->GetItem(key));
    if (copy.has_value() && tiers_.Servable(copy->header)) {
      counters.l1_hits.Add();
      return std::move(copy->value);
    }
    if (copy.has_value()) {
      // Stale. Inside an early-refresh window the lease request checks it
      // (and may win the refresh); otherwise a revalidation does.
      const bool refreshing = loader != nullptr && load.refresh_ahead > absl::ZeroDuration() &&
                              copy->expiry - tiers_.clock().Now() < load.refresh_ahead;
      // (Not from the old pool: a copy exists, so the key was in the new one.)
      if (refreshing) {
        return lease_loader_.Load(key, *loader, options, load, &*copy, /*warm_up=*/false);
      }
      std::optional<absl::StatusOr<std::string>> revalidated = revalidator_.Revalidate(key, *copy);
      if (revalidated.has_value()) return *std::move(revalidated);
      // Gone from L2 (deleted, expired or evicted there): a miss, but not one
      // the old pool may answer.
      if (loader == nullptr) return absl::NotFoundError("miss");
      return lease_loader_.Load(key, *loader, options, load, nullptr, /*warm_up=*/false);
    }
    if (loader != nullptr) {
      return lease_loader_.Load(key, *loader, options, load, nullptr, /*warm_up=*/true);
    }

    const int64_t asked_ns = tiers_.NowNs();
    absl::StatusOr<Fetched> r = l2_->Fetch(key, FetchOptions{});
    if (!r.ok()) {
      tiers_.CountError(key, r.status());
      return r.status();
    }
    if (r->found && !r->IsLeaseStub()) {
      TieredCounters::Bump(counters.l2_hits);
      tiers_.FillFrom(key, *r, asked_ns, std::nullopt, std::nullopt);
      return std::move(r->value);
    }
    TieredCounters::Bump(counters.l2_misses);
    if (std::optional<std::string> warm = warm_up_.FromOldPool(key, std::nullopt)) return *warm;
    return absl::NotFoundError("miss");
  }

  const TieredOptions options_;
  const std::unique_ptr<Cache> l1_;
  const std::unique_ptr<L2Tier> l2_;
  Tiers tiers_;
  Revalidator revalidator_;
  WarmUp warm_up_;
  LeaseLoader lease_loader_;
  BulkReader bulk_reader_;
  common_internal::SingleFlight reads_;
  common_internal::SingleFlight loads_;
};

namespace {

absl::Status ValidateOptions(const TieredOptions& options) {
  if (options.max_staleness < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat("max_staleness is %s; it must be >= 0",
                                                      absl::FormatDuration(options.max_staleness)));
  }
  if (options.lease_ttl < absl::Seconds(1) ||
      options.lease_ttl > absl::Seconds(mirror_internal::kMaxRelativeTtlSeconds)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("lease_ttl is %s; it must be 1s..30 days (memcached counts seconds)",
                        absl::FormatDuration(options.lease_ttl)));
  }
  if (options.lease_wait < absl::ZeroDuration() || options.lease_wait == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "lease_wait is %s; it must be finite and >= 0", absl::FormatDuration(options.lease_wait)));
  }
  return absl::OkStatus();
}

// L1 stores each value behind its header: room for it, and a removal
// listener that sees the value alone.
absl::StatusOr<std::unique_ptr<Cache>> MakeL1(const CacheOptions& options) {
  CacheOptions l1_options = options;
  l1_options.max_value_size += kHeaderSize;
  if (options.on_removal) {
    l1_options.on_removal = [listener = options.on_removal](const Removal& removal) {
      Removal user = removal;
      user.value = removal.value.substr(std::min(kHeaderSize, removal.value.size()));
      listener(user);
    };
  }
  return Cache::Create(std::move(l1_options));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TieredCache>> TieredCache::Create(TieredOptions options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  mirror_internal::MemcachedTierOptions l2_options;
  l2_options.pool = options.l2;
  l2_options.fallback_servers = options.fallback_servers;
  l2_options.mirror = options.mirror;
  // Replication failures are L2 failures too.
  if (options.on_l2_error) {
    l2_options.mirror.on_error = [tiered = options.on_l2_error, own = options.mirror.on_error](
                                     std::string_view key, const absl::Status& why) {
      tiered(key, why);
      if (own) own(key, why);
    };
  }
  absl::StatusOr<std::unique_ptr<L2Tier>> l2 = mirror_internal::MakeMemcachedTier(l2_options);
  if (!l2.ok()) return l2.status();
  return mirror_internal::CreateTieredCache(std::move(options), *std::move(l2));
}

absl::StatusOr<std::unique_ptr<TieredCache>> mirror_internal::CreateTieredCache(
    TieredOptions options, std::unique_ptr<L2Tier> l2) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Cache>> l1 = MakeL1(options.l1);
  if (!l1.ok()) return l1.status();
  Clock& clock = options.l1.clock != nullptr ? *options.l1.clock : *Clock::Real();
  return std::unique_ptr<TieredCache>(new TieredCache(std::make_unique<TieredCache::Impl>(
      std::move(options), *std::move(l1), std::move(l2), clock)));
}

TieredCache::TieredCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TieredCache::~TieredCache() = default;

const TieredOptions& TieredCache::options() const { return impl_->options(); }

std::optional<std::string> TieredCache::GetL1Copy(std::string_view key) {
  return impl_->GetL1Copy(key);
}

std::optional<std::string> TieredCache::Get(std::string_view key) {
  absl::StatusOr<std::string> value = impl_->Lookup(key, nullptr, {}, {});
  if (!value.ok()) return std::nullopt;
  return *std::move(value);
}

absl::StatusOr<std::string> TieredCache::GetOrLoad(std::string_view key, Loader loader,
                                                   WriteOptions options, LoadOptions load) {
  if (absl::Status s = impl_->CheckTtl(options); !s.ok()) return s;
  if (load.refresh_ahead < absl::ZeroDuration() ||
      load.refresh_ahead > absl::Seconds(mirror_internal::kMaxRelativeTtlSeconds)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("refresh_ahead is %s; it must be 0 (off) .. 30 days",
                        absl::FormatDuration(load.refresh_ahead)));
  }
  return impl_->Lookup(key, &loader, options, load);
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> TieredCache::GetMany(
    absl::Span<const std::string_view> keys) {
  return impl_->GetMany(keys, nullptr, {});
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> TieredCache::GetOrLoadMany(
    absl::Span<const std::string_view> keys, BulkLoader loader, WriteOptions options) {
  if (absl::Status s = impl_->CheckTtl(options); !s.ok()) return s;
  return impl_->GetMany(keys, &loader, options);
}

absl::Status TieredCache::Set(std::string_view key, std::string_view value, WriteOptions options) {
  return impl_->Set(key, value, options);
}

absl::Status TieredCache::Delete(std::string_view key) { return impl_->Delete(key); }

absl::StatusOr<std::optional<Item>> TieredCache::GetItem(std::string_view key) {
  return impl_->GetItem(key);
}

absl::StatusOr<StoreResult> TieredCache::CompareAndSwap(std::string_view key,
                                                        std::string_view value, uint64_t cas,
                                                        WriteOptions options) {
  return impl_->CompareAndSwap(key, value, cas, options);
}

absl::StatusOr<uint64_t> TieredCache::Increment(std::string_view key, uint64_t delta) {
  return impl_->AddToCounter(key, delta, /*increment=*/true);
}

absl::StatusOr<uint64_t> TieredCache::Decrement(std::string_view key, uint64_t delta) {
  return impl_->AddToCounter(key, delta, /*increment=*/false);
}

absl::Status TieredCache::Flush(absl::Duration timeout) { return impl_->Flush(timeout); }

absl::Status TieredCache::SetServers(const std::vector<std::string>& servers) {
  return impl_->SetServers(servers);
}

TieredStats TieredCache::Stats() const { return impl_->Stats(); }

}  // namespace tiercache
