#include "tiercache/cache.h"

#include <array>
#include <bit>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "entry.h"
#include "single_flight.h"
#include "stripe.h"
#include "validate.h"

namespace tiercache {

using engine_internal::Entry;
using engine_internal::Graveyard;
using engine_internal::kNever;
using engine_internal::StoreMode;
using engine_internal::Stripe;

std::string_view RemovalReasonName(RemovalReason reason) {
  switch (reason) {
    case RemovalReason::kEvicted:
      return "evicted";
    case RemovalReason::kExpired:
      return "expired";
    case RemovalReason::kReplaced:
      return "replaced";
    case RemovalReason::kDeleted:
      return "deleted";
    case RemovalReason::kCleared:
      return "cleared";
  }
  return "unknown";
}

std::string_view StoreResultName(StoreResult result) {
  switch (result) {
    case StoreResult::kStored:
      return "stored";
    case StoreResult::kNotStored:
      return "not stored";
    case StoreResult::kExists:
      return "exists";
    case StoreResult::kNotFound:
      return "not found";
  }
  return "unknown";
}

struct Cache::Reaper {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;
};

namespace {

constexpr size_t kMaxStripes = 64;
constexpr size_t kMaxKeySizeLimit = std::numeric_limits<uint16_t>::max();

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

// The automatic stripe count: 64, halved until each stripe can hold the
// largest allowed entry and (with an item bound) at least kMinItemsPerStripe
// items. Keys do not spread evenly over stripes, and a stripe of a few dozen
// items evicts early: on the LIRS traces at 2000 items, 64 stripes of 31 items
// lost up to 10 points of hit ratio against one exact LRU (docs/performance.md).
constexpr size_t kMinItemsPerStripe = 128;
size_t AutomaticStripes(const CacheOptions& o) {
  const size_t largest = Cache::ChargeFor(o.max_key_size, o.max_value_size, /*expires=*/true);
  size_t stripes = kMaxStripes;
  while (stripes > 1 && (o.max_bytes / stripes < largest ||
                         (o.max_items != 0 && o.max_items / stripes < kMinItemsPerStripe))) {
    stripes /= 2;
  }
  return stripes;
}

absl::Status ValidateOptions(const CacheOptions& o) {
  if (o.max_bytes == 0) return absl::InvalidArgumentError("max_bytes must be > 0");
  if (o.max_key_size == 0 || o.max_key_size > kMaxKeySizeLimit) {
    return absl::InvalidArgumentError(absl::StrFormat("max_key_size is %d; it must be in 1..%d",
                                                      o.max_key_size, kMaxKeySizeLimit));
  }
  if (o.max_value_size > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat("max_value_size is %d; the limit is %d",
                                                      o.max_value_size,
                                                      std::numeric_limits<uint32_t>::max()));
  }
  if (absl::Status s = common_internal::CheckTtl(o.default_ttl, "default_ttl"); !s.ok()) return s;
  if (o.reap_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reap_interval is %s; it must be >= 0 (0: no reaper)", DurationText(o.reap_interval)));
  }
  if (o.stripes != 0) {
    if (!std::has_single_bit(o.stripes) || o.stripes > (size_t{1} << 16)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "stripes is %d; it must be 0 (automatic) or a power of two up to 65536", o.stripes));
    }
    if (o.max_items != 0 && o.max_items < o.stripes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("max_items is %d, fewer than the %d stripes: each stripe needs room "
                          "for at least one item",
                          o.max_items, o.stripes));
    }
  }
  return absl::OkStatus();
}

