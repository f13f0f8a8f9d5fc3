#include "tiercache/mirror.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "client_internal.h"

namespace tiercache {

class Mirror::Impl {
 public:
  struct Write {
    enum class Kind { kValue, kDelete, kTouch };
    Kind kind;
    std::string key;
    std::string value;
    uint32_t flags = 0;
    std::optional<absl::Duration> ttl;  // nullopt: the client's default_ttl
  };

  Impl(MemcachedClient* l2, MirrorOptions options) : l2_(l2), options_(std::move(options)) {
    if (options_.mode == MirrorMode::kAsync) thread_ = std::thread([this] { SendLoop(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> hold(mu_);
      stop_ = true;
    }
    work_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Submit(Write write) {
    if (options_.mode == MirrorMode::kSync) return SendNow(write);
    std::unique_lock<std::mutex> lock(mu_);
    if (queue_.size() >= options_.max_queued_writes) {
      if (write.kind == Write::Kind::kDelete) {
        // An invalidation is worth waiting for; a value is not (a dropped
        // value only costs a later L2 miss).
        room_.wait_until(lock, absl::ToChronoTime(absl::Now() + l2_->options().op_timeout),
                         [&] { return queue_.size() < options_.max_queued_writes || stop_; });
      }
      if (queue_.size() >= options_.max_queued_writes) {
        ++dropped_;
        lock.unlock();
        absl::Status why = absl::ResourceExhaustedError(absl::StrFormat(
            "replication queue is full (%d writes); %s of '%s' not replicated",
            options_.max_queued_writes, write.kind == Write::Kind::kDelete ? "delete" : "write",
            absl::CEscape(write.key)));
        Report(write.key, why);
        return why;
      }
    }
    queue_.push_back(std::move(write));
    ++accepted_;
    lock.unlock();
    work_.notify_one();
    return absl::OkStatus();
  }

  absl::Status Flush(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = accepted_;
    if (!progress_.wait_until(lock, absl::ToChronoTime(absl::Now() + timeout),
                              [&] { return finished_ >= target; })) {
      return absl::DeadlineExceededError(
          absl::StrFormat("Flush: %d writes still unacknowledged after %s", target - finished_,
                          absl::FormatDuration(timeout)));
    }
    return absl::OkStatus();
  }

  MirrorStats Stats() const {
    std::lock_guard<std::mutex> hold(mu_);
    MirrorStats stats;
    stats.queued = accepted_;
    stats.replicated = replicated_;
    stats.failed = failed_;
    stats.dropped = dropped_;
    stats.queue_depth = queue_.size();
    return stats;
  }

 private:
  void Report(std::string_view key, const absl::Status& why) {
    if (options_.on_error) options_.on_error(key, why);
  }

  absl::Status SendNow(const Write& write) {
    absl::Status status;
    switch (write.kind) {
      case Write::Kind::kValue:
        status = l2_->Set(write.key, write.value, WriteOptions{write.ttl, write.flags}).status();
        break;
      case Write::Kind::kDelete:
        status = l2_->Delete(write.key).status();
        break;
      case Write::Kind::kTouch:
        status = l2_->Touch(write.key, *write.ttl).status();
        break;
    }
    std::lock_guard<std::mutex> hold(mu_);
    ++accepted_;
    ++finished_;
    if (status.ok()) {
      ++replicated_;
    } else {
      ++failed_;
    }
    if (!status.ok()) Report(write.key, status);
    return status;
  }

  // Encodes one write as a quiet request tagged with its index in the batch.
  absl::Status Encode(const Write& write, uint32_t index, std::string* out) {
    MemcachedClient::Impl& client = l2_->impl();
    absl::StatusOr<WireKey> key = client.Key(write.key);
    if (!key.ok()) return key.status();
    const mirror_internal::RequestTag tag{index, /*quiet=*/true};
    switch (write.kind) {
      case Write::Kind::kValue: {
        if (absl::Status s = client.CheckValue(*key, write.value.size()); !s.ok()) return s;
        absl::StatusOr<int64_t> ttl =
            mirror_internal::EncodeTtl(write.ttl.value_or(l2_->options().default_ttl), absl::Now());
        if (!ttl.ok()) return ttl.status();
        mirror_internal::SetRequest set;
        set.value = write.value;
        set.client_flags = write.flags;
        set.ttl = *ttl;
        mirror_internal::EncodeSet(*key, set, tag, out);
        return absl::OkStatus();
      }
      case Write::Kind::kDelete:
        mirror_internal::EncodeDelete(*key, {}, tag, out);
        return absl::OkStatus();
      case Write::Kind::kTouch: {
        absl::StatusOr<int64_t> ttl = mirror_internal::EncodeTtl(*write.ttl, absl::Now());
        if (!ttl.ok()) return ttl.status();
        mirror_internal::GetRequest touch;
        touch.value = false;
        touch.touch_ttl = *ttl;
        mirror_internal::EncodeGet(*key, touch, tag, out);
        return absl::OkStatus();
      }
    }
    return absl::InternalError("unknown write kind");
  }

  // Sends one batch in one round trip: quiet requests, then a no-op. Only
  // failures answer, each tagged with its write's index.
  void SendBatch(std::vector<Write>& batch) {
    std::string request;
    std::vector<bool> failed(batch.size(), false);
    size_t encoded = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (absl::Status s = Encode(batch[i], static_cast<uint32_t>(i), &request); !s.ok()) {
        failed[i] = true;
        Report(batch[i].key, s);
      } else {
        ++encoded;
      }
    }
    absl::Status batch_status;
    if (encoded > 0) {
      mirror_internal::EncodeNoop(&request);
      MemcachedClient::Impl& client = l2_->impl();
      absl::StatusOr<std::vector<Response>> responses =
          client.servers_.front()->Pick().Call(request, 0, client.Deadline());
      if (!responses.ok()) {
        batch_status = responses.status();
      } else {
        for (const Response& r : *responses) {
          using Code = Response::Code;
          // A quiet delete of a missing key, or a quiet touch of one, is fine.
          if (r.code == Code::kHit || r.code == Code::kNotFound || r.code == Code::kMiss) continue;
          if (r.opaque.has_value() && *r.opaque < batch.size()) {
            failed[*r.opaque] = true;
            Report(batch[*r.opaque].key, absl::InternalError(absl::StrFormat(
                                             "memcached refused the write (%s)",
                                             r.message.empty() ? "not stored" : r.message)));
          } else {
            // Error lines carry no tag: the write they belong to is unknown.
            batch_status = absl::InternalError(
                absl::StrFormat("memcached refused a write of the batch: %s", r.message));
          }
        }
      }
    }
    size_t failures = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!failed[i] && !batch_status.ok()) {
        failed[i] = true;
        Report(batch[i].key, batch_status);
      }
      failures += failed[i];
    }
    std::lock_guard<std::mutex> hold(mu_);
    failed_ += failures;
    replicated_ += batch.size() - failures;
    finished_ += batch.size();
  }

