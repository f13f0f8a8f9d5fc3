// MemcachedClient: the public face of the client layer, a thin veneer over
// ClientCore (client/client_core.h), which encodes, sends and matches.

#include <utility>

#include "absl/time/clock.h"
#include "client/client_core.h"
#include "tiercache/memcached.h"

namespace tiercache {

using mirror_internal::ClientCore;
using mirror_internal::Fetched;
using mirror_internal::StoreMode;

absl::StatusOr<std::unique_ptr<MemcachedClient>> MemcachedClient::Create(MemcachedOptions options) {
  absl::StatusOr<std::unique_ptr<ClientCore>> core = ClientCore::Create(options);
  if (!core.ok()) return core.status();
  return std::unique_ptr<MemcachedClient>(new MemcachedClient(*std::move(core)));
}

MemcachedClient::MemcachedClient(std::unique_ptr<ClientCore> core) : core_(std::move(core)) {}

MemcachedClient::~MemcachedClient() = default;

const MemcachedOptions& MemcachedClient::options() const { return core_->options(); }

std::vector<ServerStatus> MemcachedClient::ServerStates() const { return core_->ServerStates(); }

L2Latencies MemcachedClient::Latencies() const { return core_->Latencies(); }

std::string_view L2OpName(L2Op op) {
  switch (op) {
    case L2Op::kGet:
      return "get";
    case L2Op::kSet:
      return "set";
    case L2Op::kDelete:
      return "delete";
    case L2Op::kTouch:
      return "touch";
    case L2Op::kArithmetic:
      return "incr_decr";
    case L2Op::kGetMany:
      return "get_many";
    case L2Op::kLeaseWait:
      return "lease_wait";
    case L2Op::kRevalidation:
      return "revalidation";
  }
  return "?";
}

const std::vector<double>& LatencyHistogram::Bounds() {
  static const std::vector<double>* const bounds = [] {
    auto* seconds = new std::vector<double>;
    for (int64_t ns : mirror_internal::LatencyRecorder::kBoundsNs) {
      seconds->push_back(static_cast<double>(ns) * 1e-9);
    }
    return seconds;
  }();
  return *bounds;
}

absl::Status MemcachedClient::SetServers(const std::vector<std::string>& servers) {
  return core_->SetServers(servers);
}

absl::StatusOr<std::optional<Item>> MemcachedClient::Get(std::string_view key) {
  absl::StatusOr<Fetched> fetched = core_->Fetch(key);
  if (!fetched.ok()) return fetched.status();
  if (!fetched->found) return std::optional<Item>();
  return std::optional<Item>(std::move(*fetched).ToItem(absl::Now()));
}

absl::StatusOr<absl::flat_hash_map<std::string, Item>> MemcachedClient::GetMany(
    absl::Span<const std::string_view> keys) {
  // No TTLs: one classic `gets` per part instead of an `mg` per key.
  mirror_internal::FetchOptions options;
  options.ttl = false;
  absl::StatusOr<std::vector<Fetched>> fetched = core_->FetchMany(keys, options);
  if (!fetched.ok()) return fetched.status();
  absl::flat_hash_map<std::string, Item> found;
  found.reserve(keys.size());
  const absl::Time now = absl::Now();
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!(*fetched)[i].found) continue;
    found.insert_or_assign(absl::string_view(keys[i].data(), keys[i].size()),
                           std::move((*fetched)[i]).ToItem(now));
  }
  return found;
}

namespace {

absl::StatusOr<StoreResult> ResultOf(absl::StatusOr<mirror_internal::Stored> stored) {
  if (!stored.ok()) return stored.status();
  return stored->result;
}

}  // namespace

absl::StatusOr<StoreResult> MemcachedClient::Set(std::string_view key, std::string_view value,
                                                 WriteOptions options) {
  return ResultOf(core_->Store(key, value, options, StoreMode::kSet));
}

absl::StatusOr<StoreResult> MemcachedClient::Add(std::string_view key, std::string_view value,
                                                 WriteOptions options) {
  return ResultOf(core_->Store(key, value, options, StoreMode::kAdd));
}

absl::StatusOr<StoreResult> MemcachedClient::Replace(std::string_view key, std::string_view value,
                                                     WriteOptions options) {
  return ResultOf(core_->Store(key, value, options, StoreMode::kReplace));
}

absl::StatusOr<StoreResult> MemcachedClient::Append(std::string_view key, std::string_view suffix) {
  return ResultOf(core_->Store(key, suffix, {}, StoreMode::kAppend));
}

absl::StatusOr<StoreResult> MemcachedClient::Prepend(std::string_view key,
                                                     std::string_view prefix) {
  return ResultOf(core_->Store(key, prefix, {}, StoreMode::kPrepend));
}

absl::StatusOr<StoreResult> MemcachedClient::CompareAndSwap(std::string_view key,
                                                            std::string_view value, uint64_t cas,
                                                            WriteOptions options) {
  return ResultOf(core_->Store(key, value, options, StoreMode::kSet, cas));
}

absl::StatusOr<bool> MemcachedClient::Delete(std::string_view key) { return core_->Delete(key); }

absl::StatusOr<bool> MemcachedClient::Touch(std::string_view key, absl::Duration ttl) {
  return core_->Touch(key, ttl);
}

absl::StatusOr<uint64_t> MemcachedClient::Increment(std::string_view key, uint64_t delta) {
  return core_->Arithmetic(key, delta, /*increment=*/true);
}

absl::StatusOr<uint64_t> MemcachedClient::Decrement(std::string_view key, uint64_t delta) {
  return core_->Arithmetic(key, delta, /*increment=*/false);
}

namespace mirror_internal {
ClientCore& CoreOf(MemcachedClient& client) { return *client.core_; }
}  // namespace mirror_internal

}  // namespace tiercache
