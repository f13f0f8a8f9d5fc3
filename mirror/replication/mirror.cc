#include "tiercache/mirror.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "check.h"
#include "client/client_core.h"
#include "mutex.h"
#include "validate.h"

namespace tiercache {

using common_internal::MutexLock;
using mirror_internal::BatchOutcome;
using mirror_internal::ClientCore;
using mirror_internal::PreparedWrite;
using mirror_internal::WriteBatch;
using mirror_internal::WriteTicket;

class Mirror::Impl {
 public:
  // A write as handed to the mirror; the views are valid during Submit only.
  struct Write {
    using Kind = PreparedWrite::Kind;
    Kind kind;
    std::string_view key;
    std::string_view value;
    uint32_t flags = 0;
    std::optional<absl::Duration> ttl;  // nullopt: the client's default_ttl
  };

  Impl(MemcachedClient* l2, MirrorOptions options)
      : core_(mirror_internal::CoreOf(*l2)),
        options_(std::move(options)),
        queues_(core_.server_count()) {
    {
      MutexLock hold(&mu_);
      version_seen_ = core_.topology_version();
    }
    if (options_.mode == MirrorMode::kAsync) thread_ = std::thread([this] { SendLoop(); });
  }

  ~Impl() {
    {
      MutexLock hold(&mu_);
      stop_ = true;
    }
    work_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Submit(const Write& write) {
    // Bad input is the caller's error, found before anything is queued.
    absl::StatusOr<PreparedWrite> prepared =
        core_.PrepareWrite(write.kind, write.key, write.value, {write.ttl, write.flags});
    if (!prepared.ok()) return prepared.status();
    if (options_.mode == MirrorMode::kSync) return SendNow(write);

    const size_t bytes = prepared->encoded_size;
    MutexLock lock(&mu_);
    auto full = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queued_writes_ >= options_.max_queued_writes ||
             (queued_writes_ > 0 && queued_bytes_ + bytes > options_.max_queued_bytes);
    };
    if (full()) {
      if (write.kind == Write::Kind::kDelete) {
        // An invalidation is worth waiting for; a value is not (a dropped
        // value only costs a later L2 miss).
        room_.wait_until(lock, absl::ToChronoTime(absl::Now() + core_.options().op_timeout),
                         [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !full() || stop_; });
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
    // Placed in a pool SetServers has replaced since: placed again, under
    // the lock, so that no write of an older pool is queued after the
    // sender has placed the queue again (ReplaceQueuedLocked).
    if (prepared->version != core_.topology_version()) {
      prepared = core_.PrepareWrite(write.kind, write.key, write.value, {write.ttl, write.flags});
      if (!prepared.ok()) {
        ++failed_;
        lock.unlock();
        Report(write.key, prepared.status());
        return prepared.status();
      }
    }
    // SetServers adds servers (ids only grow).
    if (prepared->server >= queues_.size()) queues_.resize(prepared->server + 1);
    std::deque<Batch>& queue = queues_[prepared->server];
    // A batch holds writes of one routing epoch and one pool (see
    // ClientCore::Send).
    if (queue.empty() || queue.back().writes.size() == options_.max_batch ||
        queue.back().writes.epoch() != prepared->epoch ||
        queue.back().writes.version() != prepared->version) {
      // Sized like the last full batch, up to 256 KiB: a batch would
      // otherwise regrow (and copy) its buffer a dozen times while filling.
      // The cap keeps what a mostly empty batch per server holds small (the
      // queue's byte bound counts encoded bytes, not capacity).
      constexpr size_t kMaxReserve = 256 << 10;
      queue.push_back(Batch{
          core_.NewWriteBatch(prepared->server, prepared->epoch, prepared->version,
                              options_.max_batch, std::min(last_full_batch_bytes_, kMaxReserve)),
          {},
          {},
          {}});
    }
    Batch& batch = queue.back();
    const size_t before = batch.writes.bytes();
    batch.writes.Add(*prepared);
    batch.keys.append(write.key);
    batch.key_ends.push_back(static_cast<uint32_t>(batch.keys.size()));
    queued_writes_ += 1;
    queued_bytes_ += batch.writes.bytes() - before;
    // Written under the lock only: a store, not a locked read-modify-write.
    const uint64_t sequence = accepted_.load(std::memory_order_relaxed) + 1;
    accepted_.store(sequence, std::memory_order_release);
    batch.sequence.push_back(sequence);
    if (batch.writes.size() == options_.max_batch) last_full_batch_bytes_ = batch.writes.bytes();
    finished_flags_.push_back(false);
    const bool wake = sender_idle_;
    lock.unlock();
    // Waking the sender is a futex call: only when it sleeps, not per write.
    if (wake) work_.notify_one();
    return absl::OkStatus();
  }

  absl::Status Flush(absl::Duration timeout) {
    MutexLock lock(&mu_);
    const uint64_t target = accepted_;
    if (!progress_.wait_until(
            lock, absl::ToChronoTime(absl::Now() + timeout),
            [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_ >= target; })) {
      return absl::DeadlineExceededError(
          absl::StrFormat("Flush: %d writes still unacknowledged after %s",
                          target - finished_.load(), absl::FormatDuration(timeout)));
    }
    return absl::OkStatus();
  }

  uint64_t accepted() const { return accepted_.load(std::memory_order_acquire); }
  uint64_t finished() const { return finished_.load(std::memory_order_acquire); }

  MirrorStats Stats() const {
    MutexLock hold(&mu_);
    MirrorStats stats;
    stats.queued = accepted_;
    stats.replicated = replicated_;
    stats.failed = failed_;
    stats.dropped = dropped_;
    stats.queue_depth = queued_writes_;
    stats.rerouted = rerouted_;
    return stats;
  }

 private:
  // Quiet requests, and the keys they were for (to report failures by key).
  struct Batch {
    WriteBatch writes;               // sent (and moved to the client) by the sender
    std::string keys;                // the user keys, end to end
    std::vector<uint32_t> key_ends;  // where each ends in `keys`
    std::vector<uint64_t> sequence;  // each write's place in the order of acceptance
    size_t count() const { return key_ends.size(); }
    std::string_view Key(size_t i) const {
      const size_t begin = i == 0 ? 0 : key_ends[i - 1];
      return std::string_view(keys).substr(begin, key_ends[i] - begin);
    }
  };

  // A batch on the wire, waiting for its answer.
  struct InFlight {
    Batch batch;  // its `writes` were moved into the ticket
    WriteTicket ticket;
  };

  void Report(std::string_view key, const absl::Status& why) {
    if (options_.on_error) options_.on_error(key, why);
  }

  absl::Status SendNow(const Write& write) {
    absl::Status status;
    switch (write.kind) {
      case Write::Kind::kSet:
        status = core_
                     .Store(write.key, write.value, {write.ttl, write.flags},
                            mirror_internal::StoreMode::kSet)
                     .status();
        break;
      case Write::Kind::kDelete:
        status = core_.Delete(write.key).status();
        break;
      case Write::Kind::kTouch:
        status = core_.Touch(write.key, *write.ttl).status();
        break;
    }
    {
      MutexLock hold(&mu_);
      // Nothing is queued in this mode: every write accepted has finished.
      ++accepted_;
      ++finished_;
      ++(status.ok() ? replicated_ : failed_);
    }
    if (!status.ok()) Report(write.key, status);
    return status;
  }

  // Puts the batch on the wire without waiting: memcached answers only
  // failures (by token) and the end marker, so a batch costs one round trip,
  // and the next batch is sent while memcached applies this. Each server's
  // batches go on one connection, so they reach it in order (a key always
  // maps to the same server).
  InFlight SendBatch(Batch batch) {
    WriteTicket ticket = core_.Send(std::move(batch.writes));
    return InFlight{std::move(batch), std::move(ticket)};
  }

  // Waits for a batch's answer and accounts for every write in it.
  void Finish(InFlight& in_flight) {
    const Batch& batch = in_flight.batch;
    const BatchOutcome outcome = core_.Await(in_flight.ticket);
    std::vector<bool> failed(batch.count(), false);
    for (const auto& [index, why] : outcome.refused) {
      failed[index] = true;
      Report(batch.Key(index), why);
    }
    const absl::Status& status = outcome.status;
    size_t failures = 0;
    for (size_t i = 0; i < batch.count(); ++i) {
      if (!failed[i] && !status.ok()) {
        failed[i] = true;
        Report(batch.Key(i), status);
      }
      failures += failed[i];
    }
    {
      MutexLock hold(&mu_);
      failed_ += failures;
      replicated_ += batch.count() - failures;
      MarkFinishedLocked(batch.sequence);
    }
    progress_.notify_all();
  }

  // Batches for different servers finish out of order: `finished_` only
  // moves past writes all of whose predecessors have finished too.
  void MarkFinishedLocked(const std::vector<uint64_t>& sequences)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (uint64_t sequence : sequences) {
      const uint64_t offset = sequence - finished_.load(std::memory_order_relaxed) - 1;
      TIERCACHE_ASSERT(sequence > finished_.load(std::memory_order_relaxed) &&
                           offset < finished_flags_.size() && !finished_flags_[offset],
                       "a write finished twice, or one never accepted");
      finished_flags_[offset] = true;
    }
    uint64_t finished = finished_.load(std::memory_order_relaxed);
    while (!finished_flags_.empty() && finished_flags_.front()) {
      finished_flags_.pop_front();
      ++finished;
    }
    finished_.store(finished, std::memory_order_release);
    TIERCACHE_ASSERT(
        finished <= accepted_.load(std::memory_order_relaxed) &&
            finished_flags_.size() == accepted_.load(std::memory_order_relaxed) - finished,
        "the finished watermark passed the writes accepted");
    progress_.notify_all();
  }

  // The pool changed (SetServers): every queued batch of an older pool is
  // taken apart and its writes placed again, in the order they were
  // accepted, into batches for their new servers, ahead of anything queued
  // under the new pool (a key's older writes still reach its server before
  // its newer ones). A batch whose routing epoch has moved on is dropped
  // instead, as ClientCore::Send would drop it; a write that cannot be
  // placed (its server down, no gutter) fails. Both are counted; `failures`
  // collects them to report outside the lock.
  void ReplaceQueuedLocked(std::vector<std::pair<std::string, absl::Status>>* failures)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t version = core_.topology_version();
    std::vector<Batch> older;
    for (std::deque<Batch>& queue : queues_) {
      std::deque<Batch> current;
      for (Batch& batch : queue) {
        if (batch.writes.version() == version) {
          current.push_back(std::move(batch));
        } else {
          older.push_back(std::move(batch));
        }
      }
      queue = std::move(current);
    }
    struct Place {
      uint64_t sequence;
      size_t batch;
      size_t index;
    };
    std::vector<Place> order;
    std::vector<uint64_t> failed_sequences;
    for (size_t b = 0; b < older.size(); ++b) {
      const Batch& batch = older[b];
      queued_writes_ -= batch.count();
      queued_bytes_ -= batch.writes.bytes();
      const absl::Status dropped = core_.CheckEpoch(batch.writes);
      for (size_t i = 0; i < batch.count(); ++i) {
        if (!dropped.ok()) {
          failures->emplace_back(std::string(batch.Key(i)), dropped);
          failed_sequences.push_back(batch.sequence[i]);
        } else {
          order.push_back(Place{batch.sequence[i], b, i});
        }
      }
    }
    std::sort(order.begin(), order.end(),
              [](const Place& x, const Place& y) { return x.sequence < y.sequence; });
    std::vector<std::deque<Batch>> placed(queues_.size());
    for (const Place& p : order) {
      const Batch& old = older[p.batch];
      absl::StatusOr<PreparedWrite> write = core_.Replace(old.writes, p.index, old.Key(p.index));
      if (!write.ok()) {
        failures->emplace_back(std::string(old.Key(p.index)), write.status());
        failed_sequences.push_back(p.sequence);
        continue;
      }
      // A SetServers during this loop may add servers (ids only grow).
      if (write->server >= placed.size()) placed.resize(write->server + 1);
      std::deque<Batch>& target = placed[write->server];
      if (target.empty() || target.back().writes.size() == options_.max_batch ||
          target.back().writes.epoch() != write->epoch ||
          target.back().writes.version() != write->version) {
        target.push_back(Batch{
            core_.NewWriteBatch(write->server, write->epoch, write->version, options_.max_batch),
            {},
            {},
            {}});
      }
      Batch& batch = target.back();
      const size_t before = batch.writes.bytes();
      batch.writes.Add(*write);
      batch.keys.append(old.Key(p.index));
      batch.key_ends.push_back(static_cast<uint32_t>(batch.keys.size()));
      batch.sequence.push_back(p.sequence);
      queued_writes_ += 1;
      queued_bytes_ += batch.writes.bytes() - before;
      ++rerouted_;
    }
    if (queues_.size() < placed.size()) queues_.resize(placed.size());
    for (size_t s = 0; s < placed.size(); ++s) {
      for (Batch& newer : queues_[s]) placed[s].push_back(std::move(newer));
      queues_[s] = std::move(placed[s]);
    }
    failed_ += failed_sequences.size();
    if (!failed_sequences.empty()) MarkFinishedLocked(failed_sequences);
  }

