// Which servers of a client are up, and the thread that brings the others
// back.
//
// Why a server-wide state, when each connection already backs off on its
// own: a pool of N connections notices an outage N times, and a caller only
// learns that a server is gone when its own request fails. With a gutter pool
// (MemcachedOptions::gutter_servers) the routing must know before it sends:
// a key whose server is down goes to the gutter, so that every replica of an
// application takes its lease, and stores its value, in one shared place and
// the database loads the key once (docs/tiered.md, "Gutter pool").
//
// The rules:
//   - a server is marked down when a connection to it cannot be made
//     (refused, unreachable, a failed TLS handshake: not refused credentials,
//     which no failover can fix), or when `timeouts_before_down` requests in a
//     row got no answer within op_timeout (a hung server accepts connections);
//   - while it is down, ClientCore sends its keys to the gutter pool, or,
//     without one, fails them at once with Unavailable naming why;
//   - the monitor's thread probes it with a fresh connection and a round trip,
//     after reconnect_backoff, doubling to max_reconnect_backoff (+-50%
//     jitter); when a probe is answered, the rejoin hook runs (the gutter's
//     coherence step), then the server's connections may reconnect at once
//     and it is marked up;
//   - every transition is counted and reported to `on_server_state` on the
//     monitor's thread: never on a caller's stack, never under a lock of the
//     client, so a callback may call the client.
//
// The thread starts on the first transition: a client whose servers never
// fail never has it.

#ifndef TIERCACHE_MIRROR_CLIENT_HEALTH_H_
#define TIERCACHE_MIRROR_CLIENT_HEALTH_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "mutex.h"
#include "tiercache/memcached.h"

namespace tiercache::mirror_internal {

class HealthMonitor;

// One server's health, fed by its connections. The reports are cheap enough
// for every request: an answer is one relaxed load (a store only after a
// timeout), and `down()` one acquire load.
class ServerHealth {
 public:
  ServerHealth(const ServerHealth&) = delete;
  ServerHealth& operator=(const ServerHealth&) = delete;

  bool down() const { return down_.load(std::memory_order_acquire); }
  // Bumped by each of its transitions (down and up).
  uint64_t transitions() const { return transitions_.load(std::memory_order_acquire); }

  // From the connections, on any thread, possibly under a connection's lock
  // (lock order: a connection's, then the monitor's).
  void ReportConnectFailure(const absl::Status& why);
  void ReportTimeout(const absl::Status& why);
  void ReportAnswer() {
    if (consecutive_timeouts_.load(std::memory_order_relaxed) != 0) {
      consecutive_timeouts_.store(0, std::memory_order_relaxed);
    }
  }
  // A request for this (down) server's key went to the gutter instead; a
  // write (a store, delete, touch or counter) also notes when, for the
  // rejoin step.
  void CountRerouted(bool write) {
    rerouted_.fetch_add(1, std::memory_order_relaxed);
    if (write) {
      last_gutter_write_ms_.store(absl::ToUnixMillis(absl::Now()), std::memory_order_relaxed);
    }
  }
  // When this client last wrote one of this server's keys to the gutter
  // (Unix ms; 0: never).
  int64_t last_gutter_write_ms() const {
    return last_gutter_write_ms_.load(std::memory_order_relaxed);
  }
  // Its rejoin step runs: writes of its keys are refused, neither sent to
  // the gutter (where the rejoin would not see them) nor to the server.
  bool rejoining() const { return rejoining_.load(std::memory_order_acquire); }
  // It refused flush_all (memcached -F): it cannot rejoin a pool with a
  // gutter, and is not asked again.
  bool flush_refused() const { return flush_refused_.load(std::memory_order_relaxed); }
  void set_flush_refused() { flush_refused_.store(true, std::memory_order_relaxed); }
  void set_rejoining(bool on) { rejoining_.store(on, std::memory_order_release); }

 private:
  friend class HealthMonitor;
  ServerHealth(HealthMonitor* monitor, size_t index) : monitor_(monitor), index_(index) {}

  HealthMonitor* const monitor_;
  const size_t index_;
  std::atomic<bool> down_{false};
  std::atomic<uint64_t> transitions_{0};
  std::atomic<uint32_t> consecutive_timeouts_{0};
  std::atomic<uint64_t> rerouted_{0};
  std::atomic<int64_t> last_gutter_write_ms_{0};
  std::atomic<bool> rejoining_{false};
  std::atomic<bool> flush_refused_{false};
};

class HealthMonitor {
 public:
  struct Hooks {
    // Server `index` was marked down: fail what its connections hold now
    // rather than at each request's deadline.
    std::function<void(size_t index, const absl::Status& why)> on_down;
    // A probe of server `index`, down since `down_since`: OK when it answered
    // and is ready to serve its keys again (for a primary with a gutter pool,
    // after the rejoin step).
    std::function<absl::Status(size_t index, absl::Time down_since)> probe;
    // Server `index` is about to be marked up: its connections may connect
    // at once.
    std::function<void(size_t index)> on_up;
  };

  // Servers are added with Add; `index` in the hooks is what Add returned.
  HealthMonitor(const MemcachedOptions& options, Hooks hooks);
  ~HealthMonitor();  // Stop()
  // Stops and joins the thread: no hook runs after it returns.
  void Stop();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Bumped by every transition of any server: a write routed before a
  // transition may be routed wrongly after it (WriteBatch checks).
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  // A server to watch, as configured; returns its index (0, 1, ... in the
  // order added; never reused). Its ServerHealth lives as long as the monitor.
  size_t Add(std::string name, bool gutter);
  // It left the pool (SetServers): no more probes, reports or transitions.
  void Retire(size_t index);
  ServerHealth& health(size_t index) const;
  // Unavailable naming server `index`, why it is down and when it is probed next.
  absl::Status DownStatus(size_t index) const;
  ServerStatus Status(size_t index) const;

 private:
  friend class ServerHealth;
  struct Server {
    std::string name;
    bool gutter = false;
    bool retired = false;
    std::unique_ptr<ServerHealth> health;
    // The state of an outage: set when marked down.
    absl::Time down_since = absl::InfinitePast();
    absl::Time next_probe = absl::InfiniteFuture();
    absl::Duration backoff;
    absl::Status why;
    uint64_t times_down = 0;
    uint64_t times_up = 0;
  };
  struct Event {
    size_t index;
    bool up;
    absl::Status why;
  };

  void MarkDown(size_t index, const absl::Status& why);
  void Run();
  // Reports the transitions not yet reported; called without the lock.
  void DeliverEvents();
  // Probes every server whose probe is due; called without the lock.
  void ProbeDue();
  absl::Duration JitteredLocked(absl::Duration d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Hooks hooks_;
  const uint32_t timeouts_before_down_;
  const absl::Duration first_backoff_;
  const absl::Duration max_backoff_;
  const std::function<void(std::string_view, bool, const absl::Status&)> on_server_state_;

  mutable common_internal::Mutex mu_;
  // Each Server's fields but `health`'s atomics are guarded by mu_ (`name`,
  // `gutter` and `health` never change once added, but the vector grows).
  std::vector<std::unique_ptr<Server>> servers_ ABSL_GUARDED_BY(mu_);
  std::condition_variable_any wake_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);  // to report, oldest first
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::minstd_rand jitter_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> epoch_{0};
  std::thread thread_;  // started under mu_ by the first MarkDown; joined by the destructor
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_CLIENT_HEALTH_H_
