// bench/mutex_lru.h — the baseline users write by hand: one std::mutex over a
// std::unordered_map from key to a std::list node that holds key and value.
// A hit splices the node to the front and copies the value out under the lock;
// an insert past `capacity` items drops the back of the list.
//
// It is deliberately the textbook version (no transparent lookup, no intrusive
// list, key stored twice), because that is what tiercache is measured against
// in engine_bench and memory_per_entry.

#ifndef TIERCACHE_BENCH_MUTEX_LRU_H_
#define TIERCACHE_BENCH_MUTEX_LRU_H_

#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tiercache_bench {

class MutexLru {
 public:
  explicit MutexLru(size_t capacity) : capacity_(capacity) {}

  std::optional<std::string> Get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }

  void Set(const std::string& key, std::string_view value) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->second.assign(value);
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    order_.emplace_front(key, std::string(value));
    index_.emplace(key, order_.begin());
    if (index_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return index_.size();
  }

 private:
  using Order = std::list<std::pair<std::string, std::string>>;

  const size_t capacity_;
  mutable std::mutex mu_;
  Order order_;  // most recently used first
  std::unordered_map<std::string, Order::iterator> index_;
};

}  // namespace tiercache_bench

#endif  // TIERCACHE_BENCH_MUTEX_LRU_H_
