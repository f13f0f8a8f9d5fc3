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
    const size_t bytes = write.key.size() + write.value.size();
    std::unique_lock<std::mutex> lock(mu_);
    auto full = [&] {
      return queue_.size() >= options_.max_queued_writes ||
             (!queue_.empty() && queued_bytes_ + bytes > options_.max_queued_bytes);
    };
    if (full()) {
      if (write.kind == Write::Kind::kDelete) {
        // An invalidation is worth waiting for; a value is not (a dropped
        // value only costs a later L2 miss).
        room_.wait_until(lock, absl::ToChronoTime(absl::Now() + l2_->options().op_timeout),
                         [&] { return !full() || stop_; });
      }
      if (full()) {
        ++dropped_;
        lock.unlock();
        absl::Status why = absl::ResourceExhaustedError(absl::StrFormat(
            "replication queue is full (%d writes, %d bytes); %s of '%s' not replicated",
            queue_.size(), queued_bytes_, write.kind == Write::Kind::kDelete ? "delete" : "write",
            absl::CEscape(write.key)));
        Report(write.key, why);
        return why;
      }
    }
    queue_.push_back(std::move(write));
    queued_bytes_ += bytes;
    ++accepted_;
    const bool wake = sender_idle_;
    lock.unlock();
    // Waking the sender is a futex call: only when it sleeps, not per write.
    if (wake) work_.notify_one();
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
  absl::Status Encode(const Write& write, uint32_t index, absl::Time now, std::string* out) {
    MemcachedClient::Impl& client = l2_->impl();
    absl::StatusOr<WireKey> key = client.Key(write.key);
    if (!key.ok()) return key.status();
    const mirror_internal::RequestTag tag{index, /*quiet=*/true};
    switch (write.kind) {
      case Write::Kind::kValue: {
        if (absl::Status s = client.CheckValue(*key, write.value.size()); !s.ok()) return s;
        absl::StatusOr<int64_t> ttl =
            mirror_internal::EncodeTtl(write.ttl.value_or(l2_->options().default_ttl), now);
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
        absl::StatusOr<int64_t> ttl = mirror_internal::EncodeTtl(*write.ttl, now);
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

  // A batch on the wire, waiting for its answer.
  struct InFlight {
    std::vector<Write> writes;
    std::vector<bool> failed;   // by index in `writes`
    Connection::Ticket ticket;  // null if nothing of it was sent
    absl::Status status;        // the batch could not be sent
  };

  // Encodes a batch as quiet requests tagged with their index, then a no-op,
  // and puts it on the wire without waiting: memcached answers only failures
  // (by tag) and the no-op, so a batch costs one round trip, and the sender
  // can encode the next batch while memcached applies this one.
  InFlight SendBatch(std::vector<Write> writes) {
    InFlight batch;
    batch.writes = std::move(writes);
    batch.failed.assign(batch.writes.size(), false);
    request_.clear();
    size_t encoded = 0;
    const absl::Time now = absl::Now();
    for (size_t i = 0; i < batch.writes.size(); ++i) {
      if (absl::Status s = Encode(batch.writes[i], static_cast<uint32_t>(i), now, &request_);
          !s.ok()) {
        batch.failed[i] = true;
        Report(batch.writes[i].key, s);
      } else {
        ++encoded;
      }
    }
    if (encoded == 0) return batch;
    mirror_internal::EncodeNoop(&request_);
    MemcachedClient::Impl& client = l2_->impl();
    absl::StatusOr<Connection::Ticket> ticket =
        client.servers_.front()->connections.front()->Send(request_, 0, client.Deadline());
    if (ticket.ok()) {
      batch.ticket = *std::move(ticket);
    } else {
      batch.status = ticket.status();
    }
    return batch;
  }

  // Waits for a batch's answer and accounts for every write in it.
  void Finish(InFlight& batch) {
    absl::Status status = batch.status;
    if (batch.ticket != nullptr) {
      MemcachedClient::Impl& client = l2_->impl();
      absl::StatusOr<std::vector<Response>> responses =
          client.servers_.front()->connections.front()->Wait(batch.ticket, client.Deadline());
      if (!responses.ok()) {
        status = responses.status();
      } else {
        for (const Response& r : *responses) {
          using Code = Response::Code;
          // A quiet delete of a missing key, or a quiet touch of one, is fine.
          if (r.code == Code::kHit || r.code == Code::kNotFound || r.code == Code::kMiss) continue;
          if (r.opaque.has_value() && *r.opaque < batch.writes.size()) {
            batch.failed[*r.opaque] = true;
            Report(batch.writes[*r.opaque].key, absl::InternalError(absl::StrFormat(
                                                    "memcached refused the write (%s)",
                                                    r.message.empty() ? "not stored" : r.message)));
          } else {
            // Error lines carry no tag: the write they belong to is unknown.
            status = absl::InternalError(
                absl::StrFormat("memcached refused a write of the batch: %s", r.message));
          }
        }
      }
    }
    size_t failures = 0;
    for (size_t i = 0; i < batch.writes.size(); ++i) {
      if (!batch.failed[i] && !status.ok()) {
        batch.failed[i] = true;
        Report(batch.writes[i].key, status);
      }
      failures += batch.failed[i];
    }
    {
      std::lock_guard<std::mutex> hold(mu_);
      failed_ += failures;
      replicated_ += batch.writes.size() - failures;
      finished_ += batch.writes.size();
    }
    progress_.notify_all();
  }

  void SendLoop() {
    // Batches on the wire at once: enough to keep memcached busy while the
    // next is encoded, few enough that a failing server costs little.
    constexpr size_t kMaxInFlight = 4;
    std::deque<InFlight> in_flight;
    while (true) {
      std::vector<Write> writes;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (queue_.empty() && in_flight.empty()) {
          sender_idle_ = true;
          work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
          sender_idle_ = false;
          if (queue_.empty()) return;  // stopping, and everything is sent
        }
        if (!queue_.empty() && in_flight.size() < kMaxInFlight) {
          const size_t n = std::min(queue_.size(), options_.max_batch);
          writes.reserve(n);
          for (size_t i = 0; i < n; ++i) {
            queued_bytes_ -= queue_.front().key.size() + queue_.front().value.size();
            writes.push_back(std::move(queue_.front()));
            queue_.pop_front();
          }
        }
      }
      if (writes.empty()) {  // nothing new to send: collect the oldest answer
        Finish(in_flight.front());
        in_flight.pop_front();
        continue;
      }
      room_.notify_all();
      in_flight.push_back(SendBatch(std::move(writes)));
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
  bool sender_idle_ = false;  // the sender waits on `work_`
  size_t queued_bytes_ = 0;   // keys and values in `queue_`
  uint64_t accepted_ = 0;     // writes queued (or, synchronous, sent)
  uint64_t finished_ = 0;     // of those, acknowledged or failed
  uint64_t replicated_ = 0;
  uint64_t failed_ = 0;
  uint64_t dropped_ = 0;
  std::string request_;  // the sender's batch buffer, reused
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<Mirror>> Mirror::Create(MemcachedClient* l2, MirrorOptions options) {
  if (l2 == nullptr) return absl::InvalidArgumentError("Mirror needs a MemcachedClient");
  if (options.max_queued_writes == 0 || options.max_queued_bytes == 0 || options.max_batch == 0) {
    return absl::InvalidArgumentError(
        "max_queued_writes, max_queued_bytes and max_batch must be >= 1");
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
