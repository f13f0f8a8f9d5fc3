// TieredCache: L1 + the mirror + leases. The contract is in
// tiercache/tiered_cache.h; docs/tiered.md explains the design.
//
// Every L1 entry a TieredCache writes is `Header + value`:
//
//   version     L2's CAS of the item this copy equals; or kPending | n: this
//               replica wrote the copy as the mirror's n-th write, which may
//               not have reached memcached yet; or 0: L2's CAS is unknown.
//   checked_ns  when (L1 clock) the copy was last known to equal L2's item.
//
// A copy is served while now - checked_ns < max_staleness, and while its own
// write is still queued (there is nothing newer in L2 to check against yet).
// Otherwise it is revalidated: by CAS alone (`mg k c`) when the version is a
// CAS, by value when it is unknown. The header lives inside the L1 entry, so
// it is charged, evicted and expired with the value, and written atomically
// with it.

#include "tiercache/tiered_cache.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <thread>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "client_internal.h"
#include "protocol/meta_protocol.h"
#include "single_flight.h"

namespace tiercache {

using Code = mirror_internal::Response::Code;
using mirror_internal::GetRequest;
using mirror_internal::SetRequest;

namespace {

constexpr size_t kHeaderSize = 16;
constexpr uint64_t kPending = uint64_t{1} << 63;

std::string WithHeader(uint64_t version, int64_t checked_ns, std::string_view value) {
  std::string out(kHeaderSize + value.size(), '\0');
  std::memcpy(out.data(), &version, 8);
  std::memcpy(out.data() + 8, &checked_ns, 8);
  std::memcpy(out.data() + kHeaderSize, value.data(), value.size());
  return out;
}

// An L1 entry, decoded.
struct Copy {
  uint64_t version = 0;
  int64_t checked_ns = 0;
  std::string value;
  uint32_t flags = 0;
  uint64_t l1_cas = 0;
  absl::Time expiry;
};

std::optional<Copy> Decode(std::optional<Item> item) {
  if (!item.has_value() || item->value.size() < kHeaderSize) return std::nullopt;
  Copy copy;
  std::memcpy(&copy.version, item->value.data(), 8);
  std::memcpy(&copy.checked_ns, item->value.data() + 8, 8);
  copy.value = std::move(item->value);
  copy.value.erase(0, kHeaderSize);
  copy.flags = item->flags;
  copy.l1_cas = item->cas;
  copy.expiry = item->expiry;
  return copy;
}

// L2's remaining TTL from a response's `t` (-1: none).
absl::Duration Remaining(const Response& r) {
  return !r.ttl.has_value() || *r.ttl < 0 ? absl::InfiniteDuration() : absl::Seconds(*r.ttl);
}

// A lease stub: the 0-byte item memcached creates for `mg ... N` on a miss,
// which answers W to its first reader and Z to the others until a value is
// stored over it. (A real empty value inside an early-refresh window looks
// the same; treating it as a stub only makes its readers wait for the
// refresh.)
bool IsStub(const Response& r) { return r.value.empty() && (r.won || r.lost); }

std::string KeyText(std::string_view key) { return absl::CEscape(std::string(key)); }

// A counter bumped by every hit: one shared atomic would bounce its cache
// line between the cores on every read; each thread adds to its own cell.
class Counter {
 public:
  void Add() {
    thread_local const size_t cell = next_cell_.fetch_add(1, std::memory_order_relaxed);
    cells_[cell % cells_.size()].n.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t Sum() const {
    uint64_t sum = 0;
    for (const Cell& c : cells_) sum += c.n.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  struct alignas(64) Cell {
    std::atomic<uint64_t> n{0};
  };
  std::array<Cell, 16> cells_;
  static inline std::atomic<size_t> next_cell_{0};
};

}  // namespace

class TieredCache::Impl {
 public:
  Impl(const TieredOptions& options, Cache* l1, MemcachedClient* l2,
       std::unique_ptr<MemcachedClient> fallback, std::unique_ptr<Mirror> mirror)
      : options_(options),
        l1_(*l1),
        l2_(*l2),
        fallback_(std::move(fallback)),
        mirror_(std::move(mirror)),
        clock_(options.l1.clock != nullptr ? options.l1.clock : Clock::Real()),
        staleness_ns_(options.max_staleness == absl::InfiniteDuration()
                          ? std::numeric_limits<int64_t>::max()
                          : absl::ToInt64Nanoseconds(options.max_staleness)) {}

