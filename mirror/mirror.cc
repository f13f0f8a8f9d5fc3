#include "tiercache/mirror.h"

#include <atomic>
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
  // A write as handed to the mirror; the views are valid during Submit only.
  struct Write {
    enum class Kind { kValue, kDelete, kTouch };
    Kind kind;
    std::string_view key;
    std::string_view value;
    uint32_t flags = 0;
    std::optional<absl::Duration> ttl;  // nullopt: the client's default_ttl
  };

  Impl(MemcachedClient* l2, MirrorOptions options)
      : l2_(l2), options_(std::move(options)), queues_(l2->impl().servers_.size()) {
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

  absl::Status Submit(const Write& write) {
    // Bad input is the caller's error, found before anything is queued.
    MemcachedClient::Impl& client = l2_->impl();
    absl::StatusOr<WireKey> key = client.Key(write.key);
    if (!key.ok()) return key.status();
    if (write.kind == Write::Kind::kValue) {
      if (absl::Status s = client.CheckValue(*key, write.value.size()); !s.ok()) return s;
    }
    const absl::Duration ttl = write.ttl.value_or(l2_->options().default_ttl);
    absl::StatusOr<int64_t> ttl_token = mirror_internal::EncodeTtl(ttl, absl::Now());
    if (!ttl_token.ok()) return ttl_token.status();
    if (options_.mode == MirrorMode::kSync) return SendNow(write, ttl);

    const size_t bytes = key->text.size() + write.value.size() + 64;
    std::unique_lock<std::mutex> lock(mu_);
    auto full = [&] {
      return queued_writes_ >= options_.max_queued_writes ||
             (queued_writes_ > 0 && queued_bytes_ + bytes > options_.max_queued_bytes);
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
        const size_t queued = queued_writes_;
        lock.unlock();
        absl::Status why = absl::ResourceExhaustedError(
            absl::StrFormat("replication queue is full (%d writes); %s not replicated", queued,
                            write.kind == Write::Kind::kDelete ? "delete" : "write"));
        Report(write.key, why);
        return why;
      }
    }
    // Encoded straight into the batch being filled for the key's server: no
    // per-write object, and the sender only puts whole batches on the wire.
    const size_t server = client.ServerIndexFor(write.key);
    std::deque<Batch>& queue = queues_[server];
    if (queue.empty() || queue.back().count == options_.max_batch) {
      // A batch goes to its server's first connection (see SendBatch): its
      // tokens are reserved there, for as many writes as it can hold and its
      // end marker.
      queue.emplace_back();
      queue.back().requests = mirror_internal::RequestBatch(
          client.servers_[server]->connections.front()->ReserveOpaque(options_.max_batch + 1));
    }
    Batch& batch = queue.back();
    const size_t before = batch.requests.bytes().size();
    switch (write.kind) {
      case Write::Kind::kValue: {
        mirror_internal::SetRequest set;
        set.value = write.value;
        set.client_flags = write.flags;
        set.ttl = *ttl_token;
        batch.requests.Set(*key, set, /*quiet=*/true);
        break;
      }
      case Write::Kind::kDelete:
        batch.requests.Delete(*key, {}, /*quiet=*/true);
        break;
      case Write::Kind::kTouch: {
        mirror_internal::GetRequest touch;
        touch.value = false;
        touch.touch_ttl = *ttl_token;
        batch.requests.Get(*key, touch, /*quiet=*/true);
        break;
      }
    }
    batch.keys.append(write.key);
    batch.key_ends.push_back(static_cast<uint32_t>(batch.keys.size()));
    ++batch.count;
    queued_writes_ += 1;
    queued_bytes_ += batch.requests.bytes().size() - before;
    batch.sequence.push_back(accepted_.fetch_add(1) + 1);
    finished_flags_.push_back(false);
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
          absl::StrFormat("Flush: %d writes still unacknowledged after %s",
                          target - finished_.load(), absl::FormatDuration(timeout)));
    }
    return absl::OkStatus();
  }

  uint64_t accepted() const { return accepted_.load(std::memory_order_acquire); }
  uint64_t finished() const { return finished_.load(std::memory_order_acquire); }

  MirrorStats Stats() const {
    std::lock_guard<std::mutex> hold(mu_);
    MirrorStats stats;
    stats.queued = accepted_;
    stats.replicated = replicated_;
    stats.failed = failed_;
    stats.dropped = dropped_;
    stats.queue_depth = queued_writes_;
    return stats;
  }

 private:
  // Quiet requests, and the keys they were for (to report failures by key).
  struct Batch {
    mirror_internal::RequestBatch requests;  // sent (and moved to the connection) by SendBatch
    size_t count = 0;
    std::string keys;                // the user keys, end to end
    std::vector<uint32_t> key_ends;  // where each ends in `keys`
    std::vector<uint64_t> sequence;  // each write's place in the order of acceptance
    std::string_view Key(size_t i) const {
      const size_t begin = i == 0 ? 0 : key_ends[i - 1];
      return std::string_view(keys).substr(begin, key_ends[i] - begin);
    }
  };

  // A batch on the wire, waiting for its answer.
  struct InFlight {
    Batch batch;
    Connection* connection;
    Connection::Ticket ticket;  // null if it could not be sent
    absl::Status status;        // why not
  };

  void Report(std::string_view key, const absl::Status& why) {
    if (options_.on_error) options_.on_error(key, why);
  }

  absl::Status SendNow(const Write& write, absl::Duration ttl) {
    absl::Status status;
    switch (write.kind) {
      case Write::Kind::kValue:
        status = l2_->Set(write.key, write.value, WriteOptions{ttl, write.flags}).status();
        break;
      case Write::Kind::kDelete:
        status = l2_->Delete(write.key).status();
        break;
      case Write::Kind::kTouch:
        status = l2_->Touch(write.key, ttl).status();
        break;
    }
    {
      std::lock_guard<std::mutex> hold(mu_);
      // Nothing is queued in this mode: every write accepted has finished.
      ++accepted_;
      ++finished_;
      ++(status.ok() ? replicated_ : failed_);
    }
    if (!status.ok()) Report(write.key, status);
    return status;
  }

  // Ends the batch with its end marker and puts it on the wire without
  // waiting: memcached answers only failures (by token) and the marker, so a batch costs
  // one round trip, and the next batch is sent while memcached applies this.
  // Each server's batches go on its first connection, so they reach it in
  // order (a key always maps to the same server).
  InFlight SendBatch(Batch batch, size_t server) {
    InFlight in_flight;
    in_flight.batch = std::move(batch);
    in_flight.batch.requests.EndWithMarker();
    MemcachedClient::Impl& client = l2_->impl();
    in_flight.connection = client.servers_[server]->connections.front().get();
    absl::StatusOr<Connection::Ticket> ticket =
        in_flight.connection->Send(std::move(in_flight.batch.requests), client.Deadline());
    if (ticket.ok()) {
      in_flight.ticket = *std::move(ticket);
    } else {
      in_flight.status = ticket.status();
    }
    return in_flight;
  }

  // Waits for a batch's answer and accounts for every write in it.
  void Finish(InFlight& in_flight) {
    const Batch& batch = in_flight.batch;
    std::vector<bool> failed(batch.count, false);
    absl::Status status = in_flight.status;
    if (in_flight.ticket != nullptr) {
      MemcachedClient::Impl& client = l2_->impl();
      absl::StatusOr<std::vector<Response>> responses =
          in_flight.connection->Wait(in_flight.ticket, client.Deadline());
      if (!responses.ok()) {
        status = responses.status();
      } else {
        for (const Response& r : *responses) {
          using Code = Response::Code;
          // A quiet delete of a missing key is fine, and so is a touch's hit.
          if (r.code == Code::kHit || r.code == Code::kNotFound) continue;
          if (r.request != Response::kUntagged) {
            failed[r.request] = true;
            Report(batch.Key(r.request), absl::InternalError(absl::StrFormat(
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
    for (size_t i = 0; i < batch.count; ++i) {
      if (!failed[i] && !status.ok()) {
        failed[i] = true;
        Report(batch.Key(i), status);
      }
      failures += failed[i];
    }
    {
      std::lock_guard<std::mutex> hold(mu_);
      failed_ += failures;
      replicated_ += batch.count - failures;
      // Batches for different servers finish out of order: `finished_` only
      // moves past writes all of whose predecessors have finished too.
      for (uint64_t sequence : batch.sequence) {
        finished_flags_[sequence - finished_.load(std::memory_order_relaxed) - 1] = true;
      }
      uint64_t finished = finished_.load(std::memory_order_relaxed);
      while (!finished_flags_.empty() && finished_flags_.front()) {
        finished_flags_.pop_front();
        ++finished;
      }
      finished_.store(finished, std::memory_order_release);
    }
    progress_.notify_all();
  }

  void SendLoop() {
    // Batches on the wire at once: enough to keep memcached busy while the
    // next is filled, few enough that a failing server costs little.
    constexpr size_t kMaxInFlight = 4;
    std::deque<InFlight> in_flight;
    size_t server = 0;  // round-robin over the servers' queues
    while (true) {
      std::optional<Batch> next;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (queued_writes_ == 0 && in_flight.empty()) {
          sender_idle_ = true;
          work_.wait(lock, [&] { return stop_ || queued_writes_ > 0; });
          sender_idle_ = false;
          if (queued_writes_ == 0) return;  // stopping, and everything is sent
        }
        if (queued_writes_ > 0 && in_flight.size() < kMaxInFlight) {
          while (queues_[server].empty()) server = (server + 1) % queues_.size();
          next = std::move(queues_[server].front());
          queues_[server].pop_front();
          queued_writes_ -= next->count;
          queued_bytes_ -= next->requests.bytes().size();
        }
      }
      if (!next.has_value()) {  // nothing new to send: collect the oldest answer
        Finish(in_flight.front());
        in_flight.pop_front();
        continue;
      }
      room_.notify_all();
      in_flight.push_back(SendBatch(*std::move(next), server));
      server = (server + 1) % queues_.size();
    }
  }

  MemcachedClient* const l2_;
  const MirrorOptions options_;

  mutable std::mutex mu_;
  std::condition_variable work_;           // the queue has writes, or stop
  std::condition_variable room_;           // the queue has room
  std::condition_variable progress_;       // `finished_` grew
  std::vector<std::deque<Batch>> queues_;  // per server; the last batch is being filled
  size_t queued_writes_ = 0;
  size_t queued_bytes_ = 0;  // encoded bytes in `queue_`
  bool stop_ = false;
  bool sender_idle_ = false;  // the sender waits on `work_`
  // Atomic so that accepted_writes()/finished_writes() read them without the
  // lock; written under it.
  // The n-th write accepted has sequence number n.
  std::atomic<uint64_t> accepted_{0};  // writes queued (or, synchronous, sent)
  // Every write with a sequence number <= this has been acknowledged or has
  // failed (a watermark, not a count).
  std::atomic<uint64_t> finished_{0};
  std::deque<bool> finished_flags_;  // writes finished_ + 1 .. accepted_: done yet?
  uint64_t replicated_ = 0;
  uint64_t failed_ = 0;
  uint64_t dropped_ = 0;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<Mirror>> Mirror::Create(MemcachedClient* l2, MirrorOptions options) {
  if (l2 == nullptr) return absl::InvalidArgumentError("Mirror needs a MemcachedClient");
  if (options.max_queued_writes == 0 || options.max_queued_bytes == 0 || options.max_batch == 0) {
    return absl::InvalidArgumentError(
        "max_queued_writes, max_queued_bytes and max_batch must be >= 1");
  }
  // Each batch reserves max_batch + 1 opaque tokens on its connection.
  constexpr size_t kMaxBatch = size_t{1} << 20;
  if (options.max_batch > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_batch is %d; the limit is %d writes per batch", options.max_batch, kMaxBatch));
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
  return impl_->Submit({Impl::Write::Kind::kValue, key, value, options.flags, options.ttl});
}

absl::Status Mirror::ReplicateDelete(std::string_view key) {
  return impl_->Submit({Impl::Write::Kind::kDelete, key, {}, 0, std::nullopt});
}

absl::Status Mirror::ReplicateTouch(std::string_view key, absl::Duration ttl) {
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ttl is %s; it must be positive (InfiniteDuration: never expire)",
                        absl::FormatDuration(ttl)));
  }
  return impl_->Submit({Impl::Write::Kind::kTouch, key, {}, 0, ttl});
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
uint64_t Mirror::accepted_writes() const { return impl_->accepted(); }
uint64_t Mirror::finished_writes() const { return impl_->finished(); }

}  // namespace tiercache
