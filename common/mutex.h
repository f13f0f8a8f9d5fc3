// Mutexes that clang's thread-safety analysis understands and
// ThreadSanitizer sees.
//
// Why not absl::Mutex: Debian's abseil is not instrumented, so TSan cannot see
// the happens-before edges of its handoffs. Why not std::mutex alone:
// libstdc++ carries no capability annotations, so ABSL_GUARDED_BY on a member
// next to a std::mutex is never checked. These wrap the std types (TSan
// intercepts them) and carry the annotations (the clang build in .ci/run
// checks them with -Wthread-safety -Werror).
//
// `MutexLock` is a scoped holder that a std::condition_variable_any can
// release while it waits (it has lock() and unlock()), and that can be built
// without locking and then locked with a deadline (TryLockUntil) — the
// Connection's callers never wait past their deadline, not even for the lock.

#ifndef TIERCACHE_COMMON_MUTEX_H_
#define TIERCACHE_COMMON_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace tiercache::common_internal {

class ABSL_LOCKABLE Mutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLockUntil(absl::Time deadline) ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    return mu_.try_lock_until(absl::ToChronoTime(deadline));
  }
  // For code the analysis cannot follow (a callback run under the lock).
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  std::timed_mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu), held_(true) {
    mu_->lock();
  }
  // Not locked yet: TryLockUntil or lock() next.
  MutexLock(Mutex* mu, std::defer_lock_t) ABSL_LOCKS_EXCLUDED(mu) : mu_(mu), held_(false) {}
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    if (held_) mu_->unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  bool TryLockUntil(absl::Time deadline) ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    held_ = mu_->TryLockUntil(deadline);
    return held_;
  }
  // For std::condition_variable_any, and for work done without the lock.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_->lock();
    held_ = true;
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    held_ = false;
    mu_->unlock();
  }

 private:
  Mutex* const mu_;
  bool held_;
};

}  // namespace tiercache::common_internal

#endif  // TIERCACHE_COMMON_MUTEX_H_