  void SendLoop() {
    std::vector<Write> batch;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything is sent
        const size_t n = std::min(queue_.size(), options_.max_batch);
        batch.clear();
        for (size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      room_.notify_all();
      SendBatch(batch);
      progress_.notify_all();
    }
  }

  MemcachedClient* const l2_;
  const MirrorOptions options_;

  mutable std::mutex mu_;
  std::condition_variable work_;      // the queue has writes, or stop
  std::condition_variable room_;      // the queue has room
  std::condition_variable progress_;  // `finished_` grew
  std::deque<Write> queue_;
  bool stop_ = false;
  uint64_t accepted_ = 0;  // writes queued (or, synchronous, sent)
  uint64_t finished_ = 0;  // of those, acknowledged or failed
  uint64_t replicated_ = 0;
  uint64_t failed_ = 0;
  uint64_t dropped_ = 0;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<Mirror>> Mirror::Create(MemcachedClient* l2, MirrorOptions options) {
  if (l2 == nullptr) return absl::InvalidArgumentError("Mirror needs a MemcachedClient");
  if (options.max_queued_writes == 0 || options.max_batch == 0) {
    return absl::InvalidArgumentError("max_queued_writes and max_batch must be >= 1");
  }
  return std::unique_ptr<Mirror>(new Mirror(std::make_unique<Impl>(l2, std::move(options))));
}

Mirror::Mirror(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Mirror::~Mirror() = default;

absl::Status Mirror::ReplicateValue(std::string_view key, std::string_view value,
                                    WriteOptions options) {
  if (options.ttl.has_value() && *options.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ttl is %s; it must be positive (InfiniteDuration: never expire)",
                        absl::FormatDuration(*options.ttl)));
  }
  return impl_->Submit({Impl::Write::Kind::kValue, std::string(key), std::string(value),
                        options.flags, options.ttl});
}

absl::Status Mirror::ReplicateDelete(std::string_view key) {
  return impl_->Submit({Impl::Write::Kind::kDelete, std::string(key), {}, 0, std::nullopt});
}

absl::Status Mirror::ReplicateTouch(std::string_view key, absl::Duration ttl) {
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ttl is %s; it must be positive (InfiniteDuration: never expire)",
                        absl::FormatDuration(ttl)));
  }
  return impl_->Submit({Impl::Write::Kind::kTouch, std::string(key), {}, 0, ttl});
}

absl::Status Mirror::Flush(absl::Duration timeout) { return impl_->Flush(timeout); }

absl::StatusOr<std::optional<std::string>> FillFromL2(Cache& l1, MemcachedClient& l2,
                                                      std::string_view key) {
  if (std::optional<std::string> value = l1.Get(key)) return value;
  absl::StatusOr<std::optional<Item>> item = l2.Get(key);
  if (!item.ok()) return item.status();
  if (!item->has_value()) return std::optional<std::string>();
  Item& hit = **item;
  const absl::Duration remaining = hit.expiry - absl::Now();
  if (remaining <= absl::ZeroDuration()) return std::optional<std::string>();
  const absl::Duration ttl = std::min(remaining, l1.options().default_ttl);
  // A value L1 cannot hold (too large for its limits) is still the answer.
  (void)l1.Set(key, hit.value, WriteOptions{ttl, hit.flags});
  return std::optional<std::string>(std::move(hit.value));
}

MirrorStats Mirror::Stats() const { return impl_->Stats(); }

}  // namespace tiercache