  // --- Reads ---------------------------------------------------------------

  // Get (loader == nullptr) and GetOrLoad. NotFound is a miss.
  absl::StatusOr<std::string> Lookup(std::string_view key, const Loader* loader,
                                     const WriteOptions& options, const LoadOptions& load) {
    // The L1 checks only: a key L1 holds has passed the L2 checks when it was
    // written, and building its wire form would cost every hit an allocation.
    if (absl::Status s = CheckL1Key(key); !s.ok()) return s;
    // The hit path: the value and its header only (no flags, CAS or expiry
    // to build), and a per-thread counter.
    std::optional<std::string> entry = l1_.Get(key);
    if (entry.has_value() && entry->size() >= kHeaderSize) {
      Copy header;
      std::memcpy(&header.version, entry->data(), 8);
      std::memcpy(&header.checked_ns, entry->data() + 8, 8);
      if (Servable(header)) {
        l1_hits_.Add();
        entry->erase(0, kHeaderSize);
        return *std::move(entry);
      }
    }
    // One slow path per key per process; reads and loads fly separately, as
    // a read must not wait for a load it did not ask for.
    engine_internal::SingleFlight& flights = loader != nullptr ? loads_ : reads_;
    return flights.Do(key,
                      absl::Hash<absl::string_view>{}(absl::string_view(key.data(), key.size())),
                      [&] { return Resolve(key, loader, options, load); });
  }

  absl::StatusOr<std::optional<Item>> GetItem(std::string_view key) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
    absl::StatusOr<Response> r = FetchL2(key, GetRequest{});
    if (!r.ok()) return r.status();
    if (r->code == Code::kMiss || IsStub(*r)) {
      l2_misses_.fetch_add(1, std::memory_order_relaxed);
      return std::optional<Item>();
    }
    l2_hits_.fetch_add(1, std::memory_order_relaxed);
    Item item;
    item.value = std::move(r->value);
    item.flags = r->client_flags.value_or(0);
    item.cas = r->cas.value_or(0);
    const absl::Duration remaining = Remaining(*r);
    item.expiry =
        remaining == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + remaining;
    return std::optional<Item>(std::move(item));
  }

  // --- Writes --------------------------------------------------------------

  absl::Status Set(std::string_view key, std::string_view value, const WriteOptions& options) {
    if (absl::Status s = CheckWrite(key, value, options); !s.ok()) return s;
    const absl::Duration l2_ttl = options.ttl.value_or(l2_.options().default_ttl);
    absl::Status replicated = mirror_->ReplicateValue(key, value, {l2_ttl, options.flags});
    // Replicated first, so that the copy can name its place in the queue.
    const uint64_t version = replicated.ok() ? kPending | mirror_->accepted_writes() : 0;
    (void)l1_.Set(
        key, WithHeader(version, NowNs(), value),
        {std::min(options.ttl.value_or(l1_.options().default_ttl), l2_ttl), options.flags});
    if (!replicated.ok()) {
      return absl::Status(replicated.code(),
                          absl::StrFormat("'%s' is in this replica's L1 but not replicated to "
                                          "memcached: %s",
                                          KeyText(key), replicated.message()));
    }
    return absl::OkStatus();
  }