  void SendLoop() {
    // Batches on the wire at once: enough to keep memcached busy while the
    // next is filled, few enough that a failing server costs little.
    constexpr size_t kMaxInFlight = 4;
    std::deque<InFlight> in_flight;
    size_t server = 0;  // round-robin over the servers' queues
    std::vector<std::pair<std::string, absl::Status>> failures;  // of ReplaceQueuedLocked
    while (true) {
      for (const auto& [key, why] : failures) Report(key, why);
      failures.clear();
      std::optional<Batch> next;
      {
        MutexLock lock(&mu_);
        if (queued_writes_ == 0 && in_flight.empty()) {
          sender_idle_ = true;
          work_.wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stop_ || queued_writes_ > 0;
          });
          sender_idle_ = false;
          if (queued_writes_ == 0) return;  // stopping, and everything is sent
        }
        if (queued_writes_ > 0 && in_flight.size() < kMaxInFlight) {
          // The pool changed since the last batch was taken: place every
          // older batch again before any is sent (see ReplaceQueuedLocked).
          if (const uint64_t version = core_.topology_version(); version != version_seen_) {
            version_seen_ = version;
            ReplaceQueuedLocked(&failures);
            server = 0;
            if (!failures.empty() || queued_writes_ == 0) {
              room_.notify_all();  // the queue may have shrunk
              continue;            // report, then go on
            }
          }
          while (queues_[server].empty()) server = (server + 1) % queues_.size();
          next = std::move(queues_[server].front());
          queues_[server].pop_front();
          server = (server + 1) % queues_.size();  // round-robin: the next server's turn
          TIERCACHE_ASSERT(queued_writes_ >= next->count() && queued_bytes_ >= next->writes.bytes(),
                           "the queue's counts fell below a batch it holds");
          queued_writes_ -= next->count();
          queued_bytes_ -= next->writes.bytes();
        }
      }
      if (!next.has_value()) {  // nothing new to send: collect the oldest answer
        Finish(in_flight.front());
        in_flight.pop_front();
        continue;
      }
      room_.notify_all();
      in_flight.push_back(SendBatch(*std::move(next)));
    }
  }

  ClientCore& core_;
  const MirrorOptions options_;

  // Guards the queues and the counts below. Invariants, under it:
  //   queued_writes_ = the writes in `queues_`, queued_bytes_ = their bytes;
  //   finished_ <= accepted_, and finished_flags_ has one flag per write
  //   accepted but not yet below the watermark (accepted_ - finished_).
  mutable common_internal::Mutex mu_;
  std::condition_variable_any work_;      // the queue has writes, or stop
  std::condition_variable_any room_;      // the queue has room
  std::condition_variable_any progress_;  // `finished_` grew
  // Per server; the last batch of each is being filled.
  std::vector<std::deque<Batch>> queues_ ABSL_GUARDED_BY(mu_);
  size_t queued_writes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // encoded bytes in `queues_`
  size_t last_full_batch_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool sender_idle_ ABSL_GUARDED_BY(mu_) = false;  // the sender waits on `work_`
  // Atomic so that accepted_writes()/finished_writes() read them without the
  // lock; written under it.
  // The n-th write accepted has sequence number n.
  std::atomic<uint64_t> accepted_{0};  // writes queued (or, synchronous, sent)
  // Every write with a sequence number <= this has been acknowledged or has
  // failed (a watermark, not a count).
  std::atomic<uint64_t> finished_{0};
  // Writes finished_ + 1 .. accepted_: done yet?
  std::deque<bool> finished_flags_ ABSL_GUARDED_BY(mu_);
  uint64_t replicated_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rerouted_ ABSL_GUARDED_BY(mu_) = 0;
  // The pool version the queued batches were last placed for.
  uint64_t version_seen_ ABSL_GUARDED_BY(mu_) = 0;
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
  return impl_->Submit({Impl::Write::Kind::kSet, key, value, options.flags, options.ttl});
}

absl::Status Mirror::ReplicateDelete(std::string_view key) {
  return impl_->Submit({Impl::Write::Kind::kDelete, key, {}, 0, std::nullopt});
}

absl::Status Mirror::ReplicateTouch(std::string_view key, absl::Duration ttl) {
  return impl_->Submit({Impl::Write::Kind::kTouch, key, {}, 0, ttl});
}

absl::Status Mirror::Flush(absl::Duration timeout) { return impl_->Flush(timeout); }

MirrorStats Mirror::Stats() const { return impl_->Stats(); }
uint64_t Mirror::accepted_writes() const { return impl_->accepted(); }
uint64_t Mirror::finished_writes() const { return impl_->finished(); }

}  // namespace tiercache
