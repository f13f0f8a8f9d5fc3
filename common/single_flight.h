// One call per key at a time: the first caller for a key (the leader) runs
// the work; callers that arrive while it runs wait and get the leader's
// result. Used by Cache::GetOrLoad (engine/) and by TieredCache (mirror/),
// so it lives in common/, an internal target both link: neither layer
// reaches into the other's private folder.
//
// common_internal::Mutex (std primitives with lock annotations), not
// absl::Mutex, so ThreadSanitizer sees the handoff (Debian's abseil is not
// instrumented).

#ifndef TIERCACHE_COMMON_SINGLE_FLIGHT_H_
#define TIERCACHE_COMMON_SINGLE_FLIGHT_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "mutex.h"

namespace tiercache::common_internal {

class SingleFlight {
 public:
  using Result = absl::StatusOr<std::string>;

  // Runs `lead()` unless a call for `key` is already running, in which case
  // it waits for that call and returns its result. `hash` is any hash of the
  // key (it only picks a shard). `joins`, if given, is incremented before a
  // follower starts waiting. If `lead` throws, its followers get Internal
  // and the exception reaches the leader's caller.
  template <typename Lead>
  Result Do(std::string_view key, uint64_t hash, Lead&& lead,
            std::atomic<uint64_t>* joins = nullptr) {
    Shard& shard = shards_[hash % shards_.size()];
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      MutexLock hold(&shard.mu);
      auto [it, inserted] = shard.by_key.try_emplace(absl::string_view(key.data(), key.size()));
      if (inserted) it->second = std::make_shared<Flight>();
      flight = it->second;
      leader = inserted;
      if (!leader && joins != nullptr) joins->fetch_add(1, std::memory_order_relaxed);
    }
    if (!leader) {
      Flight& f = *flight;
      MutexLock hold(&f.mu);
      f.cv.wait(hold, [&f]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(f.mu) { return f.done; });
      return f.result;
    }
    // Hands the result to the followers even if `lead` throws.
    struct Completion {
      Shard& shard;
      Flight& flight;
      std::string_view key;
      Result result = absl::InternalError("GetOrLoad: the loader threw an exception");
      ~Completion() {
        {
          MutexLock hold(&shard.mu);
          shard.by_key.erase(absl::string_view(key.data(), key.size()));
        }
        {
          MutexLock hold(&flight.mu);
          flight.result = std::move(result);
          flight.done = true;
        }
        flight.cv.notify_all();
      }
    } completion{shard, *flight, key};
    Result result = lead();
    completion.result = result;
    return result;
  }

 private:
  struct Flight {
    Mutex mu;
    std::condition_variable_any cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    Result result ABSL_GUARDED_BY(mu);
  };
  struct alignas(64) Shard {
    Mutex mu;
    absl::flat_hash_map<std::string, std::shared_ptr<Flight>> by_key ABSL_GUARDED_BY(mu);
  };
  std::array<Shard, 16> shards_;
};

}  // namespace tiercache::common_internal

#endif  // TIERCACHE_COMMON_SINGLE_FLIGHT_H_