  absl::Status Delete(std::string_view key) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
    l1_.Delete(key);
    // Writes queued before the delete reach memcached first; the delete itself
    // goes straight to memcached, so its own answer is known. (Until it is
    // applied, a read here would fill L1 again from L2's old copy.)
    absl::Status status;
    if (options_.mirror_mode == MirrorMode::kAsync) {
      status = mirror_->Flush(l2_.options().op_timeout);
    }
    if (status.ok()) status = l2_.Delete(key).status();
    if (status.ok() && fallback_ != nullptr) {
      // Or the warm-up would read the value back from the old pool.
      status = fallback_->Delete(key).status();
    }
    if (!status.ok()) CountError(key, status);
    // A read that fetched the old value before memcached applied the delete
    // may have filled L1 meanwhile.
    l1_.Delete(key);
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
    if (absl::Status s = CheckWrite(key, value, options); !s.ok()) return s;
    const int64_t asked_ns = NowNs();
    absl::StatusOr<Response> r = StoreL2(key, value, options, cas);
    if (!r.ok()) return r.status();
    switch (r->code) {
      case Code::kHit: {  // this replica's own write
        const absl::Duration l2_ttl = options.ttl.value_or(l2_.options().default_ttl);
        (void)l1_.Set(
            key, WithHeader(r->cas.value_or(0), asked_ns, value),
            {std::min(options.ttl.value_or(l1_.options().default_ttl), l2_ttl), options.flags});
        return StoreResult::kStored;
      }
      case Code::kExists:
      case Code::kNotFound:
        l1_.Delete(key);  // known to be old now
        return r->code == Code::kExists ? StoreResult::kExists : StoreResult::kNotFound;
      default:
        return UnexpectedResponse(*r, "cas");
    }
  }

  absl::StatusOr<uint64_t> AddToCounter(std::string_view key, uint64_t delta, bool increment) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
    absl::StatusOr<uint64_t> result =
        increment ? l2_.Increment(key, delta) : l2_.Decrement(key, delta);
    // The L1 copy is old either way; the next read fetches L2's number.
    l1_.Delete(key);
    if (!result.ok() && !absl::IsNotFound(result.status()) &&
        !absl::IsFailedPrecondition(result.status())) {
      CountError(key, result.status());
    }
    return result;
  }

  absl::Status Flush(absl::Duration deadline) { return mirror_->Flush(deadline); }

  TieredStats Stats() const {
    TieredStats stats;
    stats.l1 = l1_.Stats();
    stats.mirror = mirror_->Stats();
    stats.l1_hits = l1_hits_.Sum();
    stats.l2_hits = l2_hits_.load(std::memory_order_relaxed);
    stats.l2_misses = l2_misses_.load(std::memory_order_relaxed);
    stats.l2_errors = l2_errors_.load(std::memory_order_relaxed);
    stats.fallback_hits = fallback_hits_.load(std::memory_order_relaxed);
    stats.revalidations = revalidations_.load(std::memory_order_relaxed);
    stats.revalidated_unchanged = revalidated_unchanged_.load(std::memory_order_relaxed);
    stats.revalidated_changed = revalidated_changed_.load(std::memory_order_relaxed);
    stats.revalidated_gone = revalidated_gone_.load(std::memory_order_relaxed);
    stats.loads = loads_count_.load(std::memory_order_relaxed);
    stats.load_failures = load_failures_.load(std::memory_order_relaxed);
    stats.lease_wins = lease_wins_.load(std::memory_order_relaxed);
    stats.lease_waits = lease_waits_.load(std::memory_order_relaxed);
    stats.lease_timeouts = lease_timeouts_.load(std::memory_order_relaxed);
    stats.refreshes = refreshes_.load(std::memory_order_relaxed);
    return stats;
  }

 private:
  int64_t NowNs() const { return absl::ToUnixNanos(clock_->Now()); }

