// A fake L2 for unit tests of the tiered layer: memcached's semantics for the
// calls TieredCache makes (CAS, add, compare-and-delete, counters, TTLs,
// leases with W/Z, recache windows), kept in a map on a FakeClock, plus a
// replication queue a test can hold and release, and an outage switch.
//
// FakeMemcached is the shared server (one per test); each replica gets its
// own FakeL2 (its own Mirror queue) over it, as real replicas each have
// their own Mirror over one memcached. Not a replacement for the real-server
// tests in tests/integration/: it exists so that every state transition of
// docs/tiered.md can be driven exactly, with no sockets and no sleeps.

#ifndef TIERCACHE_TESTS_UNIT_FAKE_L2_H_
#define TIERCACHE_TESTS_UNIT_FAKE_L2_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/latency.h"
#include "protocol/meta_protocol.h"
#include "tiercache/clock.h"
#include "tiered/l2_tier.h"
#include "validate.h"

namespace tiercache::testing {

using mirror_internal::Fetched;
using mirror_internal::FetchOptions;
using mirror_internal::Stored;
using mirror_internal::StoreMode;

class FakeMemcached {
 public:
  struct Item {
    std::string value;
    uint32_t flags = 0;
    uint64_t cas = 0;
    absl::Time expiry = absl::InfiniteFuture();
    bool stub = false;       // a lease stub (mg ... N on a miss)
    bool win_given = false;  // W was handed out (lease or recache); later readers get Z
  };

  explicit FakeMemcached(Clock* clock) : clock_(clock) {}

  // --- What the test sees and does (another replica, an operator) ----------
  void SetDown(bool down) {
    std::lock_guard<std::mutex> hold(mu_);
    down_ = down;
  }
  // Stores as a plain set from another client; returns the new CAS.
  uint64_t Put(std::string_view key, std::string_view value,
               absl::Duration ttl = absl::InfiniteDuration(), uint32_t flags = 0) {
    std::lock_guard<std::mutex> hold(mu_);
    return StoreLocked(key, value, ttl, flags);
  }
  void Erase(std::string_view key) {
    std::lock_guard<std::mutex> hold(mu_);
    items_.erase(std::string(key));
  }
  // The live item, with no side effect.
  std::optional<Item> Peek(std::string_view key) {
    std::lock_guard<std::mutex> hold(mu_);
    Item* item = FindLocked(key);
    return item == nullptr ? std::nullopt : std::optional<Item>(*item);
  }
  // Called at the start of every Fetch (outside the lock): lets a test act
  // as another replica while this one waits.
  std::function<void()> on_fetch;
  int fetches() const { return fetches_; }
  int stores() const { return stores_; }

  // --- memcached's side of the L2Tier calls ---------------------------------
  absl::StatusOr<Fetched> Fetch(std::string_view key, const FetchOptions& options) {
    if (on_fetch) on_fetch();
    std::lock_guard<std::mutex> hold(mu_);
    ++fetches_;
    if (down_) return Down();
    const absl::Time now = clock_->Now();
    Item* item = FindLocked(key);
    Fetched fetched;
    if (item == nullptr) {
      if (!options.lease_ttl.has_value()) return fetched;  // EN
      Item& stub = items_[std::string(key)];
      stub = Item{"", 0, ++next_cas_, now + WholeSeconds(*options.lease_ttl), true, true};
      fetched.found = true;
      fetched.cas = stub.cas;
      fetched.remaining = Remaining(stub, now);
      fetched.won = true;
      return fetched;
    }
    fetched.found = true;
    fetched.flags = item->flags;
    fetched.cas = item->cas;
    fetched.remaining = Remaining(*item, now);
    if (options.value) fetched.value = item->value;
    // Once W was handed out (a lease, or a recache), every later reader gets
    // Z, whatever it asked, until a store replaces the item.
    if (item->win_given) {
      fetched.lost = true;
    } else if (options.recache_below.has_value() &&
               fetched.remaining < WholeSeconds(*options.recache_below)) {
      item->win_given = true;
      fetched.won = true;
    }
    return fetched;
  }

