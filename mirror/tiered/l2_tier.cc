#include "tiered/l2_tier.h"

#include <utility>

namespace tiercache::mirror_internal {
namespace {

class MemcachedTier final : public L2Tier {
 public:
  MemcachedTier(std::unique_ptr<MemcachedClient> primary, std::unique_ptr<MemcachedClient> fallback,
                std::unique_ptr<Mirror> mirror, bool async)
      : primary_(std::move(primary)),
        fallback_(std::move(fallback)),
        mirror_(std::move(mirror)),
        core_(CoreOf(*primary_)),
        async_(async) {}

  ~MemcachedTier() override {
    mirror_.reset();  // sends what is queued, while the client still exists
  }

  absl::Status CheckKey(std::string_view key) const override { return core_.Key(key).status(); }
  absl::Status CheckWrite(std::string_view key, size_t value_size,
                          std::optional<absl::Duration> ttl) const override {
    return core_.CheckWrite(key, value_size, ttl);
  }
  absl::Duration default_ttl() const override { return core_.options().default_ttl; }
  absl::Duration op_timeout() const override { return core_.options().op_timeout; }

  absl::StatusOr<Fetched> Fetch(std::string_view key, const FetchOptions& options) override {
    return core_.Fetch(key, options);
  }
  absl::StatusOr<std::vector<Fetched>> FetchMany(absl::Span<const std::string_view> keys,
                                                 const FetchOptions& options) override {
    return core_.FetchMany(keys, options);
  }
  absl::StatusOr<Stored> Store(std::string_view key, std::string_view value,
                               const WriteOptions& options, StoreMode mode,
                               std::optional<uint64_t> cas) override {
    return core_.Store(key, value, options, mode, cas);
  }
  absl::StatusOr<bool> Delete(std::string_view key, std::optional<uint64_t> cas) override {
    return core_.Delete(key, cas);
  }
  absl::StatusOr<uint64_t> Arithmetic(std::string_view key, uint64_t delta,
                                      bool increment) override {
    return core_.Arithmetic(key, delta, increment);
  }

  bool has_fallback() const override { return fallback_ != nullptr; }
  absl::StatusOr<Fetched> FetchFallback(std::string_view key) override {
    return CoreOf(*fallback_).Fetch(key);
  }
  absl::StatusOr<bool> DeleteFallback(std::string_view key) override {
    return CoreOf(*fallback_).Delete(key);
  }

  absl::Status Replicate(std::string_view key, std::string_view value,
                         const WriteOptions& options) override {
    return mirror_->ReplicateValue(key, value, options);
  }
  bool replicates_async() const override { return async_; }
  uint64_t accepted_writes() const override { return mirror_->accepted_writes(); }
  uint64_t finished_writes() const override { return mirror_->finished_writes(); }
  absl::Status Flush(absl::Duration timeout) override { return mirror_->Flush(timeout); }
  MirrorStats mirror_stats() const override { return mirror_->Stats(); }
  std::vector<ServerStatus> server_states() const override { return primary_->ServerStates(); }
  L2Latencies latencies() const override { return core_.Latencies(); }
  void RecordLatency(L2Op op, absl::Duration took) override { core_.RecordLatency(op, took); }
  absl::Status SetServers(const std::vector<std::string>& servers) override {
    return primary_->SetServers(servers);
  }

 private:
  const std::unique_ptr<MemcachedClient> primary_;
  const std::unique_ptr<MemcachedClient> fallback_;
  std::unique_ptr<Mirror> mirror_;
  ClientCore& core_;
  const bool async_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<L2Tier>> MakeMemcachedTier(MemcachedTierOptions options) {
  absl::StatusOr<std::unique_ptr<MemcachedClient>> primary = MemcachedClient::Create(options.pool);
  if (!primary.ok()) return primary.status();
  std::unique_ptr<MemcachedClient> fallback;
  if (!options.fallback_servers.empty()) {
    MemcachedOptions old_pool = options.pool;
    old_pool.servers = options.fallback_servers;
    absl::StatusOr<std::unique_ptr<MemcachedClient>> client = MemcachedClient::Create(old_pool);
    if (!client.ok()) return client.status();
    fallback = *std::move(client);
  }
  const bool async = options.mirror.mode == MirrorMode::kAsync;
  absl::StatusOr<std::unique_ptr<Mirror>> mirror =
      Mirror::Create(primary->get(), std::move(options.mirror));
  if (!mirror.ok()) return mirror.status();
  return std::unique_ptr<L2Tier>(
      new MemcachedTier(*std::move(primary), std::move(fallback), *std::move(mirror), async));
}

}  // namespace tiercache::mirror_internal