  absl::Status CheckL1Key(std::string_view key) const {
    if (key.empty()) return absl::InvalidArgumentError("key is empty");
    if (key.size() > options_.l1.max_key_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "key is %d bytes; the limit is %d (max_key_size)", key.size(), options_.l1.max_key_size));
    }
    return absl::OkStatus();
  }

  // Both tiers' limits: L1's, and the wire form's (prefix + key, base64 when
  // needed) 250 bytes.
  absl::Status CheckKey(std::string_view key) const {
    if (absl::Status s = CheckL1Key(key); !s.ok()) return s;
    return l2_.impl().Key(key).status();
  }

  absl::Status CheckWrite(std::string_view key, std::string_view value,
                          const WriteOptions& options) const {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
    if (value.size() > options_.l1.max_value_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("value is %d bytes; the limit is %d (max_value_size)", value.size(),
                          options_.l1.max_value_size));
    }
    if (absl::Status s = CheckTtl(options); !s.ok()) return s;
    absl::StatusOr<WireKey> wire = l2_.impl().Key(key);
    if (!wire.ok()) return wire.status();
    return l2_.impl().CheckValue(*wire, value.size());
  }

 public:
  // A TTL both tiers accept: positive, and one memcached can store.
  absl::Status CheckTtl(const WriteOptions& options) const {
    if (options.ttl.has_value() && *options.ttl <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("ttl is %s; it must be positive (InfiniteDuration: never expire)",
                          absl::FormatDuration(*options.ttl)));
    }
    return mirror_internal::EncodeTtl(options.ttl.value_or(l2_.options().default_ttl), absl::Now())
        .status();
  }

 private:
  // A copy may be served without asking L2: checked recently enough, or its
  // own write is still on its way to memcached.
  bool Servable(const Copy& copy) const {
    return NowNs() - copy.checked_ns < staleness_ns_ || Pending(copy);
  }
  bool Pending(const Copy& copy) const {
    return (copy.version & kPending) != 0 &&
           mirror_->finished_writes() < (copy.version & ~kPending);
  }

  // Stores `value` in L1 as a copy of L2's item `version`, checked at
  // `checked_ns`, for the shorter of L2's remaining TTL and the write's (or
  // L1's default) TTL: an L1 copy never outlives its L2 item. What L2 said
  // never overwrites a write this replica made meanwhile: with `replacing`
  // (an L1 CAS; never 0), only that L1 version (the copy that was checked) is
  // replaced; with kAddOnly, the copy is added only if L1 has none.
  static constexpr uint64_t kAddOnly = 0;
  void FillL1(std::string_view key, std::string_view value, uint32_t flags, uint64_t version,
              int64_t checked_ns, absl::Duration l2_remaining,
              std::optional<absl::Duration> write_ttl, uint64_t replacing) {
    const absl::Duration ttl =
        std::min(l2_remaining, write_ttl.value_or(l1_.options().default_ttl));
    if (ttl <= absl::ZeroDuration()) return;
    // A value L1 cannot hold is still the answer; L1 just does not keep it.
    const std::string entry = WithHeader(version, checked_ns, value);
    if (replacing != kAddOnly) {
      (void)l1_.CompareAndSwap(key, entry, replacing, {ttl, flags});
    } else {
      (void)l1_.Add(key, entry, {ttl, flags});
    }
  }

  void CountError(std::string_view key, const absl::Status& why) {
    l2_errors_.fetch_add(1, std::memory_order_relaxed);
    if (options_.on_l2_error) options_.on_l2_error(key, why);
  }

  absl::StatusOr<Response> FetchL2(std::string_view key, GetRequest request) {
    return Fetch(l2_, key, request);
  }

  // mg on `client` (the primary or the old pool), with every return flag
  // (W, Z, X) that MemcachedClient::Get does not expose. Errors are counted.
  absl::StatusOr<Response> Fetch(MemcachedClient& client, std::string_view key,
                                 GetRequest request) {
    absl::StatusOr<Response> r =
        client.impl().Exchange(key, [&](const WireKey& wire, RequestBatch* batch) {
          batch->Get(wire, request);
          return absl::OkStatus();
        });
    if (r.ok() && r->code != Code::kValue && r->code != Code::kHit && r->code != Code::kMiss) {
      r = UnexpectedResponse(*r, "get");
    }
    if (!r.ok()) CountError(key, r.status());
    return r;
  }

  // ms with the given CAS (nullopt: unconditional) and mode; returns the
  // response (its `cas` is the item's new CAS).
  absl::StatusOr<Response> StoreL2(
      std::string_view key, std::string_view value, const WriteOptions& options,
      std::optional<uint64_t> cas,
      mirror_internal::StoreMode mode = mirror_internal::StoreMode::kSet) {
    absl::StatusOr<Response> r =
        l2_.impl().Exchange(key, [&](const WireKey& wire, RequestBatch* batch) {
          absl::StatusOr<int64_t> ttl = mirror_internal::EncodeTtl(
              options.ttl.value_or(l2_.options().default_ttl), absl::Now());
          if (!ttl.ok()) return ttl.status();
          SetRequest set;
          set.value = value;
          set.client_flags = options.flags;
          set.ttl = *ttl;
          set.mode = mode;
          set.compare_cas = cas;
          batch->Set(wire, set);
          return absl::OkStatus();
        });
    if (r.ok() && r->code != Code::kHit && r->code != Code::kNotStored &&
        r->code != Code::kExists && r->code != Code::kNotFound) {
      r = UnexpectedResponse(*r, "store");
    }
    if (!r.ok()) CountError(key, r.status());
    return r;
  }

  // The slow path of a read, one per key per process at a time.
  absl::StatusOr<std::string> Resolve(std::string_view key, const Loader* loader,
                                      const WriteOptions& options, const LoadOptions& load) {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
    // A flight that just ended may have refreshed the copy.
    std::optional<Copy> copy = Decode(l1_.GetItem(key));
    if (copy.has_value() && Servable(*copy)) {
      l1_hits_.Add();
      return std::move(copy->value);
    }
    if (copy.has_value()) {
      // Stale. Inside an early-refresh window the lease request below checks
      // it (and may win the refresh); otherwise a revalidation does.
      const bool refreshing = loader != nullptr && load.refresh_ahead > absl::ZeroDuration() &&
                              copy->expiry - clock_->Now() < load.refresh_ahead;
      // (Not from the old pool: a copy exists, so the key was in the new one.)
      if (refreshing) {
        return LoadThroughLease(key, *loader, options, load, &*copy, /*warm_up=*/false);
      }
      std::optional<absl::StatusOr<std::string>> revalidated = Revalidate(key, *copy);
      if (revalidated.has_value()) return *std::move(revalidated);
      // Gone from L2 (deleted, expired or evicted there): a miss, but not one
      // the old pool may answer.
      if (loader == nullptr) return absl::NotFoundError("miss");
      return LoadThroughLease(key, *loader, options, load, nullptr, /*warm_up=*/false);
    }
    if (loader != nullptr) return LoadThroughLease(key, *loader, options, load, nullptr);

    const int64_t asked_ns = NowNs();
    absl::StatusOr<Response> r = FetchL2(key, GetRequest{});
    if (!r.ok()) return r.status();
    if (r->code == Code::kValue && !IsStub(*r)) {
      l2_hits_.fetch_add(1, std::memory_order_relaxed);
      FillL1(key, r->value, r->client_flags.value_or(0), r->cas.value_or(0), asked_ns,
             Remaining(*r), std::nullopt, kAddOnly);
      return std::move(r->value);
    }
    l2_misses_.fetch_add(1, std::memory_order_relaxed);
    if (std::optional<std::string> warm = WarmFromFallback(key, std::nullopt)) return *warm;
    return absl::NotFoundError("miss");
  }

  // Checks a stale copy against L2. The answer to serve, or nullopt when the
  // key is gone from L2 (the copy is dropped).
  std::optional<absl::StatusOr<std::string>> Revalidate(std::string_view key, Copy& copy) {
    revalidations_.fetch_add(1, std::memory_order_relaxed);
    const int64_t asked_ns = NowNs();
    const bool known = copy.version != 0 && (copy.version & kPending) == 0;
    if (known) {
      GetRequest cas_only;
      cas_only.value = false;
      absl::StatusOr<Response> r = FetchL2(key, cas_only);
      if (!r.ok()) return ServeStale(copy);
      if (r->code == Code::kHit && r->cas == copy.version) {
        revalidated_unchanged_.fetch_add(1, std::memory_order_relaxed);
        l1_hits_.Add();
        Restamp(key, copy, asked_ns);
        return std::move(copy.value);
      }
      if (r->code == Code::kMiss) return Gone(key, copy);
    }
    absl::StatusOr<Response> r = FetchL2(key, GetRequest{});
    if (!r.ok()) return ServeStale(copy);
    if (r->code != Code::kValue || IsStub(*r)) return Gone(key, copy);
    const uint32_t flags = r->client_flags.value_or(0);
    if (!known && r->value == copy.value && flags == copy.flags) {
      revalidated_unchanged_.fetch_add(1, std::memory_order_relaxed);
      l1_hits_.Add();
    } else {
      revalidated_changed_.fetch_add(1, std::memory_order_relaxed);
      l2_hits_.fetch_add(1, std::memory_order_relaxed);
    }
    FillL1(key, r->value, flags, r->cas.value_or(0), asked_ns, Remaining(*r), std::nullopt,
           copy.l1_cas);
    return std::move(r->value);
  }

  // L2 cannot answer: L1 keeps serving what it has.
  absl::StatusOr<std::string> ServeStale(Copy& copy) {
    l1_hits_.Add();
    return std::move(copy.value);
  }

  // Drops the copy that was checked (not a newer one this replica wrote
  // meanwhile).
  std::nullopt_t Gone(std::string_view key, const Copy& copy) {
    revalidated_gone_.fetch_add(1, std::memory_order_relaxed);
    l1_.Delete(key, copy.l1_cas);
    return std::nullopt;
  }

  // Marks an unchanged copy as checked at `checked_ns`, unless it was
  // rewritten meanwhile (its L1 CAS moved).
  void Restamp(std::string_view key, const Copy& copy, int64_t checked_ns) {
    const absl::Duration left = copy.expiry == absl::InfiniteFuture() ? absl::InfiniteDuration()
                                                                      : copy.expiry - clock_->Now();
    if (left <= absl::ZeroDuration()) return;
    (void)l1_.CompareAndSwap(key, WithHeader(copy.version, checked_ns, copy.value), copy.l1_cas,
                             {left, copy.flags});
  }

  // The old pool: on a hit, fill L1 and add the item to the primary (never
  // over newer data). With `lease_cas`, this replica holds the lease stub and
  // replaces it instead. nullopt: the old pool does not have it (a lease stub
  // of clients still loading there counts as not having it).
  std::optional<std::string> WarmFromFallback(std::string_view key,
                                              std::optional<uint64_t> lease_cas) {
    if (fallback_ == nullptr) return std::nullopt;
    absl::StatusOr<Response> old = Fetch(*fallback_, key, GetRequest{});
    if (!old.ok() || old->code != Code::kValue || IsStub(*old)) return std::nullopt;
    const absl::Duration remaining = Remaining(*old);
    fallback_hits_.fetch_add(1, std::memory_order_relaxed);
    const int64_t asked_ns = NowNs();
    const uint32_t flags = old->client_flags.value_or(0);
    const WriteOptions write{remaining, flags};
    absl::StatusOr<Response> stored =
        StoreL2(key, old->value, write, lease_cas,
                lease_cas.has_value() ? mirror_internal::StoreMode::kSet
                                      : mirror_internal::StoreMode::kAdd);
    if (stored.ok() && stored->code == Code::kHit) {
      FillL1(key, old->value, flags, stored->cas.value_or(0), asked_ns, remaining, std::nullopt,
             kAddOnly);
    }
    // Otherwise the primary got newer data meanwhile (or is down): this
    // answer stays right for now, and L1 does not keep it.
    return std::move(old->value);
  }

  absl::StatusOr<std::string> CallLoader(std::string_view key, const Loader& loader) {
    loads_count_.fetch_add(1, std::memory_order_relaxed);
    absl::StatusOr<std::string> loaded = loader(key);
    if (loaded.ok()) {
      // Too large for either tier: an error, as Cache::GetOrLoad makes it.
      absl::Status fits = loaded->size() > options_.l1.max_value_size
                              ? absl::InvalidArgumentError(absl::StrFormat(
                                    "value is %d bytes; the limit is %d (max_value_size)",
                                    loaded->size(), options_.l1.max_value_size))
                              : l2_.impl().CheckValue(*l2_.impl().Key(key), loaded->size());
      if (!fits.ok()) {
        loaded = absl::Status(fits.code(),
                              absl::StrFormat("the loader's value for '%s' cannot be cached: %s",
                                              KeyText(key), fits.message()));
      }
    }
    if (!loaded.ok()) load_failures_.fetch_add(1, std::memory_order_relaxed);
    return loaded;
  }

  // Stores a loaded value over the item (or lease stub) whose CAS is `cas`:
  // if anyone wrote the key since, their value stays and L1 keeps neither.
  // `replacing`: the L1 copy the value replaces (an early refresh).
  void StoreLoaded(std::string_view key, std::string_view value, const WriteOptions& options,
                   uint64_t cas, uint64_t replacing) {
    const int64_t asked_ns = NowNs();
    absl::StatusOr<Response> stored = StoreL2(key, value, options, cas);
    if (stored.ok() && stored->code == Code::kHit) {
      FillL1(key, value, options.flags, stored->cas.value_or(0), asked_ns,
             options.ttl.value_or(l2_.options().default_ttl), options.ttl, replacing);
    }
  }

  // L2 with a lease, then the loader. See the top of tiered_cache.h.
  // `current`: the stale L1 copy inside an early-refresh window, served if L2
  // cannot answer. `warm_up`: the old pool may answer a miss.
  absl::StatusOr<std::string> LoadThroughLease(std::string_view key, const Loader& loader,
                                               const WriteOptions& options, const LoadOptions& load,
                                               Copy* current, bool warm_up = true) {
    GetRequest request;
    request.vivify_ttl = absl::ToInt64Seconds(options_.lease_ttl);
    if (load.refresh_ahead > absl::ZeroDuration()) {
      request.recache_ttl = absl::ToInt64Seconds(absl::Ceil(load.refresh_ahead, absl::Seconds(1)));
    }
    const uint64_t replacing = current != nullptr ? current->l1_cas : kAddOnly;
    const absl::Time give_up = absl::Now() + options_.lease_wait;
    absl::Duration poll = absl::Milliseconds(1);
    bool waited = false;
    while (true) {
      const int64_t asked_ns = NowNs();
      absl::StatusOr<Response> r = FetchL2(key, request);
      if (!r.ok() && current != nullptr) return ServeStale(*current);
      if (!r.ok() || r->code != Code::kValue) {
        // L2 cannot help (down, or no lease given): load, and let the mirror
        // try to share the value.
        if (r.ok()) l2_misses_.fetch_add(1, std::memory_order_relaxed);
        absl::StatusOr<std::string> loaded = CallLoader(key, loader);
        if (loaded.ok()) (void)Set(key, *loaded, options);
        return loaded;
      }
      const uint64_t cas = r->cas.value_or(0);
      if (!IsStub(*r)) {
        if (r->won) {  // early refresh: this replica reloads, others serve
          refreshes_.fetch_add(1, std::memory_order_relaxed);
          absl::StatusOr<std::string> loaded = CallLoader(key, loader);
          if (loaded.ok()) {
            StoreLoaded(key, *loaded, options, cas, replacing);
            return loaded;
          }
          // Serve the current value; the item expires as it would have.
        }
        l2_hits_.fetch_add(1, std::memory_order_relaxed);
        FillL1(key, r->value, r->client_flags.value_or(0), cas, asked_ns, Remaining(*r),
               options.ttl, replacing);
        return std::move(r->value);
      }
      if (r->won) {  // this replica holds the lease
        l2_misses_.fetch_add(1, std::memory_order_relaxed);
        lease_wins_.fetch_add(1, std::memory_order_relaxed);
        if (warm_up) {
          if (std::optional<std::string> warm = WarmFromFallback(key, cas)) return *warm;
        }
        absl::StatusOr<std::string> loaded = CallLoader(key, loader);
        if (loaded.ok()) {
          StoreLoaded(key, *loaded, options, cas, replacing);
        } else {
          ReleaseLease(key, cas);
        }
        return loaded;
      }
      // Another replica holds the lease and is loading.
      if (!waited) {
        waited = true;
        lease_waits_.fetch_add(1, std::memory_order_relaxed);
      }
      const absl::Time now = absl::Now();
      if (now >= give_up) {
        lease_timeouts_.fetch_add(1, std::memory_order_relaxed);
        absl::StatusOr<std::string> loaded = CallLoader(key, loader);
        // Replaces the stub only: the lease holder may have stored by now.
        if (loaded.ok()) StoreLoaded(key, *loaded, options, cas, replacing);
        return loaded;
      }
      absl::SleepFor(std::min(poll, give_up - now));
      poll = std::min(poll * 2, absl::Milliseconds(50));
    }
  }

  // The loader failed: delete the stub, so that waiting replicas need not
  // wait out the lease (the next one to ask wins a new lease and loads).
  void ReleaseLease(std::string_view key, uint64_t cas) {
    absl::StatusOr<Response> r =
        l2_.impl().Exchange(key, [&](const WireKey& wire, RequestBatch* batch) {
          mirror_internal::DeleteRequest del;
          del.compare_cas = cas;
          batch->Delete(wire, del);
          return absl::OkStatus();
        });
    if (!r.ok()) CountError(key, r.status());
  }

  const TieredOptions options_;
  Cache& l1_;
  MemcachedClient& l2_;
  const std::unique_ptr<MemcachedClient> fallback_;
  const std::unique_ptr<Mirror> mirror_;
  Clock* const clock_;
  const int64_t staleness_ns_;
  engine_internal::SingleFlight reads_;
  engine_internal::SingleFlight loads_;

  Counter l1_hits_;  // bumped on every L1 hit: per-thread cells
  std::atomic<uint64_t> l2_hits_{0};
  std::atomic<uint64_t> l2_misses_{0};
  std::atomic<uint64_t> l2_errors_{0};
  std::atomic<uint64_t> fallback_hits_{0};
  std::atomic<uint64_t> revalidations_{0};
  std::atomic<uint64_t> revalidated_unchanged_{0};
  std::atomic<uint64_t> revalidated_changed_{0};
  std::atomic<uint64_t> revalidated_gone_{0};
  std::atomic<uint64_t> loads_count_{0};
  std::atomic<uint64_t> load_failures_{0};
  std::atomic<uint64_t> lease_wins_{0};
  std::atomic<uint64_t> lease_waits_{0};
  std::atomic<uint64_t> lease_timeouts_{0};
  std::atomic<uint64_t> refreshes_{0};
};