  absl::StatusOr<Stored> Store(std::string_view key, std::string_view value,
                               std::optional<absl::Duration> ttl, uint32_t flags, StoreMode mode,
                               std::optional<uint64_t> cas) {
    std::lock_guard<std::mutex> hold(mu_);
    ++stores_;
    if (down_) return Down();
    Item* item = FindLocked(key);
    if (mode == StoreMode::kAdd && item != nullptr) return Stored{StoreResult::kNotStored, 0};
    if (cas.has_value()) {
      if (item == nullptr) return Stored{StoreResult::kNotFound, 0};
      if (item->cas != *cas) return Stored{StoreResult::kExists, 0};
    }
    return Stored{StoreResult::kStored,
                  StoreLocked(key, value, ttl.value_or(absl::InfiniteDuration()), flags)};
  }

  absl::StatusOr<bool> Delete(std::string_view key, std::optional<uint64_t> cas) {
    std::lock_guard<std::mutex> hold(mu_);
    if (down_) return Down();
    Item* item = FindLocked(key);
    if (item == nullptr || (cas.has_value() && item->cas != *cas)) return false;
    items_.erase(std::string(key));
    return true;
  }

  absl::StatusOr<uint64_t> Arithmetic(std::string_view key, uint64_t delta, bool increment) {
    std::lock_guard<std::mutex> hold(mu_);
    if (down_) return Down();
    Item* item = FindLocked(key);
    if (item == nullptr) return absl::NotFoundError("not in memcached");
    uint64_t number = 0;
    if (!absl::SimpleAtoi(item->value, &number)) {
      return absl::FailedPreconditionError("non-numeric value");
    }
    number = increment ? number + delta : (delta > number ? 0 : number - delta);
    item->value = absl::StrCat(number);
    item->cas = ++next_cas_;
    return number;
  }

 private:
  static absl::Status Down() { return absl::UnavailableError("fake memcached is down"); }
  // memcached's tokens are whole seconds (ClientCore rounds up).
  static absl::Duration WholeSeconds(absl::Duration d) { return absl::Ceil(d, absl::Seconds(1)); }
  // memcached reports whole seconds left; -1 (here: infinite) for no expiry.
  static absl::Duration Remaining(const Item& item, absl::Time now) {
    if (item.expiry == absl::InfiniteFuture()) return absl::InfiniteDuration();
    return absl::Floor(item.expiry - now, absl::Seconds(1));
  }
  Item* FindLocked(std::string_view key) {
    auto it = items_.find(std::string(key));
    if (it == items_.end()) return nullptr;
    if (it->second.expiry <= clock_->Now()) {
      items_.erase(it);
      return nullptr;
    }
    return &it->second;
  }
  uint64_t StoreLocked(std::string_view key, std::string_view value, absl::Duration ttl,
                       uint32_t flags) {
    const absl::Time expiry =
        ttl == absl::InfiniteDuration() ? absl::InfiniteFuture() : clock_->Now() + ttl;
    items_[std::string(key)] = Item{std::string(value), flags, ++next_cas_, expiry, false, false};
    return next_cas_;
  }

  Clock* const clock_;
  std::mutex mu_;
  std::map<std::string, Item, std::less<>> items_;
  uint64_t next_cas_ = 100;
  bool down_ = false;
  int fetches_ = 0;
  int stores_ = 0;
};

// One replica's L2: the shared FakeMemcached (and an optional old pool), and
// this replica's replication queue.
class FakeL2 final : public mirror_internal::L2Tier {
 public:
  FakeL2(FakeMemcached* primary, FakeMemcached* old_pool = nullptr)
      : primary_(primary), old_pool_(old_pool) {}

  // While held, replicated writes wait in the queue (they are accepted but
  // not finished) until Deliver() or Flush().
  void HoldReplication(bool hold) {
    hold_ = hold;
    if (!hold) Deliver();
  }
  void Deliver() {
    while (!queue_.empty()) {
      const Write& w = queue_.front();
      absl::StatusOr<Stored> stored =
          primary_->Store(w.key, w.value, w.options.ttl, w.options.flags, StoreMode::kSet, {});
      ++(stored.ok() ? replicated_ : failed_);
      queue_.pop_front();
      ++finished_;
    }
  }

