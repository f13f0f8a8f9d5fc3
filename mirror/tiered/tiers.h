// What the parts of the tiered layer share: both tiers, the clock, the
// options, the statistics, and the operations on L1 copies that every part
// needs (serve, fill, restamp, drop). TieredCache (tiered_cache.cc) is the
// orchestrator; Revalidator, WarmUp and LeaseLoader each hold a Tiers&.
//
// Invariants every part keeps (docs/tiered.md, "Coherence"):
//   - an L1 copy never outlives its L2 item: a fill lives for the shorter of
//     L2's remaining TTL and the write's (or L1's default) TTL;
//   - what L2 said never overwrites this replica's own newer write: a fill
//     after a miss only adds, and a fill or drop after a check replaces only
//     the L1 version that was checked (compare-and-swap on the L1 entry);
//   - a copy is served without asking L2 only while it was checked less than
//     max_staleness ago, or while its own write is still queued.

#ifndef TIERCACHE_MIRROR_TIERED_TIERS_H_
#define TIERCACHE_MIRROR_TIERED_TIERS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tiercache/cache.h"
#include "tiercache/clock.h"
#include "tiercache/tiered_cache.h"
#include "tiered/copy.h"
#include "tiered/l2_tier.h"

namespace tiercache::mirror_internal {

// A counter bumped by every hit: one shared atomic would bounce its cache
// line between the cores on every read; each thread adds to its own cell.
class StripedCounter {
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

// TieredStats, as the parts count them (meanings in tiered_cache.h).
struct TieredCounters {
  StripedCounter l1_hits;
  std::atomic<uint64_t> l2_hits{0};
  std::atomic<uint64_t> l2_misses{0};
  std::atomic<uint64_t> l2_errors{0};
  std::atomic<uint64_t> fallback_hits{0};
  std::atomic<uint64_t> revalidations{0};
  std::atomic<uint64_t> revalidated_unchanged{0};
  std::atomic<uint64_t> revalidated_changed{0};
  std::atomic<uint64_t> revalidated_gone{0};
  std::atomic<uint64_t> loads{0};
  std::atomic<uint64_t> load_failures{0};
  std::atomic<uint64_t> lease_wins{0};
  std::atomic<uint64_t> lease_waits{0};
  std::atomic<uint64_t> lease_timeouts{0};
  std::atomic<uint64_t> refreshes{0};

  static void Bump(std::atomic<uint64_t>& counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  // Everything but `l1` and `mirror`.
  void Fill(TieredStats* stats) const;
};

// An L1 fill: `value` as a copy of L2's item.
struct CopyFill {
  std::string_view value;
  uint32_t flags = 0;
  CopyHeader header;
  absl::Duration l2_remaining = absl::InfiniteDuration();  // the L2 item's TTL left
  std::optional<absl::Duration> write_ttl;  // the caller's TTL; nullopt: L1's default
  // The L1 version (an L1 CAS) this fill replaces; nullopt: add only if L1
  // has no copy.
  std::optional<uint64_t> replacing;
};

class Tiers {
 public:
  Tiers(const TieredOptions& options, Cache& l1, L2Tier& l2, Clock& clock);

  const TieredOptions& options() const { return options_; }
  Cache& l1() { return l1_; }
  L2Tier& l2() { return l2_; }
  Clock& clock() { return clock_; }
  TieredCounters& counters() { return counters_; }
  const TieredCounters& counters() const { return counters_; }
  int64_t NowNs() const { return absl::ToUnixNanos(clock_.Now()); }

  // --- Input (common/validate.h's rules, then memcached's) ----------------
  absl::Status CheckL1Key(std::string_view key) const;
  absl::Status CheckKey(std::string_view key) const;
  absl::Status CheckWrite(std::string_view key, std::string_view value,
                          const WriteOptions& options) const;
  // A loaded value both tiers can hold (with the write's `ttl`), or an error
  // naming the key.
  absl::Status CheckLoaded(std::string_view key, std::string_view value,
                           std::optional<absl::Duration> ttl) const;

  // --- L1 copies -------------------------------------------------------------
  // Served without asking L2: checked recently enough, or its own write is
  // still on its way to memcached.
  bool Servable(const CopyHeader& header) const;
  bool Pending(const CopyHeader& header) const;
  void Fill(std::string_view key, const CopyFill& fill);
  // Fill with L2's item `r` (a hit), as checked at `asked_ns`.
  void FillFrom(std::string_view key, const Fetched& r, int64_t asked_ns,
                std::optional<absl::Duration> write_ttl, std::optional<uint64_t> replacing);
  // Marks an unchanged copy as checked at `checked_ns`, unless it was
  // rewritten meanwhile (its L1 CAS moved).
  void Restamp(std::string_view key, const Copy& copy, int64_t checked_ns);
  // Drops the copy that was checked (not a newer one written meanwhile).
  void Drop(std::string_view key, const Copy& copy);
  // The write path of Set: replicate, then keep the value in L1 as a pending
  // copy (its place in the queue) or, if replication refused it, as a copy
  // of unknown version. The replication error, with the key named.
  absl::Status WriteThrough(std::string_view key, std::string_view value,
                            const WriteOptions& options);

  // An L2 call failed: counted and reported to on_l2_error.
  void CountError(std::string_view key, const absl::Status& why);

 private:
  const TieredOptions& options_;
  Cache& l1_;
  L2Tier& l2_;
  Clock& clock_;
  const int64_t staleness_ns_;
  TieredCounters counters_;
};

std::string KeyText(std::string_view key);

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_TIERS_H_