// memcached's safe_strtoull (util.c), as its do_add_delta applies it to an
// item's data: strtoull(base 10) over the value and the "\r\n" after it,
// accepted when a digit was read, there was no overflow (ERANGE), the next
// byte is whitespace or NUL, and a result negative as int64_t had no '-'.
// Emulated exactly because a value shared with memcached (TieredCache's L2)
// must count the same in both tiers, and not by calling strtoull because the
// value is not NUL-terminated and may hold NUL bytes. Hence: C-locale
// whitespace, one optional sign, any number of digits, then whitespace, NUL
// or the end. strtoull negates after reading, so "-0" is 0 and
// "-18446744073709551615" is 1, both accepted as memcached does.
// Where memcached's answer depends on more than the value, this one does not:
// whitespace alone is not a number here, while memcached's strtoull reads on
// past the "\r\n" into whatever bytes follow the item in its slab; and
// memcached rejects a value too large for one slab chunk (512 KiB by default).
bool MemcachedSafeStrtoull(std::string_view text, uint64_t* out) {
  const auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
  };
  size_t i = 0;
  while (i < text.size() && is_space(text[i])) ++i;
  bool negative = false;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    negative = text[i] == '-';
    ++i;
  }
  const size_t digits_begin = i;
  uint64_t magnitude = 0;
  bool overflow = false;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    const uint64_t digit = text[i] - '0';
    if (magnitude > (kMax - digit) / 10) overflow = true;  // strtoull reads on, then ERANGE
    magnitude = magnitude * 10 + digit;
  }
  if (i == digits_begin || overflow) return false;
  if (i < text.size() && !is_space(text[i]) && text[i] != '\0') return false;
  const uint64_t value = negative ? 0 - magnitude : magnitude;
  if (negative && static_cast<int64_t>(value) < 0) return false;
  *out = value;
  return true;
}

}  // namespace

size_t Cache::ChargeFor(size_t key_size, size_t value_size, bool expires) {
  return engine_internal::Charge(key_size, value_size, expires);
}

absl::StatusOr<std::unique_ptr<Cache>> Cache::Create(CacheOptions options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  const size_t stripes = options.stripes != 0 ? options.stripes : AutomaticStripes(options);
  return std::unique_ptr<Cache>(new Cache(std::move(options), stripes));
}

Cache::Cache(CacheOptions options, size_t stripe_count)
    : options_(std::move(options)),
      stripe_shift_(64 - std::countr_zero(stripe_count)),
      flights_(std::make_unique<common_internal::SingleFlight>()),
      // As much as the arenas' compaction slack: 1/32 of the budget.
      large_pool_(std::make_unique<engine_internal::LargeBlockPool>(options_.max_bytes / 32)) {
  if (options_.clock == nullptr) options_.clock = Clock::Real();
  const uint64_t policy_seed = options_.policy_seed != 0
                                   ? options_.policy_seed
                                   : std::random_device{}() ^ absl::ToUnixNanos(absl::Now());
  stripes_.reserve(stripe_count);
  for (size_t i = 0; i < stripe_count; ++i) {
    // Each stripe's sketch gets its own seed: the same key collides with
    // different keys in different caches and stripes.
    const uint64_t seed = (policy_seed + i) * 0x9e3779b97f4a7c15 + 1;
    stripes_.push_back(std::make_unique<Stripe>(options_.max_bytes / stripe_count,
                                                options_.max_items / stripe_count, options_.clock,
                                                options_.policy, seed));
  }
  if (options_.reap_interval > absl::ZeroDuration()) {
    reaper_ = std::make_unique<Reaper>();
    reaper_->thread = std::thread([this] { ReapLoop(); });
  }
}

Cache::~Cache() {
  if (reaper_ != nullptr) {
    {
      std::lock_guard<std::mutex> hold(reaper_->mu);
      reaper_->stop = true;
    }
    reaper_->cv.notify_all();
    reaper_->thread.join();
  }
  Clear();
}

void Cache::ReapLoop() {
  const auto interval = absl::ToChronoNanoseconds(options_.reap_interval);
  std::unique_lock<std::mutex> hold(reaper_->mu);
  while (!reaper_->cv.wait_for(hold, interval, [this] { return reaper_->stop; })) {
    hold.unlock();
    ReclaimExpired();
    hold.lock();
  }
}

Stripe& Cache::StripeFor(uint64_t hash) {
  // High bits pick the stripe; the stripe's table uses the low bits.
  return stripe_shift_ == 64 ? *stripes_[0] : *stripes_[hash >> stripe_shift_];
}

int64_t Cache::NowNanos() const { return engine_internal::NowNanos(*options_.clock); }

int64_t Cache::ExpiryFor(const WriteOptions& options, int64_t now_ns) const {
  const absl::Duration ttl = options.ttl.value_or(options_.default_ttl);
  if (ttl == absl::InfiniteDuration()) return kNever;
  const int64_t ttl_ns = absl::ToInt64Nanoseconds(ttl);
  return ttl_ns > kNever - now_ns ? kNever - 1 : now_ns + ttl_ns;
}