  absl::Status CheckKey(std::string_view key) const override {
    return mirror_internal::EncodeKey("", key).status();
  }
  absl::Status CheckWrite(std::string_view key, size_t value_size,
                          std::optional<absl::Duration> ttl) const override {
    if (absl::Status s = CheckKey(key); !s.ok()) return s;
    if (value_size > (1u << 20)) return absl::InvalidArgumentError("value too large for the fake");
    return common_internal::CheckTtl(ttl);
  }
  absl::Duration default_ttl() const override { return absl::InfiniteDuration(); }
  absl::Duration op_timeout() const override { return absl::Milliseconds(500); }

  absl::StatusOr<Fetched> Fetch(std::string_view key, const FetchOptions& options) override {
    return primary_->Fetch(key, options);
  }
  absl::StatusOr<std::vector<Fetched>> FetchMany(absl::Span<const std::string_view> keys,
                                                 const FetchOptions& options) override {
    std::vector<Fetched> out;
    for (std::string_view key : keys) {
      absl::StatusOr<Fetched> one = primary_->Fetch(key, options);
      if (!one.ok()) return one.status();
      out.push_back(*std::move(one));
    }
    return out;
  }
  absl::StatusOr<Stored> Store(std::string_view key, std::string_view value,
                               const WriteOptions& options, StoreMode mode,
                               std::optional<uint64_t> cas) override {
    return primary_->Store(key, value, options.ttl, options.flags, mode, cas);
  }
  absl::StatusOr<bool> Delete(std::string_view key, std::optional<uint64_t> cas) override {
    return primary_->Delete(key, cas);
  }
  absl::StatusOr<uint64_t> Arithmetic(std::string_view key, uint64_t delta,
                                      bool increment) override {
    return primary_->Arithmetic(key, delta, increment);
  }

  bool has_fallback() const override { return old_pool_ != nullptr; }
  absl::StatusOr<Fetched> FetchFallback(std::string_view key) override {
    return old_pool_->Fetch(key, FetchOptions{});
  }
  absl::StatusOr<bool> DeleteFallback(std::string_view key) override {
    return old_pool_->Delete(key, std::nullopt);
  }

  absl::Status Replicate(std::string_view key, std::string_view value,
                         const WriteOptions& options) override {
    queue_.push_back(Write{std::string(key), std::string(value), options});
    ++accepted_;
    if (!hold_) Deliver();
    return absl::OkStatus();
  }
  bool replicates_async() const override { return true; }
  uint64_t accepted_writes() const override { return accepted_; }
  uint64_t finished_writes() const override { return finished_; }
  absl::Status Flush(absl::Duration) override {
    Deliver();
    return absl::OkStatus();
  }
  std::vector<ServerStatus> server_states() const override { return {}; }
  L2Latencies latencies() const override { return latency_.Snapshot(); }
  void RecordLatency(L2Op op, absl::Duration took) override { latency_.Record(op, took); }
  absl::Status SetServers(const std::vector<std::string>&) override {
    return absl::UnimplementedError("the fake L2 has no servers");
  }
  MirrorStats mirror_stats() const override {
    MirrorStats stats;
    stats.queued = accepted_;
    stats.replicated = replicated_;
    stats.failed = failed_;
    stats.queue_depth = queue_.size();
    return stats;
  }

 private:
  struct Write {
    std::string key;
    std::string value;
    WriteOptions options;
  };
  FakeMemcached* const primary_;
  FakeMemcached* const old_pool_;
  mirror_internal::LatencyRecorder latency_;
  bool hold_ = false;
  std::deque<Write> queue_;
  uint64_t accepted_ = 0;
  uint64_t finished_ = 0;
  uint64_t replicated_ = 0;
  uint64_t failed_ = 0;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_UNIT_FAKE_L2_H_