absl::StatusOr<std::unique_ptr<TieredCache>> TieredCache::Create(TieredOptions options) {
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
  if (options.max_queued_writes == 0 || options.max_queued_bytes == 0) {
    return absl::InvalidArgumentError("max_queued_writes and max_queued_bytes must be >= 1");
  }
  // L1 stores each value behind its header: room for it, and a removal
  // listener that sees the value alone.
  CacheOptions l1_options = options.l1;
  l1_options.max_value_size += kHeaderSize;
  if (options.l1.on_removal) {
    l1_options.on_removal = [listener = options.l1.on_removal](const Removal& removal) {
      Removal user = removal;
      user.value = removal.value.substr(std::min(kHeaderSize, removal.value.size()));
      listener(user);
    };
  }
  absl::StatusOr<std::unique_ptr<Cache>> l1 = Cache::Create(std::move(l1_options));
  if (!l1.ok()) return l1.status();
  absl::StatusOr<std::unique_ptr<MemcachedClient>> l2 = MemcachedClient::Create(options.l2);
  if (!l2.ok()) return l2.status();
  std::unique_ptr<MemcachedClient> fallback;
  if (!options.fallback_servers.empty()) {
    MemcachedOptions old_pool = options.l2;
    old_pool.servers = options.fallback_servers;
    absl::StatusOr<std::unique_ptr<MemcachedClient>> client = MemcachedClient::Create(old_pool);
    if (!client.ok()) return client.status();
    fallback = *std::move(client);
  }
  MirrorOptions mirror_options;
  mirror_options.mode = options.mirror_mode;
  mirror_options.max_queued_writes = options.max_queued_writes;
  mirror_options.max_queued_bytes = options.max_queued_bytes;
  mirror_options.on_error = options.on_l2_error;
  absl::StatusOr<std::unique_ptr<Mirror>> mirror =
      Mirror::Create(l2->get(), std::move(mirror_options));
  if (!mirror.ok()) return mirror.status();
  auto impl = std::make_unique<Impl>(options, l1->get(), l2->get(), std::move(fallback),
                                     *std::move(mirror));
  return std::unique_ptr<TieredCache>(
      new TieredCache(*std::move(l1), *std::move(l2), std::move(impl)));
}

TieredCache::TieredCache(std::unique_ptr<Cache> l1, std::unique_ptr<MemcachedClient> l2,
                         std::unique_ptr<Impl> impl)
    : l1_(std::move(l1)), l2_(std::move(l2)), impl_(std::move(impl)) {}

TieredCache::~TieredCache() = default;

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

absl::Status TieredCache::Flush(absl::Duration deadline) { return impl_->Flush(deadline); }

TieredStats TieredCache::Stats() const { return impl_->Stats(); }

}  // namespace tiercache