void Cache::Bury(Graveyard& dead) {
  for (const Graveyard::Removed& r : dead.removed) {
    const std::string_view bytes = r.key_and_value;
    options_.on_removal(
        Removal{bytes.substr(0, r.key_size), bytes.substr(r.key_size), r.flags, r.reason});
  }
  for (const engine_internal::LargeBlock& block : dead.blocks) large_pool_->Put(block);
}

absl::Status Cache::ValidateKey(std::string_view key) const {
  return common_internal::CheckKey(key, options_.max_key_size);
}

absl::Status Cache::ValidateWrite(std::string_view key, size_t value_size,
                                  const WriteOptions& options) const {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  if (absl::Status s = common_internal::CheckValueSize(value_size, options_.max_value_size);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = common_internal::CheckTtl(options.ttl); !s.ok()) return s;
  const size_t charge = ChargeFor(key.size(), value_size, /*expires=*/true);
  const size_t stripe_budget = stripes_[0]->max_bytes();
  if (charge > stripe_budget) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "entry of up to %d bytes (key %d + value %d + overhead) exceeds a stripe's whole budget of "
        "%d "
        "bytes (max_bytes %d / %d stripes)",
        charge, key.size(), value_size, stripe_budget, options_.max_bytes, stripes_.size()));
  }
  return absl::OkStatus();
}

std::optional<std::string> Cache::Get(std::string_view key) {
  // The string is allocated before the stripe lock is taken, sized like the
  // last value this thread read, so the copy under the lock rarely allocates:
  // allocating under the lock lengthened it on Zipf-hot stripes.
  thread_local size_t last_size = 0;
  std::optional<std::string> value(std::in_place);
  value->reserve(last_size);
  if (!Read(key, &*value, /*count=*/true)) return std::nullopt;
  last_size = value->size();
  return value;
}

bool Cache::Get(std::string_view key, std::string* value) { return Read(key, value, true); }

bool Cache::Read(std::string_view key, std::string* value, bool count) {
  if (!ValidateKey(key).ok()) return false;
  const uint64_t hash = engine_internal::HashKey(key);
  Graveyard dead(keep_removed());
  const bool hit = StripeFor(hash).Read(
      key, hash, [value](const Entry& e) { value->assign(e.value_data(), e.value_size); }, &dead,
      count);
  if (!dead.empty()) Bury(dead);
  return hit;
}

std::optional<Item> Cache::GetItem(std::string_view key) {
  if (!ValidateKey(key).ok()) return std::nullopt;
  const uint64_t hash = engine_internal::HashKey(key);
  Item item;
  Graveyard dead(keep_removed());
  const bool hit = StripeFor(hash).Read(
      key, hash,
      [&item](const Entry& e) {
        item.value.assign(e.value_data(), e.value_size);
        item.flags = e.flags;
        item.cas = e.cas();
        item.expiry =
            e.expiry_ns == kNever ? absl::InfiniteFuture() : absl::FromUnixNanos(e.expiry_ns);
      },
      &dead);
  if (!dead.empty()) Bury(dead);
  if (!hit) return std::nullopt;
  return item;
}

absl::flat_hash_map<std::string, Item> Cache::GetMany(absl::Span<const std::string_view> keys) {
  absl::flat_hash_map<std::string, Item> found;
  for (std::string_view key : keys) {
    const absl::string_view lookup(key.data(), key.size());  // abseil's own string_view
    if (found.contains(lookup)) continue;
    if (std::optional<Item> item = GetItem(key)) found.emplace(lookup, *std::move(item));
  }
  return found;
}

absl::StatusOr<StoreResult> Cache::Store(std::string_view key, std::string_view value,
                                         const WriteOptions& options, StoreMode mode,
                                         uint64_t cas) {
  if (absl::Status s = ValidateWrite(key, value.size(), options); !s.ok()) return s;
  const uint64_t hash = engine_internal::HashKey(key);
  const int64_t now_ns = NowNanos();
  engine_internal::NewRecord record{key, value, options.flags, ExpiryFor(options, now_ns), {}};
  // A large record is built before the lock, so its allocation and copy stay
  // out of the critical section; small ones are written in place under it.
  const size_t size = engine_internal::RecordSize(key.size(), value.size());
  if (!engine_internal::IsSmallRecord(size)) {
    record.large_block = large_pool_->Take(size);
    engine_internal::WriteRecord(record.large_block.ptr, record);
  }
  Graveyard dead(keep_removed());
  StoreResult result;
  try {
    result = StripeFor(hash).Store(record, hash, mode, cas, now_ns, &dead);
  } catch (...) {  // out of memory: the block was not adopted
    large_pool_->Put(record.large_block);
    throw;
  }
  if (result != StoreResult::kStored) large_pool_->Put(record.large_block);
  if (!dead.empty()) Bury(dead);
  return result;
}

