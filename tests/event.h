// A one-shot event on std primitives, shared by the tests: Debian's abseil is
// not instrumented, so ThreadSanitizer would not see absl::Notification's
// happens-before edge.

#ifndef TIERCACHE_TESTS_EVENT_H_
#define TIERCACHE_TESTS_EVENT_H_

#include <condition_variable>
#include <mutex>

namespace tiercache::testing {

class Event {
 public:
  void Notify() {
    {
      std::lock_guard<std::mutex> hold(mu_);
      notified_ = true;
    }
    cv_.notify_all();
  }
  bool HasBeenNotified() {
    std::lock_guard<std::mutex> hold(mu_);
    return notified_;
  }
  void Wait() {
    std::unique_lock<std::mutex> hold(mu_);
    cv_.wait(hold, [this] { return notified_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_EVENT_H_