absl::Status Cache::Set(std::string_view key, std::string_view value, WriteOptions options) {
  absl::StatusOr<StoreResult> result = Store(key, value, options, StoreMode::kSet, 0);
  return result.status();
}

absl::Status Cache::SetMany(absl::Span<const std::pair<std::string_view, std::string_view>> items,
                            WriteOptions options) {
  for (const auto& [key, value] : items) {
    if (absl::Status s = ValidateWrite(key, value.size(), options); !s.ok()) {
      return absl::Status(s.code(), absl::StrFormat("SetMany stored nothing: %s", s.message()));
    }
  }
  for (const auto& [key, value] : items) {
    if (absl::Status s = Set(key, value, options); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<StoreResult> Cache::Add(std::string_view key, std::string_view value,
                                       WriteOptions options) {
  return Store(key, value, options, StoreMode::kAdd, 0);
}

absl::StatusOr<StoreResult> Cache::Replace(std::string_view key, std::string_view value,
                                           WriteOptions options) {
  return Store(key, value, options, StoreMode::kReplace, 0);
}

absl::StatusOr<StoreResult> Cache::CompareAndSwap(std::string_view key, std::string_view value,
                                                  uint64_t cas, WriteOptions options) {
  return Store(key, value, options, StoreMode::kCompareAndSwap, cas);
}

absl::StatusOr<StoreResult> Cache::Concatenate(std::string_view key, std::string_view piece,
                                               bool append) {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  const uint64_t hash = engine_internal::HashKey(key);
  const int64_t now_ns = NowNanos();
  Stripe& stripe = StripeFor(hash);
  Graveyard dead(keep_removed());
  absl::Status status = stripe.Mutate(
      key, hash, now_ns,
      [&](const Entry& old, std::string* value) -> absl::Status {
        const size_t size = size_t{old.value_size} + piece.size();
        if (absl::Status s = ValidateWrite(key, size, WriteOptions{}); !s.ok()) {
          return absl::Status(
              s.code(),
              absl::StrFormat("%s would make the %s", append ? "Append" : "Prepend", s.message()));
        }
        value->reserve(size);
        if (!append) value->append(piece);
        value->append(old.value());
        if (append) value->append(piece);
        return absl::OkStatus();
      },
      &dead);
  if (!dead.empty()) Bury(dead);
  if (absl::IsNotFound(status)) return StoreResult::kNotStored;
  if (!status.ok()) return status;
  return StoreResult::kStored;
}

absl::StatusOr<StoreResult> Cache::Append(std::string_view key, std::string_view suffix) {
  return Concatenate(key, suffix, /*append=*/true);
}

absl::StatusOr<StoreResult> Cache::Prepend(std::string_view key, std::string_view prefix) {
  return Concatenate(key, prefix, /*append=*/false);
}

bool Cache::Delete(std::string_view key) { return Delete(key, 0); }

bool Cache::Delete(std::string_view key, uint64_t cas) {
  if (!ValidateKey(key).ok()) return false;
  const uint64_t hash = engine_internal::HashKey(key);
  Graveyard dead(keep_removed());
  const bool deleted = StripeFor(hash).Delete(key, hash, NowNanos(), cas, &dead);
  Bury(dead);
  return deleted;
}

bool Cache::Touch(std::string_view key, absl::Duration ttl) {
  if (!ValidateKey(key).ok() || ttl <= absl::ZeroDuration()) return false;
  const uint64_t hash = engine_internal::HashKey(key);
  const int64_t now_ns = NowNanos();
  Graveyard dead(keep_removed());
  const bool touched =
      StripeFor(hash).Touch(key, hash, now_ns, ExpiryFor(WriteOptions{ttl, 0}, now_ns), &dead);
  if (!dead.empty()) Bury(dead);
  return touched;
}

absl::StatusOr<uint64_t> Cache::AddToNumber(std::string_view key, uint64_t delta, bool increment) {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  const uint64_t hash = engine_internal::HashKey(key);
  const int64_t now_ns = NowNanos();
  uint64_t number = 0;
  Graveyard dead(keep_removed());
  absl::Status status = StripeFor(hash).Mutate(
      key, hash, now_ns,
      [&](const Entry& old, std::string* value) -> absl::Status {
        if (!MemcachedSafeStrtoull(old.value(), &number)) {
          return absl::FailedPreconditionError(absl::StrFormat(
              "cannot %s key '%s': its value is not a number memcached would accept",
              increment ? "increment" : "decrement", absl::CEscape(std::string(key))));
        }
        if (increment) {
          number += delta;  // wraps at 2^64, as memcached does
        } else {
          number = delta > number ? 0 : number - delta;  // stops at 0
        }
        // The plain number, where memcached pads a shorter result with spaces
        // to the old length when it rewrites the item in place ("10" - 1
        // stores "9 "). Both read back as the same number.
        char digits[20];
        const auto [digits_end, unused] = std::to_chars(digits, digits + sizeof(digits), number);
        value->assign(digits, digits_end);
        return absl::OkStatus();
      },
      &dead);
  if (!dead.empty()) Bury(dead);
  if (absl::IsNotFound(status)) {
    return absl::NotFoundError(absl::StrFormat("key '%s' is not in the cache", std::string(key)));
  }
  if (!status.ok()) return status;
  return number;
}

absl::StatusOr<uint64_t> Cache::Increment(std::string_view key, uint64_t delta) {
  return AddToNumber(key, delta, /*increment=*/true);
}

absl::StatusOr<uint64_t> Cache::Decrement(std::string_view key, uint64_t delta) {
  return AddToNumber(key, delta, /*increment=*/false);
}

absl::StatusOr<std::string> Cache::GetOrLoad(std::string_view key, Loader loader,
                                             WriteOptions options) {
  if (absl::Status s = ValidateWrite(key, 0, options); !s.ok()) return s;
  std::string value;
  if (Get(key, &value)) return value;

  return flights_->Do(
      key, engine_internal::HashKey(key),
      [&]() -> absl::StatusOr<std::string> {
        // A leader that finished just before this one registered has stored
        // the value. Not a request of its own: the caller's miss is counted.
        if (Read(key, &value, /*count=*/false)) return value;
        loads_.fetch_add(1, std::memory_order_relaxed);
        absl::StatusOr<std::string> loaded = loader(key);
        if (loaded.ok()) {
          if (absl::Status s = Set(key, *loaded, options); !s.ok()) {
            loaded = absl::Status(
                s.code(),
                absl::StrFormat("GetOrLoad could not cache the loaded value: %s", s.message()));
          }
        }
        if (!loaded.ok()) load_failures_.fetch_add(1, std::memory_order_relaxed);
        return loaded;
      },
      &load_waits_);
}

size_t Cache::ReclaimExpired() {
  const int64_t now_ns = NowNanos();
  size_t reclaimed = 0;
  for (auto& stripe : stripes_) {
    Graveyard dead(keep_removed());
    reclaimed += stripe->ReclaimExpired(now_ns, &dead);
    Bury(dead);
  }
  return reclaimed;
}

void Cache::Clear() {
  for (auto& stripe : stripes_) {
    Graveyard dead(keep_removed());
    stripe->Clear(&dead);
    Bury(dead);
  }
  large_pool_->Clear();
}

CacheStats Cache::Stats() const {
  CacheStats total;
  for (const auto& stripe : stripes_) {
    engine_internal::StripeStats s = stripe->Stats();
    total.hits += s.hits;
    total.misses += s.misses;
    total.sets += s.sets;
    total.evictions += s.evictions;
    total.expirations += s.expirations;
    total.items += s.items;
    total.bytes += s.bytes;
    total.reserved_bytes += s.reserved_bytes;
    total.compacted += s.compacted;
  }
  total.reserved_bytes += large_pool_->bytes();
  total.loads = loads_.load(std::memory_order_relaxed);
  total.load_failures = load_failures_.load(std::memory_order_relaxed);
  total.load_waits = load_waits_.load(std::memory_order_relaxed);
  return total;
}

absl::Status Cache::VerifyInvariants() const {
  for (size_t i = 0; i < stripes_.size(); ++i) {
    if (absl::Status s = stripes_[i]->VerifyInvariants(); !s.ok()) {
      return absl::Status(s.code(), absl::StrFormat("stripe %d: %s", i, s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace tiercache
